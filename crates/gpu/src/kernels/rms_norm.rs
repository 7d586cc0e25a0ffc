use super::check;
use crate::context::{Gpu, GpuBuffer, Result};

/// Mirrors `Params` in rms_norm.wgsl and rms_norm_subgroup.wgsl.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct RmsNormParams {
    pub rows: u32,
    /// Values in one row.
    pub dim: u32,
    pub eps: f32,
    _pad: u32,
}

const TREE: &str = include_str!("rms_norm.wgsl");
const SUBGROUP: &str = include_str!("rms_norm_subgroup.wgsl");

/// RMSNorm over rows of `dim` (Qwen3's per-head q/k norm is rows = tokens x heads, dim = head_dim).
/// The sum of squares is reduced with subgroup operations where the device has them.
pub struct RmsNorm(wgpu::ComputePipeline);

impl RmsNorm {
    pub fn new(gpu: &Gpu) -> Self {
        if gpu.subgroups {
            // Browsers (Tint) require the enable directive; naga rejects it and needs only the
            // device feature.
            let enable = if cfg!(target_arch = "wasm32") { "enable subgroups;\n" } else { "" };
            Self(gpu.pipeline("rms_norm_subgroup", &format!("{enable}{SUBGROUP}")))
        } else {
            Self(gpu.pipeline("rms_norm", TREE))
        }
    }
    pub fn run(
        &self,
        gpu: &Gpu,
        x: &GpuBuffer,
        weight: &GpuBuffer,
        y: &GpuBuffer,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        check("rms_norm x", x, rows * dim)?;
        check("rms_norm weight", weight, dim)?;
        check("rms_norm y", y, rows * dim)?;
        let p = gpu.uniform(&RmsNormParams { rows: rows as u32, dim: dim as u32, eps, _pad: 0 });
        let groups = (rows.min(65_535) as u32, rows.div_ceil(65_535) as u32, 1);
        gpu.dispatch(&self.0, &[&x.buffer, &weight.buffer, &y.buffer, &p.buffer], groups);
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::kernels::uniform_layout::assert_mirrors_uniform;

    #[test]
    fn params_mirror_the_wgsl_of_both_reductions() {
        for wgsl in [TREE, SUBGROUP] {
            assert_mirrors_uniform!(RmsNormParams, wgsl, [rows, dim, eps, _pad]);
        }
    }
}
