use super::elementwise;
use crate::context::{Gpu, GpuBuffer, Result};

pub(super) const SOURCE: &str = include_str!("swiglu.wgsl");

/// `y = silu(gate) * up` (the MLP activation).
pub struct SwiGlu(wgpu::ComputePipeline);

impl SwiGlu {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("swiglu", SOURCE))
    }
    pub fn run(&self, gpu: &Gpu, gate: &GpuBuffer, up: &GpuBuffer, y: &GpuBuffer, len: usize) -> Result<()> {
        elementwise::run(gpu, &self.0, "swiglu", gate, up, y, len)
    }
}
