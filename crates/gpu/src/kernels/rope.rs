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

/// Rotary embedding in place on `[tokens, heads, head_dim]`, with the cos/sin tables of
/// `rewardlens_models::plan::rope_tables`.
pub struct Rope(wgpu::ComputePipeline);

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
        gpu.dispatch(
            &self.0,
            &[&x.buffer, &cos.buffer, &sin.buffer, &p.buffer],
            groups_1d(tokens * heads * head_dim / 2, 64),
        );
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
