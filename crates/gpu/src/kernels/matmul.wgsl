// y[m, n] = sum_k x[m, k] * w[n, k]: the layout of a linear layer's weight ([out, in]).
// 16x16 output tiles; each workgroup stages 16x16 tiles of x and w in shared memory.
struct Params { m: u32, n: u32, k: u32, _pad: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const T: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 16>;
var<workgroup> ws: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row = wg.y * T + l.y; // m
    let col = wg.x * T + l.x; // n
    var acc = 0.0;
    let tiles = (p.k + T - 1u) / T;
    for (var t = 0u; t < tiles; t++) {
        let kx = t * T + l.x;
        xs[l.y][l.x] = select(0.0, x[row * p.k + kx], row < p.m && kx < p.k);
        let wrow = wg.x * T + l.y;
        ws[l.y][l.x] = select(0.0, w[wrow * p.k + kx], wrow < p.n && kx < p.k);
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
