// y = silu(gate) * up, elementwise (the MLP's activation).
struct Params { len: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.x + g.y * 65535u * 64u;
    if (i >= p.len) { return; }
    let v = gate[i];
    y[i] = v / (1.0 + exp(-v)) * up[i];
}
