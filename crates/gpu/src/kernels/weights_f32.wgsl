// f32 weights, [n, k] row-major.
@group(0) @binding(1) var<storage, read> w: array<f32>;

fn weight(n: u32, k: u32) -> f32 {
    return w[n * p.k + k];
}
