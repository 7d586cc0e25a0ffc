// Q4_0 (ggml's layout): blocks of 32 weights along k share one f32 scale ([n, k/32] at binding
// 4); a block's 16 quant bytes (4 u32) hold weight j in the low nibble of byte j and weight
// j + 16 in the high nibble; a weight is (nibble - 8) * scale.
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(4) var<storage, read> scales: array<f32>;

fn weight(n: u32, k: u32) -> f32 {
    let i = n * p.k + k;
    let block = i / 32u;
    let j = i % 32u;
    let b = j % 16u;
    let byte = (q[block * 4u + b / 4u] >> ((b % 4u) * 8u)) & 0xffu;
    let nibble = select(byte & 0xfu, byte >> 4u, j >= 16u);
    return (f32(nibble) - 8.0) * scales[block];
}
