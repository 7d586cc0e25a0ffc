// Rotary embedding in place on x [tokens, heads, head_dim], rotating the two halves of each
// head (transformers' rotate_half). cos and sin [tokens, head_dim/2] come from the CPU, computed
// as transformers does (f32 angle = position * inv_freq, any rope scaling already in inv_freq):
// GPU sin/cos lose accuracy for the large angles of late positions.
struct Params { tokens: u32, heads: u32, head_dim: u32, _pad: u32 }
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> cos_t: array<f32>;
@group(0) @binding(2) var<storage, read> sin_t: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let half = p.head_dim / 2u;
    let idx = g.x + g.y * 65535u * 64u;
    if (idx >= p.tokens * p.heads * half) { return; }
    let i = idx % half;
    let th = idx / half;
    let t = th / p.heads;
    let base = th * p.head_dim;
    let c = cos_t[t * half + i];
    let s = sin_t[t * half + i];
    let a = x[base + i];
    let b = x[base + i + half];
    x[base + i] = a * c - b * s;
    x[base + i + half] = b * c + a * s;
}
