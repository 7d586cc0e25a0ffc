// rms_norm.wgsl with the sum of squares reduced by subgroupAdd: one shared-memory slot per
// subgroup instead of a 256-wide tree. Slots are handed out by an atomic counter, because how
// invocations map to subgroups is up to the implementation. (`enable subgroups;` is prepended
// in the browser.)
struct Params { rows: u32, dim: u32, eps: f32, _pad: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> partial: array<f32, 256>;
var<workgroup> slots: atomic<u32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) l: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let r = wg.x + wg.y * 65535u;
    if (r >= p.rows) { return; }
    let base = r * p.dim;
    var s = 0.0;
    for (var i = l.x; i < p.dim; i += 256u) {
        let v = x[base + i];
        s += v * v;
    }
    let sg = subgroupAdd(s);
    if (lane == 0u) {
        partial[atomicAdd(&slots, 1u)] = sg;
    }
    workgroupBarrier();
    let n = atomicLoad(&slots);
    var total = 0.0;
    for (var i = 0u; i < n; i++) { total += partial[i]; }
    let inv = inverseSqrt(total / f32(p.dim) + p.eps);
    for (var i = l.x; i < p.dim; i += 256u) {
        y[base + i] = x[base + i] * inv * weight[i];
    }
}
