//! Linear layers of the decoder: the weight as Candle holds it (f32 or a GGUF quantized type),
//! or 8-bit weights repacked for our int8 kernels (`rewardlens-kernels`).
//!
//! The int8 path is the default for 8-bit (Q8_0) weights wherever one of the kernels' SIMD
//! microkernels runs: on wasm32, where Candle's quantized matmul is a per-row `vec_dot` slower
//! than its own f32, and natively on x86-64 with AVX-512 VNNI, AVX-VNNI or AVX2 (rows split over
//! Rayon's threads, activations quantized per 32-value group as finely as Candle's Q8_0), where
//! it ran the 0.6B shape faster than Candle's Q8_0 and scored it with smaller errors
//! (docs/PERFORMANCE.md). Other CPUs keep Candle (our portable kernel is slower than Candle's
//! SIMD code); the CLI's `--q8-kernel` chooses either. The choice is made while a model loads,
//! several calls deep, so it is a scoped per-thread setting ([`with_kernel`]) rather than a
//! parameter of every `load`.

use crate::plan::LinearWeights;
use crate::weights::WeightSource;
use crate::Result;
use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{CpuStorage, DType, Device, Module, Storage, Tensor};
#[cfg(not(target_arch = "wasm32"))]
use rewardlens_kernels::Columns;
pub use rewardlens_kernels::ScaleLayout;
use rewardlens_kernels::{PackedMatrix, Scratch};
use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// How linear layers with 8-bit weights multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearKernel {
    /// Candle's `QMatMul`.
    Candle,
    /// `rewardlens-kernels` with these scales. `PerGroup(32)` keeps a Q8_0 file's values exactly;
    /// other layouts requantize them.
    Int8(ScaleLayout),
}

impl LinearKernel {
    /// The default of this build and CPU: int8 with Q8_0's own scales wherever one of our SIMD
    /// microkernels runs, else Candle (see the module doc).
    pub fn default_for_build() -> Self {
        if rewardlens_kernels::kernel() != rewardlens_kernels::Kernel::Portable {
            Self::Int8(ScaleLayout::PerGroup(32))
        } else {
            Self::Candle
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::Candle => "candle".into(),
            Self::Int8(l) => format!("{} ({} scales)", rewardlens_kernels::kernel().name(), l.name()),
        }
    }
}

