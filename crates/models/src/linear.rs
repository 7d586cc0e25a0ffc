//! Linear layers of the decoder: the weight as Candle holds it (f32 or a GGUF quantized type).

use crate::weights::WeightSource;
use crate::Result;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};

/// Compute dtype on the CPU (see `decoder`).
const DTYPE: DType = DType::F32;

/// A linear layer whose weight may be quantized.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: QMatMul,
    pub(crate) bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &dyn WeightSource, name: &str, out: usize, inp: usize, bias: bool, dev: &Device) -> Result<Self> {
        let weight = w.linear_weight(&format!("{name}.weight"), out, inp, DTYPE, dev)?;
        let bias = if bias { Some(w.tensor(&format!("{name}.bias"), &[out], DTYPE, dev)?) } else { None };
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Flatten leading dims so one GEMM covers the whole batch.
        let dims = x.dims().to_vec();
        let inp = *dims.last().unwrap();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = self.weight.forward(&x.reshape((rows, inp))?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().unwrap() = y.dim(1)?;
        Ok(y.reshape(out)?)
    }
}

