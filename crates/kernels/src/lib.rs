//! CPU matrix kernels of the browser and native engines, each with wasm32 simd128 and
//! relaxed-simd microkernels, x86-64 ones chosen at run time, and a portable one that native
//! tests check: the int8 GEMM of quantized linear
//! layers (this page; the crate's root items), the f32 GEMM of attention ([`f32_gemm`]),
//! causal attention around it ([`attention`]) and the decoder's elementwise steps
//! ([`elementwise`]).
//!
//! Int8: `out = x · Wᵀ` with `W` repacked once into int8 column panels and `x` quantized on the
//! fly, per row (wasm, portable) or per row and scale group (x86-64).
//!
//! Why our own: Candle's quantized matmul on wasm32 is a per-row `vec_dot` over Q8_0 blocks
//! (two f16→f32 conversions and float work every 32 values, no register tiling), slower than
//! its own f32 path. Here each 4-row × 8-column register tile reuses every weight load across
//! rows (a GEMM, not a GEMV), sums i32 products over a whole scale group (the whole row for
//! per-channel scales) and folds each group into f32 with one vector multiply-add per 4 columns.
//!
//! Arithmetic (exact in integers within a group): a row of activations `x` becomes unsigned
//! `q = round(x / s) + z` (asymmetric, zero point `z`; 8-bit, or 7-bit for relaxed-simd, whose
//! second dot operand is portable only with its top bit clear, and whose x86 lowering, pmaddubsw,
//! saturates i16 pair sums beyond 7 bits). With `acc_g = Σ_{k∈g} q·w` in i32,
//! `out = s · (Σ_g scale[g] · acc_g − z · c)`, where `c = Σ_g scale[g] · Σ_{k∈g} w` is precomputed
//! per column at packing: the zero point costs one step per output, not one per group.
//!
//! Per group (the x86-64 kernels, where the fold per group is cheap next to `vpdpbusd`): each
//! group of a row gets its own symmetric scale `a_g = max|x_g| / 127`, `q = round(x / a_g)`, and
//! `out = Σ_g a_g · scale[g] · acc_g`; VNNI's unsigned operand holds `q + 128`, whose extra
//! `128 · Σ_{k∈g} w` is subtracted from `acc_g` (precomputed per group and column at packing).
//! As fine as Candle's Q8_0 activation blocks: per row, an outlier coarsened every value of its
//! row, and the 0.6B shape scored measurably less accurately than with Candle
//! (docs/PERFORMANCE.md).
//!
//! Microkernels: wasm32 `relaxed-simd` (`i32x4_relaxed_dot_i8x16_i7x16_add`, or its pairwise
//! form where the browser lowers that without VNNI: [`RelaxedDot`]) and wasm32
//! `simd128` (`i32x4_dot_i16x8` on widened values), chosen at compile time; x86-64 AMX-BF16
//! (weights expanded to bf16 with their scales, f32 sums over the whole K: `bf16.rs`), AMX-INT8
//! (`tdpbssd` on 16-row tiles; Linux grants the tile state on request), VNNI (`vpdpbusd`:
//! AVX-512 VNNI on pairs of panels in 512-bit registers, else AVX-VNNI) and AVX2 (`vpmaddubsw` +
//! `vpmaddwd`, signed activations), chosen at run time; and a portable one
//! (other native CPUs, and the reference the tests compare every variant's semantics against).
//! Every variant's integer sums are exact, so a microkernel's output equals, to the bit, the
//! portable arithmetic with the same quantization (tests).

use thiserror::Error;

mod aligned;
pub mod attention;
mod bf16;
pub mod elementwise;
pub mod f32_gemm;
mod kernel;
mod pack;
mod quant;
pub mod reference;

pub use kernel::{
    kernel, matmul, matmul_with, prepare, relaxed_dot, set_relaxed_dot, Columns, Kernel, Prepared, RelaxedDot,
};
pub use pack::{PackedMatrix, ScaleLayout, NR};
pub use quant::{quantize_rows_for_bench, Scratch};

#[derive(Debug, Error, PartialEq)]
pub enum Int8Error {
    #[error("weight matrix: {got} values for a {n} x {k} matrix ({want} expected)")]
    Size { n: usize, k: usize, got: usize, want: usize },
    #[error("scale groups of {0} values: a group must be a positive multiple of 4")]
    Group(usize),
    #[error("Q8_0 weights: {got} bytes for {rows} rows of {k} values ({want} expected; k must be a multiple of 32)")]
    Q8Size { rows: usize, k: usize, got: usize, want: usize },
    #[error("weight matrix holds a non-finite value at row {row}, column {col}")]
    NonFinite { row: usize, col: usize },
}

/// The reference check of this build's kernel: random shapes with ragged edges, each layout,
/// against a plain f32 matmul of the dequantized weights (relaxed-simd: with each dot form, the
/// probed one restored after). `Ok` carries a summary; the browser tests run it inside both
/// worker builds.
pub fn self_test(seed: u64) -> Result<String, String> {
    let chosen = relaxed_dot();
    let forms: &[Option<RelaxedDot>] = if kernel() == Kernel::WasmRelaxedSimd {
        &[Some(RelaxedDot::Fused), Some(RelaxedDot::Pairwise)]
    } else {
        &[None]
    };
    let mut worst = 0.0f32;
    let mut cases = 0;
    let mut checks = || -> Result<(), String> {
        for form in forms {
            if let Some(form) = form {
                set_relaxed_dot(*form);
            }
            for (i, &(m, n, k)) in reference::SHAPES.iter().enumerate() {
                for layout in [ScaleLayout::PerChannel, ScaleLayout::PerGroup(32)] {
                    let r = reference::check(kernel(), m, n, k, layout, seed.wrapping_add(i as u64))?;
                    worst = worst.max(r);
                    cases += 1;
                }
            }
        }
        Ok(())
    };
    let result = checks();
    set_relaxed_dot(chosen);
    result?;
    quant::check_row_quantizer()?;
    let attention = attention::check(seed)?;
    let forms = if forms.len() > 1 { " (both relaxed dot forms)" } else { "" };
    Ok(format!(
        "{}: {cases} shapes within bounds{forms} (worst error {:.3} of its bound); row quantizer exact; attention within {attention:.1e}",
        kernel().name(),
        worst
    ))
}