thread_local! {
    static KERNEL: Cell<LinearKernel> = Cell::new(LinearKernel::default_for_build());
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` (a model load) with 8-bit linear layers built for `kernel`.
pub fn with_kernel<R>(kernel: LinearKernel, f: impl FnOnce() -> R) -> R {
    let before = KERNEL.with(|k| k.replace(kernel));
    struct Restore(LinearKernel);
    impl Drop for Restore {
        fn drop(&mut self) {
            KERNEL.with(|k| k.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// The kernel loads on this thread use now.
pub fn current_kernel() -> LinearKernel {
    KERNEL.with(Cell::get)
}

/// A linear layer's weight.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    Candle(QMatMul),
    Int8(Arc<PackedMatrix>),
}

/// Compute dtype on the CPU (see `decoder`).
const DTYPE: DType = DType::F32;

/// A linear layer whose weight may be quantized.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: LinearWeight,
    pub(crate) bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &dyn WeightSource, l: &LinearWeights, dev: &Device) -> Result<Self> {
        let (name, out, inp) = (l.name.as_str(), l.out, l.inp);
        let weight = w.linear_weight(&l.weight(), out, inp, DTYPE, dev)?;
        let weight = match (current_kernel(), &weight) {
            (LinearKernel::Int8(layout), QMatMul::QTensor(q)) if q.dtype() == GgmlDType::Q8_0 => {
                let raw = q.data().map_err(|e| crate::ModelError::Weights(format!("tensor `{name}`: {e}")))?;
                let packed = PackedMatrix::pack_q8_0(&raw, out, inp, layout)
                    .map_err(|e| crate::ModelError::Weights(format!("tensor `{name}`: {e}")))?;
                // The Candle copy is dropped here, layer by layer: peak memory stays one layer above.
                LinearWeight::Int8(Arc::new(packed))
            }
            _ => LinearWeight::Candle(weight),
        };
        let bias = l.bias_name().map(|b| w.tensor(&b, &[out], DTYPE, dev)).transpose()?;
        Ok(Self { weight, bias })
    }

    /// A layer over an f32 weight (the score head).
    pub fn from_tensor(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight: LinearWeight::Candle(QMatMul::Tensor(weight)), bias }
    }

    /// Which kernel multiplies this layer, for reports ("int8 relaxed-simd (per-group(32) scales)",
    /// "candle q8_0", "candle f32").
    pub fn kernel_name(&self) -> String {
        match &self.weight {
            LinearWeight::Int8(w) => format!("{} ({} scales)", rewardlens_kernels::kernel().name(), w.layout().name()),
            LinearWeight::Candle(QMatMul::QTensor(q)) => {
                format!("candle {}", format!("{:?}", q.dtype()).to_lowercase())
            }
            LinearWeight::Candle(_) => "candle f32".into(),
        }
    }

    fn multiply(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Candle(w) => Ok(w.forward(x)?),
            LinearWeight::Int8(w) => {
                let (rows, inp) = x.dims2()?;
                debug_assert_eq!(inp, w.k());
                let x = x.to_dtype(DType::F32)?.contiguous()?;
                let mut out = vec![0.0f32; rows * w.n()];
                // The activations are read where Candle holds them (a copy per layer was 5% of a pass).
                let (storage, layout) = x.storage_and_layout();
                match (&*storage, layout.contiguous_offsets()) {
                    (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => {
                        int8_matmul(&data[start..end], rows, w, &mut out)
                    }
                    _ => {
                        return Err(
                            candle_core::Error::Msg("int8 linear layer: activations not on the CPU".into()).into()
                        )
                    }
                }
                drop(storage);
                Ok(Tensor::from_vec(out, (rows, w.n()), x.device())?)
            }
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Flatten leading dims so one GEMM covers the whole batch.
        let dims = x.dims().to_vec();
        let inp = *dims.last().unwrap();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = self.multiply(&x.reshape((rows, inp))?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().unwrap() = y.dim(1)?;
        Ok(y.reshape(out)?)
    }
}

/// `out = x · Wᵀ` through the int8 kernel. Natively over Rayon's threads: below
/// [`COLUMN_SPLIT_ROWS`] rows, the activations are quantized once and the threads split the
/// output columns; from there, each thread takes a block of rows (whole 4-row tiles) and
/// quantizes them into its own scratch. In wasm one engine worker is one thread.
fn int8_matmul(x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32]) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads();
        let kernel = rewardlens_kernels::kernel();
        let by_columns = m < COLUMN_SPLIT_ROWS || (kernel.expands_weights() && m <= EXPANDED_COLUMN_SPLIT_ROWS);
        if threads > 1 && by_columns {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                let prepared = rewardlens_kernels::prepare(kernel, x, m, w, &mut s);
                split_columns(&prepared, Columns::new(out, m, w), threads);
            });
            return;
        }
        if threads > 1 && m >= 8 {
            let per = m.div_ceil(threads).next_multiple_of(4);
            out.par_chunks_mut(per * w.n()).zip(x.par_chunks(per * w.k())).for_each(|(o, xs)| {
                let rows = xs.len() / w.k();
                SCRATCH.with(|s| rewardlens_kernels::matmul(xs, rows, w, o, &mut s.borrow_mut()));
            });
            return;
        }
    }
    SCRATCH.with(|s| rewardlens_kernels::matmul(x, m, w, out, &mut s.borrow_mut()));
}

/// Rows below which threads split a matmul's columns rather than its rows. Measured on the
/// Skywork-0.6B shape, 2 threads, Sapphire Rapids (AMX): 16-token passes 3–10% faster by
/// columns (split by rows, each thread padded its 8 rows to a 16-row AMX tile), 64-token
/// passes 10–20% slower (the quantization runs on one thread; not further explained).
#[cfg(not(target_arch = "wasm32"))]
const COLUMN_SPLIT_ROWS: usize = 32;

/// The same for a kernel that expands its weights (bf16 AMX), where split rows make every
/// thread expand every weight: 64-token passes 15–20% faster by columns, 512-token passes
/// 15% slower (the activations, prepared on one thread, then weigh more).
#[cfg(not(target_arch = "wasm32"))]
const EXPANDED_COLUMN_SPLIT_ROWS: usize = 128;

/// `part` of a prepared matmul over `threads` threads: halves by `rayon::join` (no allocation).
#[cfg(not(target_arch = "wasm32"))]
fn split_columns(prepared: &rewardlens_kernels::Prepared, part: Columns, threads: usize) {
    let panels = part.panels();
    if threads <= 1 || panels.len() < 4 {
        return prepared.multiply(part);
    }
    let left = threads / 2;
    let (a, b) = part.split_at(panels.start + panels.len() * left / threads);
    rayon::join(|| split_columns(prepared, a, left), || split_columns(prepared, b, threads - left));
}
