// Causal grouped-query attention for prefill: q [T, H, D], k and v [T, KVH, D], out [T, H, D].
// Several sequences are packed one after another (no padding): starts[t] is the first token of
// t's sequence, and t attends to keys starts[t]..=t. When they all continue one prompt, the
// prompt is packed once, first, as `prompt` tokens: a token of a later sequence also attends
// to keys 0..prompt (its prompt), a prompt token only to the prompt tokens up to itself.
// Keys are walked by a virtual index over [0, pre) then [starts[t], t] (see key_at).
// One workgroup per (query, head) walks the keys in tiles of 64: each invocation scores one key
// of the tile, the tile's max and sum are reduced in shared memory, and a running (online)
// softmax rescales the output, so no T x T score matrix is ever stored. Each invocation owns
// output dims l, l+64, l+128, l+192 (head_dim <= 256).
struct Params { tokens: u32, heads: u32, kv_heads: u32, head_dim: u32, scale: f32, prompt: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> starts: array<u32>;
@group(0) @binding(5) var<uniform> p: Params;

const B: u32 = 64u;
const NEG: f32 = -3.0e38;
var<workgroup> w_tile: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

// The key at virtual index jv: the prompt's first `pre` keys, then the sequence's own from st.
fn key_at(jv: u32, pre: u32, st: u32) -> u32 {
    if (jv < pre) { return jv; }
    return st + (jv - pre);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = wg.x + wg.y * 65535u;
    if (idx >= p.tokens * p.heads) { return; }
    let l = lid.x;
    let t = idx / p.heads;
    let h = idx % p.heads;
    let kvh = h / (p.heads / p.kv_heads);
    let qb = (t * p.heads + h) * p.head_dim;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var m = NEG;
    var sum = 0.0;
    let st = starts[t];
    let pre = min(p.prompt, st);
    let count = pre + (t - st + 1u);
    for (var j0 = 0u; j0 < count; j0 += B) {
        let jv = j0 + l;
        var s = NEG;
        if (jv < count) {
            let kb = (key_at(jv, pre, st) * p.kv_heads + kvh) * p.head_dim;
            var d = 0.0;
            for (var i = 0u; i < p.head_dim; i++) { d += q[qb + i] * k[kb + i]; }
            s = d * p.scale;
        }
        red[l] = s;
        workgroupBarrier();
        for (var stride = B / 2u; stride > 0u; stride >>= 1u) {
            if (l < stride) { red[l] = max(red[l], red[l + stride]); }
            workgroupBarrier();
        }
        let m_new = max(m, red[0]);
        workgroupBarrier();
        var w = 0.0;
        if (jv < count) { w = exp(s - m_new); }
        w_tile[l] = w;
        red[l] = w;
        workgroupBarrier();
        for (var stride = B / 2u; stride > 0u; stride >>= 1u) {
            if (l < stride) { red[l] += red[l + stride]; }
            workgroupBarrier();
        }
        let correction = exp(m - m_new);
        sum = sum * correction + red[0];
        m = m_new;
        let last = min(count - j0, B);
        for (var c = 0u; c < 4u; c++) {
            let dim = l + c * B;
            if (dim < p.head_dim) {
                var a = acc[c] * correction;
                for (var jj = 0u; jj < last; jj++) {
                    a += w_tile[jj] * v[(key_at(j0 + jj, pre, st) * p.kv_heads + kvh) * p.head_dim + dim];
                }
                acc[c] = a;
            }
        }
        workgroupBarrier();
    }
    for (var c = 0u; c < 4u; c++) {
        let dim = l + c * B;
        if (dim < p.head_dim) { out[qb + dim] = acc[c] / sum; }
    }
}
