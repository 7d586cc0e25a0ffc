use super::{check, GpuMatrix, WeightFormat};
use crate::context::{Gpu, GpuBuffer, GpuError, Result};

/// Mirrors `Params` in matmul.wgsl.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct MatmulParams {
    /// Rows of `x` and `y`.
    pub m: u32,
    /// Rows of the weight matrix: the columns written.
    pub n: u32,
    /// The shared inner dimension.
    pub k: u32,
    /// Values in one row of `y`.
    pub ldy: u32,
    /// The first column of `y` written.
    pub col0: u32,
    _a: u32,
    _b: u32,
    _c: u32,
}

/// The kernel with a format's `weight(n, k)` prepended (WGSL has no includes).
fn source(weights: &str) -> String {
    format!("{weights}\n{}", include_str!("matmul.wgsl"))
}

/// `y[m, col0 + n] = x[m, k] · w[n, k]ᵀ` for every [`WeightFormat`]: one tiled kernel with the
/// format's `weight(n, k)` prepended.
pub struct Matmul {
    f32: wgpu::ComputePipeline,
    f16: wgpu::ComputePipeline,
    q8_0: wgpu::ComputePipeline,
    q4_0: wgpu::ComputePipeline,
}

impl Matmul {
    pub fn new(gpu: &Gpu) -> Self {
        let build = |label: &str, weights: &str| gpu.pipeline(label, &source(weights));
        let f16 = if gpu.shader_f16 {
            build("matmul_f16_native", include_str!("weights_f16_native.wgsl"))
        } else {
            build("matmul_f16", include_str!("weights_f16.wgsl"))
        };
        Self {
            f32: build("matmul_f32", include_str!("weights_f32.wgsl")),
            f16,
            q8_0: build("matmul_q8_0", include_str!("weights_q8_0.wgsl")),
            q4_0: build("matmul_q4_0", include_str!("weights_q4_0.wgsl")),
        }
    }

    /// Writes `y[r, col0..col0 + w.n]` (rows of `ldy` values) for the `m` rows of `x`.
    pub fn run(
        &self,
        gpu: &Gpu,
        x: &GpuBuffer,
        w: &GpuMatrix,
        y: &GpuBuffer,
        m: usize,
        ldy: usize,
        col0: usize,
    ) -> Result<()> {
        let (n, k) = (w.n, w.k);
        check("matmul x", x, m * k)?;
        if col0 + n > ldy {
            return Err(GpuError::Shape(format!("matmul: columns {col0}..{} past a row of {ldy}", col0 + n)));
        }
        check("matmul y", y, m * ldy)?;
        let p = gpu.uniform(&MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            ldy: ldy as u32,
            col0: col0 as u32,
            _a: 0,
            _b: 0,
            _c: 0,
        });
        let groups = (n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1);
        let pipeline = match w.format {
            WeightFormat::F32 => &self.f32,
            WeightFormat::F16 => &self.f16,
            WeightFormat::Q8_0 => &self.q8_0,
            WeightFormat::Q4_0 => &self.q4_0,
        };
        match &w.scales {
            Some(s) => gpu.dispatch(pipeline, &[&x.buffer, &w.data.buffer, &y.buffer, &p.buffer, &s.buffer], groups),
            None => gpu.dispatch(pipeline, &[&x.buffer, &w.data.buffer, &y.buffer, &p.buffer], groups),
        }
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::kernels::uniform_layout::assert_mirrors_uniform;

    #[test]
    fn params_mirror_the_wgsl_with_every_weight_format() {
        for weights in [
            include_str!("weights_f32.wgsl"),
            include_str!("weights_f16.wgsl"),
            include_str!("weights_f16_native.wgsl"),
            include_str!("weights_q8_0.wgsl"),
            include_str!("weights_q4_0.wgsl"),
        ] {
            assert_mirrors_uniform!(MatmulParams, &source(weights), [m, n, k, ldy, col0, _a, _b, _c]);
        }
    }
}
