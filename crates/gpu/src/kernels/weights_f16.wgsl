// f16 weights packed two per u32 (element 2i in the low half), for adapters without
// shader-f16: unpack2x16float is core WGSL.
@group(0) @binding(1) var<storage, read> w: array<u32>;

fn weight(n: u32, k: u32) -> f32 {
    let i = n * p.k + k;
    return unpack2x16float(w[i / 2u])[i % 2u];
}
