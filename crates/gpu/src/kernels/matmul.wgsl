// y[m, col0 + n] = sum_k x[m, k] * w[n, k]: the layout of a linear layer's weight ([out, in]),
// written into a row of `ldy` columns at `col0` so a matrix split over several buffers fills one
// output. The weight format's `weight(n, k)` (binding 1, scales at binding 4) is prepended by
// the Rust side: one tiled kernel, dequantizing inside it, for every format.
//
// 64x64 output tiles, k in steps of 16, staged in shared memory; each of the 256 invocations
// accumulates a 4x4 block (rows l.y + 16i, columns l.x + 16j) in registers.
struct Params { m: u32, n: u32, k: u32, ldy: u32, col0: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const TM: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 64>;
var<workgroup> ws: array<array<f32, 16>, 64>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row0 = wg.y * TM;
    let col0 = wg.x * TM;
    let li = l.y * 16u + l.x;
    // acc_i holds rows l.y + 16i, columns l.x + 16j in lane j: fixed indices and vec4 math
    // keep the accumulators in registers (dynamic indexing into a local array spills on some
    // compilers, llvmpipe's among them).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            let r = idx / TK;
            let c = idx % TK;
            let kk = k0 + c;
            let xr = row0 + r;
            xs[r][c] = select(0.0, x[xr * p.k + kk], xr < p.m && kk < p.k);
            let wr = col0 + r;
            var wv = 0.0;
            if (wr < p.n && kk < p.k) { wv = weight(wr, kk); }
            ws[r][c] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let b = vec4<f32>(ws[l.x][kk], ws[l.x + 16u][kk], ws[l.x + 32u][kk], ws[l.x + 48u][kk]);
            acc0 += xs[l.y][kk] * b;
            acc1 += xs[l.y + 16u][kk] * b;
            acc2 += xs[l.y + 32u][kk] * b;
            acc3 += xs[l.y + 48u][kk] * b;
        }
        workgroupBarrier();
    }
    store(row0 + l.y, col0 + l.x, acc0);
    store(row0 + l.y + 16u, col0 + l.x, acc1);
    store(row0 + l.y + 32u, col0 + l.x, acc2);
    store(row0 + l.y + 48u, col0 + l.x, acc3);
}

fn store(r: u32, c: u32, v: vec4<f32>) {
    if (r >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let cj = c + 16u * j;
        if (cj < p.n) { y[r * p.ldy + p.col0 + cj] = v[j]; }
    }
}
