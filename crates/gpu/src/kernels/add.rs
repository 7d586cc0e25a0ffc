use super::elementwise;
use crate::context::{Gpu, GpuBuffer, Result};

pub(super) const SOURCE: &str = include_str!("add.wgsl");

/// `y = a + b` (residual connections).
pub struct Add(wgpu::ComputePipeline);

impl Add {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("add", SOURCE))
    }
    pub fn run(&self, gpu: &Gpu, a: &GpuBuffer, b: &GpuBuffer, y: &GpuBuffer, len: usize) -> Result<()> {
        elementwise::run(gpu, &self.0, "add", a, b, y, len)
    }
}
