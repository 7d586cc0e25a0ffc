// Causal grouped-query attention for prefill: q [T, H, D], k and v [T, KVH, D], out [T, H, D].
// One invocation per (query, head) streams over the keys up to its own position with an
// online softmax (running max and sum), so no T x T score matrix is ever stored.
struct Params { tokens: u32, heads: u32, kv_heads: u32, head_dim: u32, scale: f32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const MAX_D: u32 = 256u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let idx = g.x + g.y * 65535u * 64u;
    if (idx >= p.tokens * p.heads) { return; }
    let t = idx / p.heads;
    let h = idx % p.heads;
    let kvh = h / (p.heads / p.kv_heads);
    let qb = (t * p.heads + h) * p.head_dim;
    var acc: array<f32, 256>;
    for (var d = 0u; d < p.head_dim; d++) { acc[d] = 0.0; }
    var m = -3.0e38;
    var sum = 0.0;
    for (var j = 0u; j <= t; j++) {
        let kb = (j * p.kv_heads + kvh) * p.head_dim;
        var s = 0.0;
        for (var d = 0u; d < p.head_dim; d++) { s += q[qb + d] * k[kb + d]; }
        s *= p.scale;
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let w = exp(s - m_new);
        sum = sum * correction + w;
        for (var d = 0u; d < p.head_dim; d++) { acc[d] = acc[d] * correction + w * v[kb + d]; }
        m = m_new;
    }
    for (var d = 0u; d < p.head_dim; d++) { out[qb + d] = acc[d] / sum; }
}
