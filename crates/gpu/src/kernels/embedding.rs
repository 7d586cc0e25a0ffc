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

/// The table as f32 values.
const TABLE_F32: &str = "@group(0) @binding(0) var<storage, read> table: array<f32>;
fn value(j: u32) -> f32 { return table[j]; }";

/// The table as f16 values packed two per word (element 2i in the low half), read with
/// `unpack2x16float` (core WGSL: no `shader-f16` needed).
const TABLE_F16: &str = "@group(0) @binding(0) var<storage, read> table: array<u32>;
fn value(j: u32) -> f32 { return unpack2x16float(table[j / 2u])[j % 2u]; }";

/// Token embedding lookup from a table split into row chunks ([`GpuMatrix::upload_split`] in
/// f32, or [`GpuMatrix::upload_f16_rows`]): one dispatch per chunk, each writing the tokens
/// whose ids fall in it.
pub struct Embedding {
    f32: wgpu::ComputePipeline,
    f16: wgpu::ComputePipeline,
}

impl Embedding {
    pub fn new(gpu: &Gpu) -> Self {
        Self {
            f32: gpu.pipeline("embedding_f32", &format!("{TABLE_F32}\n{SOURCE}")),
            f16: gpu.pipeline("embedding_f16", &format!("{TABLE_F16}\n{SOURCE}")),
        }
    }
    pub fn run(&self, gpu: &Gpu, chunks: &[GpuMatrix], ids: &GpuBuffer, y: &GpuBuffer) -> Result<()> {
        let Some(dim) = chunks.first().map(|c| c.k) else {
            return Err(GpuError::Shape("embedding: no table".into()));
        };
        check("embedding y", y, ids.len * dim)?;
        let mut row0 = 0;
        for c in chunks {
            let pipeline = match c.format {
                WeightFormat::F32 if c.k == dim => &self.f32,
                WeightFormat::F16 if c.k == dim => &self.f16,
                _ => return Err(GpuError::Shape("embedding chunks must be f32 or f16 rows of one width".into())),
            };
            let p = gpu.uniform(&EmbeddingParams {
                tokens: ids.len as u32,
                dim: dim as u32,
                rows: c.n as u32,
                row0: row0 as u32,
            });
            gpu.dispatch(pipeline, &[&c.data.buffer, &ids.buffer, &y.buffer, &p.buffer], groups_1d(ids.len * dim, 64));
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
        assert_mirrors_uniform!(EmbeddingParams, &format!("{TABLE_F32}\n{SOURCE}"), [tokens, dim, rows, row0]);
        assert_mirrors_uniform!(EmbeddingParams, &format!("{TABLE_F16}\n{SOURCE}"), [tokens, dim, rows, row0]);
    }
}
