//! Where tensors come from: safetensors checkpoints (memory-mapped natively, from byte buffers
//! in the browser). Every tensor is checked for presence and shape and converted to the compute
//! dtype, so a bad checkpoint fails with the tensor's name instead of deep inside a matmul.

use crate::gguf::ByteSource;
use crate::st_header::{self, StTensor};
use crate::{ModelError, Result};
use candle_core::quantized::QMatMul;
use candle_core::safetensors::BufferedSafetensors;
use candle_core::{DType, Device, Tensor};

/// A named-tensor store a model can be built from.
pub trait WeightSource {
    /// The tensor `name`, which must have `shape`, as `dtype`.
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor>;

    /// The weight of a linear layer `name` (`[out, inp]`), kept quantized where the store is.
    fn linear_weight(&self, name: &str, out: usize, inp: usize, dtype: DType, device: &Device) -> Result<QMatMul> {
        Ok(QMatMul::Tensor(self.tensor(name, &[out, inp], dtype, device)?))
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
}

impl WeightSource for StreamedSafetensors {
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let (src, t) = self
            .shards
            .iter()
            .find_map(|(src, dir)| dir.iter().find(|t| t.name == name).map(|t| (src, t)))
            .ok_or_else(|| ModelError::MissingTensor { name: name.to_owned() })?;
        if t.shape != shape {
            return Err(ModelError::TensorShape {
                name: name.to_owned(),
                expected: shape.to_vec(),
                actual: t.shape.clone(),
            });
        }
        let mut bytes = vec![0u8; (t.end - t.start) as usize];
        src.read_at(t.start, &mut bytes).map_err(|e| ModelError::Weights(format!("tensor `{name}`: {e}")))?;
        let loaded = Tensor::from_raw_buffer(&bytes, t.dtype, &t.shape, device)
            .map_err(|e| ModelError::Weights(format!("tensor `{name}`: {e}")))?;
        drop(bytes);
        Ok(loaded.to_dtype(dtype)?)
    }
}
