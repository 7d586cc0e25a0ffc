use super::check;
use crate::context::{Gpu, GpuBuffer, GpuError, Result};

/// Mirrors `Params` in attention.wgsl.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct AttentionParams {
    pub tokens: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Applied to q·k: 1 / sqrt(head_dim).
    pub scale: f32,
    /// Leading tokens that are a prompt every later sequence continues (0: none).
    pub prompt: u32,
    _b: u32,
    _c: u32,
}

const SOURCE: &str = include_str!("attention.wgsl");

/// Causal grouped-query attention for prefill over packed sequences (`starts[t]`: the first
/// token of t's sequence; the first `shared` tokens, if any, a prompt that every later sequence
/// continues): key tiles of 64, an online softmax.
pub struct Attention(wgpu::ComputePipeline);

impl Attention {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("attention", SOURCE))
    }
    pub fn run(
        &self,
        gpu: &Gpu,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        out: &GpuBuffer,
        starts: &GpuBuffer,
        shared: usize,
        tokens: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        if head_dim > 256 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(GpuError::Shape(format!("attention: {heads} heads / {kv_heads} kv heads of {head_dim}")));
        }
        check("attention q", q, tokens * heads * head_dim)?;
        check("attention k", k, tokens * kv_heads * head_dim)?;
        check("attention v", v, tokens * kv_heads * head_dim)?;
        check("attention out", out, tokens * heads * head_dim)?;
        check("attention starts", starts, tokens)?;
        let p = gpu.uniform(&AttentionParams {
            tokens: tokens as u32,
            heads: heads as u32,
            kv_heads: kv_heads as u32,
            head_dim: head_dim as u32,
            scale: 1.0 / (head_dim as f32).sqrt(),
            prompt: shared as u32,
            _b: 0,
            _c: 0,
        });
        let n = tokens * heads;
        let groups = (n.min(65_535) as u32, n.div_ceil(65_535) as u32, 1);
        gpu.dispatch(&self.0, &[&q.buffer, &k.buffer, &v.buffer, &out.buffer, &starts.buffer, &p.buffer], groups);
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::kernels::uniform_layout::assert_mirrors_uniform;

    #[test]
    fn params_mirror_the_wgsl() {
        assert_mirrors_uniform!(AttentionParams, SOURCE, [tokens, heads, kv_heads, head_dim, scale, prompt, _b, _c]);
    }
}
