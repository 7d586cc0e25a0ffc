use super::{check, groups_1d};
use crate::context::{Gpu, GpuBuffer, Result};

/// Mirrors `Params` in rope.wgsl.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct RopeParams {
    pub tokens: u32,
    pub heads: u32,
    pub head_dim: u32,
    _pad: u32,
}

const SOURCE: &str = include_str!("rope.wgsl");

/// Rotary embedding in place on `[tokens, heads, head_dim]`.
pub struct Rope(wgpu::ComputePipeline);

/// `1 / theta^(2i / head_dim)` (unscaled; models take theirs from `ModelConfig::rope_inv_freq`).
pub fn inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2).map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32).collect()
}

/// cos and sin tables `[tokens, head_dim/2]` for positions `offset..offset + tokens`, in f32
/// like transformers.
pub fn rope_tables(inv_freq: &[f32], offset: usize, tokens: usize) -> (Vec<f32>, Vec<f32>) {
    rope_tables_at(inv_freq, offset..offset + tokens)
}

/// cos and sin tables for any positions (packed sequences restart at 0).
pub fn rope_tables_at(inv_freq: &[f32], positions: impl ExactSizeIterator<Item = usize>) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(positions.len() * inv_freq.len());
    let mut sin = Vec::with_capacity(positions.len() * inv_freq.len());
    for pos in positions {
        for f in inv_freq {
            let a = pos as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

impl Rope {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("rope", SOURCE))
    }
    pub fn run(
        &self,
        gpu: &Gpu,
        x: &GpuBuffer,
        cos: &GpuBuffer,
        sin: &GpuBuffer,
        tokens: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        check("rope x", x, tokens * heads * head_dim)?;
        check("rope cos", cos, tokens * head_dim / 2)?;
        check("rope sin", sin, tokens * head_dim / 2)?;
        let p =
            gpu.uniform(&RopeParams { tokens: tokens as u32, heads: heads as u32, head_dim: head_dim as u32, _pad: 0 });
        gpu.dispatch(&self.0, &[&x.buffer, &cos.buffer, &sin.buffer, &p], groups_1d(tokens * heads * head_dim / 2, 64));
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::kernels::uniform_layout::assert_mirrors_uniform;

    #[test]
    fn params_mirror_the_wgsl() {
        assert_mirrors_uniform!(RopeParams, SOURCE, [tokens, heads, head_dim, _pad]);
    }
}
