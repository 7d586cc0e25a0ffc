// y[t, :] = table[ids[t], :].
struct Params { tokens: u32, dim: u32, vocab: u32, _pad: u32 }
@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let i = g.x + g.y * 65535u * 64u;
    if (i >= p.tokens * p.dim) { return; }
    let t = i / p.dim;
    let id = min(ids[t], p.vocab - 1u);
    y[i] = table[id * p.dim + i % p.dim];
}
