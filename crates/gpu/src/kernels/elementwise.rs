//! What the elementwise kernels share: one uniform layout and one launch.

use super::{check, groups_1d};
use crate::context::{Gpu, GpuBuffer, Result};

/// Mirrors `Params` in swiglu.wgsl and add.wgsl.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct ElementwiseParams {
    /// Values in each of the three buffers.
    pub len: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

/// Runs `pipeline`, an elementwise kernel `y = f(a, b)`, over the first `len` values.
pub(super) fn run(
    gpu: &Gpu,
    pipeline: &wgpu::ComputePipeline,
    op: &str,
    a: &GpuBuffer,
    b: &GpuBuffer,
    y: &GpuBuffer,
    len: usize,
) -> Result<()> {
    check(format_args!("{op} a"), a, len)?;
    check(format_args!("{op} b"), b, len)?;
    check(format_args!("{op} y"), y, len)?;
    let p = gpu.uniform(&ElementwiseParams { len: len as u32, _a: 0, _b: 0, _c: 0 });
    gpu.dispatch(pipeline, &[&a.buffer, &b.buffer, &y.buffer, &p.buffer], groups_1d(len, 64));
    Ok(())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::kernels::uniform_layout::assert_mirrors_uniform;

    #[test]
    fn params_mirror_the_wgsl_of_every_elementwise_kernel() {
        for wgsl in [crate::kernels::swiglu::SOURCE, crate::kernels::add::SOURCE] {
            assert_mirrors_uniform!(ElementwiseParams, wgsl, [len, _a, _b, _c]);
        }
    }
}
