//! Where tensors come from: safetensors checkpoints (memory-mapped natively, from byte buffers
//! in the browser). Every tensor is checked for presence and shape and converted to the compute
//! dtype, so a bad checkpoint fails with the tensor's name instead of deep inside a matmul.

use crate::gguf::ByteSource;
use crate::st_header::{self, StTensor};
use crate::{ModelError, Result};
use candle_core::quantized::QMatMul;
use candle_core::safetensors::BufferedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::ops::Range;

/// A named-tensor store a model can be built from.
pub trait WeightSource {
    /// The tensor `name`, which must have `shape`, as `dtype`.
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor>;

    /// The weight of a linear layer `name` (`[out, inp]`), kept quantized where the store is.
    fn linear_weight(&self, name: &str, out: usize, inp: usize, dtype: DType, device: &Device) -> Result<QMatMul> {
        Ok(QMatMul::Tensor(self.tensor(name, &[out, inp], dtype, device)?))
    }

    /// Whether [`Self::tensor_rows`] reads only the rows asked for (else it reads the whole
    /// tensor each time, and a caller should ask for all rows at once).
    fn reads_rows(&self) -> bool {
        false
    }

    /// Rows `rows` of the tensor `name` (which must have `shape`; rows along its first
    /// dimension), as `dtype`: for a table too large to pass through memory whole.
    fn tensor_rows(
        &self,
        name: &str,
        shape: &[usize],
        rows: Range<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        check_rows(name, shape, &rows)?;
        let t = self.tensor(name, shape, dtype, device)?;
        Ok(t.narrow(0, rows.start, rows.len())?)
    }

    /// The token embedding table (`[vocab, hidden]`), kept quantized where the store is.
    fn embedding_weight(
        &self,
        name: &str,
        vocab: usize,
        hidden: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<QMatMul> {
        Ok(QMatMul::Tensor(self.tensor(name, &[vocab, hidden], dtype, device)?))
    }
}

/// The files of a safetensors checkpoint (one file or the shards of an index).
pub enum SafetensorsWeights {
    #[cfg(feature = "mmap")]
    Mmaped(candle_core::safetensors::MmapedSafetensors),
    Buffered(Vec<BufferedSafetensors>),
}

impl SafetensorsWeights {
    /// Memory-maps the shard files.
    #[cfg(feature = "mmap")]
    pub fn mmap(paths: &[std::path::PathBuf]) -> Result<Self> {
        // SAFETY: the files are opened read-only; like every mmap user we rely on nobody
        // truncating a checkpoint while it is being scored.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(paths) }
            .map_err(|e| ModelError::Weights(e.to_string()))?;
        Ok(Self::Mmaped(st))
    }

