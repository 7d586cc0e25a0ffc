// y[m, n] = sum_k x[m, k] * w[n, k] with w in Q8_0 blocks, dequantized while tiles are
// staged: quants as 4 signed bytes per u32 ([n, k/4]), one scale per 32 weights ([n, k/32]).
struct Params { m: u32, n: u32, k: u32, _pad: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const T: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 16>;
var<workgroup> ws: array<array<f32, 16>, 16>;

fn weight(n: u32, k: u32) -> f32 {
    let word = q[(n * p.k + k) / 4u];
    let byte = (word >> ((k % 4u) * 8u)) & 0xffu;
    let v = f32(i32(byte << 24u) >> 24u);
    return v * scales[(n * p.k + k) / 32u];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row = wg.y * T + l.y;
    let col = wg.x * T + l.x;
    var acc = 0.0;
    let tiles = (p.k + T - 1u) / T;
    for (var t = 0u; t < tiles; t++) {
        let kx = t * T + l.x;
        xs[l.y][l.x] = select(0.0, x[row * p.k + kx], row < p.m && kx < p.k);
        let wrow = wg.x * T + l.y;
        var wv = 0.0;
        if (wrow < p.n && kx < p.k) {
            wv = weight(wrow, kx);
        }
        ws[l.y][l.x] = wv;
        workgroupBarrier();
        for (var i = 0u; i < T; i++) {
            acc += xs[l.y][i] * ws[l.x][i];
        }
        workgroupBarrier();
    }
    if (row < p.m && col < p.n) {
        y[row * p.n + col] = acc;
    }
}
