//! One WGSL kernel per op, each a type that owns its pipeline, in a file next to its shader with
//! the shader's uniform block as a `#[repr(C)]` params struct (tested against the WGSL layout).
//! Shapes are checked against the buffers before anything is dispatched. Launch functions take
//! the op's buffers and dims as plain arguments, mirroring the shader's bindings.
#![allow(clippy::too_many_arguments)]

mod add;
mod attention;
mod bias_add;
mod elementwise;
mod embedding;
mod matmul;
mod rms_norm;
mod rope;
mod swiglu;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod uniform_layout;
mod weights;

pub use add::Add;
pub use attention::{Attention, AttentionParams};
pub use bias_add::{BiasAdd, BiasAddParams};
pub use elementwise::ElementwiseParams;
pub use embedding::{Embedding, EmbeddingParams};
pub use matmul::{Matmul, MatmulParams};
pub use rms_norm::{RmsNorm, RmsNormParams};
pub use rope::{Rope, RopeParams};
pub use swiglu::SwiGlu;
pub use weights::{decoded_weights, encode_weights, quantize_q4_0, quantize_q8_0, split_rows, GpuMatrix, WeightFormat};

use crate::context::{GpuBuffer, GpuError, Result};

fn check(what: impl std::fmt::Display, b: &GpuBuffer, want: usize) -> Result<()> {
    if b.len < want {
        return Err(GpuError::Shape(format!("{what}: buffer of {} elements, needs {want}", b.len)));
    }
    Ok(())
}

/// Workgroups for `n` invocations of `size`, split over y past the 65,535 limit of x (the
/// shaders rebuild the index as x + y * 65535 * size).
fn groups_1d(n: usize, size: usize) -> (u32, u32, u32) {
    let total = n.div_ceil(size).max(1);
    if total <= 65_535 {
        (total as u32, 1, 1)
    } else {
        (65_535, total.div_ceil(65_535) as u32, 1)
    }
}