    /// Parses shard files already in memory.
    pub fn from_buffers(buffers: Vec<Vec<u8>>) -> Result<Self> {
        let shards = buffers
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                BufferedSafetensors::new(b)
                    .map_err(|e| ModelError::Weights(format!("shard {i} is not a valid safetensors file: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::Buffered(shards))
    }

    fn load(&self, name: &str, device: &Device) -> Option<candle_core::Result<Tensor>> {
        match self {
            #[cfg(feature = "mmap")]
            Self::Mmaped(st) => st.get(name).ok().map(|_| st.load(name, device)),
            Self::Buffered(shards) => shards.iter().rev().find(|s| s.get(name).is_ok()).map(|s| s.load(name, device)),
        }
    }
}

impl WeightSource for SafetensorsWeights {
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let t = self
            .load(name, device)
            .ok_or_else(|| ModelError::MissingTensor { name: name.to_owned() })?
            .map_err(|e| ModelError::Weights(format!("tensor `{name}`: {e}")))?;
        if t.dims() != shape {
            return Err(ModelError::TensorShape {
                name: name.to_owned(),
                expected: shape.to_vec(),
                actual: t.dims().to_vec(),
            });
        }
        Ok(t.to_dtype(dtype)?)
    }
}

/// Safetensors shards read tensor by tensor through positioned reads, so only the converted
/// tensors are held in memory, never the file bytes as well: the browser keeps downloaded files
/// outside wasm memory and hands them over this way.
pub struct StreamedSafetensors {
    shards: Vec<(Box<dyn ByteSource>, Vec<StTensor>)>,
}

impl StreamedSafetensors {
    /// Reads each shard's directory; `names` label the shards in errors.
    pub fn new(shards: Vec<(String, Box<dyn ByteSource>)>) -> Result<Self> {
        let shards = shards
            .into_iter()
            .map(|(name, src)| {
                let dir =
                    st_header::read_directory(src.as_ref()).map_err(|e| ModelError::Weights(format!("{name}: {e}")))?;
                Ok((src, dir))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { shards })
    }

    /// The shard holding `name` and its entry, checked against `shape`.
    fn find(&self, name: &str, shape: &[usize]) -> Result<(&dyn ByteSource, &StTensor)> {
        let (src, t) = self
            .shards
            .iter()
            .find_map(|(src, dir)| dir.iter().find(|t| t.name == name).map(|t| (src.as_ref(), t)))
            .ok_or_else(|| ModelError::MissingTensor { name: name.to_owned() })?;
        if t.shape != shape {
            return Err(ModelError::TensorShape {
                name: name.to_owned(),
                expected: shape.to_vec(),
                actual: t.shape.clone(),
            });
        }
        Ok((src, t))
    }

    /// Bytes `start..end` of the file (offsets from the tensor's start) as a tensor of `shape`.
    fn read(
        src: &dyn ByteSource,
        t: &StTensor,
        start: u64,
        end: u64,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let name = &t.name;
        let mut bytes = vec![0u8; (end - start) as usize];
        src.read_at(t.start + start, &mut bytes).map_err(|e| ModelError::Weights(format!("tensor `{name}`: {e}")))?;
        let loaded = Tensor::from_raw_buffer(&bytes, t.dtype, shape, device)
            .map_err(|e| ModelError::Weights(format!("tensor `{name}`: {e}")))?;
        drop(bytes);
        Ok(loaded.to_dtype(dtype)?)
    }
}

impl WeightSource for StreamedSafetensors {
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let (src, t) = self.find(name, shape)?;
        Self::read(src, t, 0, t.end - t.start, shape, dtype, device)
    }

    fn reads_rows(&self) -> bool {
        true
    }

    fn tensor_rows(
        &self,
        name: &str,
        shape: &[usize],
        rows: Range<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (src, t) = self.find(name, shape)?;
        check_rows(name, shape, &rows)?;
        // Row-major and contiguous in the file (the directory checked its size).
        let row_bytes = (t.end - t.start).checked_div(shape[0] as u64).unwrap_or(0);
        let mut piece = shape.to_vec();
        piece[0] = rows.len();
        let (start, end) = (rows.start as u64 * row_bytes, rows.end as u64 * row_bytes);
        Self::read(src, t, start, end, &piece, dtype, device)
    }
}

/// Rows `rows` exist along the first dimension of `shape`.
fn check_rows(name: &str, shape: &[usize], rows: &Range<usize>) -> Result<()> {
    match shape.first() {
        Some(&n) if rows.start <= rows.end && rows.end <= n => Ok(()),
        _ => Err(ModelError::Weights(format!("tensor `{name}` {shape:?}: no rows {rows:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A piece of rows is the same tensor as those rows of the whole one, converted alike, and
    /// rows past the end are refused with the tensor's name.
    #[test]
    fn streamed_rows_are_the_whole_tensors_rows() {
        let values: Vec<f32> = (0..7 * 6).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![7, 6], &bytes).unwrap();
        let file = safetensors::serialize([("embed", view)], None).unwrap();
        let w =
            StreamedSafetensors::new(vec![("one.safetensors".into(), Box::new(file) as Box<dyn ByteSource>)]).unwrap();
        assert!(w.reads_rows());
        let whole = w.tensor("embed", &[7, 6], DType::F16, &Device::Cpu).unwrap();
        for rows in [0..7, 2..5, 6..7, 3..3] {
            let piece = w.tensor_rows("embed", &[7, 6], rows.clone(), DType::F16, &Device::Cpu).unwrap();
            let want = whole.narrow(0, rows.start, rows.len()).unwrap();
            assert_eq!(piece.dims(), want.dims(), "{rows:?}");
            let bits = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(bits(&piece), bits(&want), "{rows:?}");
        }
        let err = w.tensor_rows("embed", &[7, 6], 5..9, DType::F16, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("embed") && err.contains("5..9"), "{err}");
        assert!(w.tensor_rows("embed", &[7, 5], 0..1, DType::F16, &Device::Cpu).is_err(), "a wrong shape");
    }
}
