use super::{check, groups_1d};
use crate::context::{Gpu, GpuBuffer, Result};

/// Mirrors `Params` in bias_add.wgsl.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BiasAddParams {
    pub rows: u32,
    /// Values in one row, and in the bias.
    pub cols: u32,
    _a: u32,
    _b: u32,
}

const SOURCE: &str = include_str!("bias_add.wgsl");

/// `y[r, :] += b` in place.
pub struct BiasAdd(wgpu::ComputePipeline);

impl BiasAdd {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("bias_add", SOURCE))
    }
    pub fn run(&self, gpu: &Gpu, y: &GpuBuffer, b: &GpuBuffer, rows: usize, cols: usize) -> Result<()> {
        check("bias_add y", y, rows * cols)?;
        check("bias_add b", b, cols)?;
        let p = gpu.uniform(&BiasAddParams { rows: rows as u32, cols: cols as u32, _a: 0, _b: 0 });
        gpu.dispatch(&self.0, &[&y.buffer, &b.buffer, &p.buffer], groups_1d(rows * cols, 64));
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::kernels::uniform_layout::assert_mirrors_uniform;

    #[test]
    fn params_mirror_the_wgsl() {
        assert_mirrors_uniform!(BiasAddParams, SOURCE, [rows, cols, _a, _b]);
    }
}
