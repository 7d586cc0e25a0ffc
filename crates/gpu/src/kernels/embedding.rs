use super::{check, groups_1d, GpuMatrix, WeightFormat};
use crate::context::{Gpu, GpuBuffer, GpuError, Result};

/// Mirrors `Params` in embedding.wgsl.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct EmbeddingParams {
    /// Token ids looked up.
    pub tokens: u32,
    /// Values in one embedding row.
    pub dim: u32,
    /// Rows in this chunk of the table.
    pub rows: u32,
    /// The id of the chunk's first row.
    pub row0: u32,
}

const SOURCE: &str = include_str!("embedding.wgsl");

/// Token embedding lookup from a table split into row chunks ([`GpuMatrix::upload_split`] in
/// f32): one dispatch per chunk, each writing the tokens whose ids fall in it.
pub struct Embedding(wgpu::ComputePipeline);

impl Embedding {
    pub fn new(gpu: &Gpu) -> Self {
        Self(gpu.pipeline("embedding", SOURCE))
    }
    pub fn run(&self, gpu: &Gpu, chunks: &[GpuMatrix], ids: &GpuBuffer, y: &GpuBuffer) -> Result<()> {
        let Some(dim) = chunks.first().map(|c| c.k) else {
            return Err(GpuError::Shape("embedding: no table".into()));
        };
        check("embedding y", y, ids.len * dim)?;
        let mut row0 = 0;
        for c in chunks {
            if c.format != WeightFormat::F32 || c.k != dim {
                return Err(GpuError::Shape("embedding chunks must be f32 rows of one width".into()));
            }
            let p = gpu.uniform(&EmbeddingParams {
                tokens: ids.len as u32,
                dim: dim as u32,
                rows: c.n as u32,
                row0: row0 as u32,
            });
            gpu.dispatch(&self.0, &[&c.data.buffer, &ids.buffer, &y.buffer, &p], groups_1d(ids.len * dim, 64));
            row0 += c.n;
        }
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::kernels::uniform_layout::assert_mirrors_uniform;

    #[test]
    fn params_mirror_the_wgsl() {
        assert_mirrors_uniform!(EmbeddingParams, SOURCE, [tokens, dim, rows, row0]);
    }
}
