// Q8_0: blocks of 32 weights along k share one f32 scale ([n, k/32] at binding 4); the quants
// are signed bytes, four per u32 ([n, k/4]).
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;

fn weight(n: u32, k: u32) -> f32 {
    let i = n * p.k + k;
    let byte = (q[i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
    return f32(i32(byte << 24u) >> 24u) * scales[i / 32u];
}
