// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight: one workgroup per row (also per
// head for Qwen3's q/k norm, with dim = head_dim).
struct Params { rows: u32, dim: u32, eps: f32, _pad: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let r = wg.x + wg.y * 65535u;
    if (r >= p.rows) { return; }
    let base = r * p.dim;
    var s = 0.0;
    for (var i = l.x; i < p.dim; i += 256u) {
        let v = x[base + i];
        s += v * v;
    }
    partial[l.x] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (l.x < stride) { partial[l.x] += partial[l.x + stride]; }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(p.dim) + p.eps);
    for (var i = l.x; i < p.dim; i += 256u) {
        y[base + i] = x[base + i] * inv * weight[i];
    }
}
