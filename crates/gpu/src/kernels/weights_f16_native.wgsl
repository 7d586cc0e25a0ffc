// f16 weights read as f16 (the same bytes as the packed fallback) where the device has
// shader-f16.
enable f16;
@group(0) @binding(1) var<storage, read> w: array<f16>;

fn weight(n: u32, k: u32) -> f32 {
    return f32(w[n * p.k + k]);
}
