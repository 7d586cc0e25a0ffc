//! The GEMM driver and its 4-row × 8-column microkernels.

use crate::pack::{PackedMatrix, KSTEP, NR};
use crate::quant::{quantize_rows, Scratch};

/// Rows per register tile.
const MR: usize = 4;
/// Rows per block: their quantized activations (`kp` bytes each) stay in cache while every
/// weight panel passes over them.
const ROW_BLOCK: usize = 64;

/// Which microkernel a build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Scalar code the compiler may vectorize (native builds).
    Portable,
    /// wasm32 simd128: `i32x4_dot_i16x8` on widened int8 weights and u8 activations.
    WasmSimd128,
    /// wasm32 relaxed-simd: `i32x4_relaxed_dot_i8x16_i7x16_add` on int8 weights and 7-bit activations.
    WasmRelaxedSimd,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "int8 portable",
            Self::WasmSimd128 => "int8 simd128",
            Self::WasmRelaxedSimd => "int8 relaxed-simd",
        }
    }

    /// Largest activation value: 7 bits where the relaxed dot's second operand must keep its top
    /// bit clear.
    fn levels(self) -> u8 {
        match self {
            Self::WasmRelaxedSimd => 127,
            _ => 255,
        }
    }
}

/// The kernel this build was compiled for.
pub fn kernel() -> Kernel {
    if cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd")) {
        Kernel::WasmRelaxedSimd
    } else if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        Kernel::WasmSimd128
    } else {
        Kernel::Portable
    }
}

/// `out[m, n] = x[m, k] · Wᵀ` with this build's kernel.
pub fn matmul(x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32], scratch: &mut Scratch) {
    matmul_with(kernel(), x, m, w, out, scratch)
}

/// As [`matmul`] with the arithmetic of `kernel`: a kernel this build lacks runs as portable code
/// with the same quantization, so native tests cover each variant's integer results exactly.
///
/// Panics if `x` is not `m × k` or `out` not `m × n` (a caller bug, not input data).
pub fn matmul_with(kernel: Kernel, x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32], scratch: &mut Scratch) {
    assert_eq!(x.len(), m * w.k, "activations: {} values for {m} rows of {}", x.len(), w.k);
    assert_eq!(out.len(), m * w.n, "output: {} values for {m} rows of {}", out.len(), w.n);
    if m == 0 || w.n == 0 {
        return;
    }
    let wide = kernel == Kernel::WasmSimd128;
    quantize_rows(x, m, w.k, w.kp, kernel.levels(), wide, scratch);
    let groups = w.kp / w.group;
    let stride = w.panels * NR;
    for block in (0..m).step_by(ROW_BLOCK) {
        let block_end = (block + ROW_BLOCK).min(m);
        for p in 0..w.panels {
            let panel = &w.data[p * NR * w.kp..(p + 1) * NR * w.kp];
            for r0 in (block..block_end).step_by(MR) {
                let rows = MR.min(block_end - r0);
                // Missing rows of a ragged tile repeat the first; their results are dropped.
                let row_of = |i: usize| if i < rows { r0 + i } else { r0 };
                let mut acc_f = [[0.0f32; NR]; MR];
                for g in 0..groups {
                    let ks = g * w.group..(g + 1) * w.group;
                    let wg = &panel[ks.start * NR..ks.end * NR];
                    let acc = micro(kernel, scratch, w.kp, ks.clone(), wg, row_of);
                    for (i, acc_row) in acc.iter().enumerate().take(rows) {
                        let r = r0 + i;
                        let (sa, za) = (scratch.scales[r], scratch.zeros[r]);
                        for j in 0..NR {
                            let c = g * stride + p * NR + j;
                            acc_f[i][j] += sa * w.scales[c] * (acc_row[j] - za * w.colsums[c]) as f32;
                        }
                    }
                }
                for (i, row) in acc_f.iter().enumerate().take(rows) {
                    let r = r0 + i;
                    let cols = NR.min(w.n - p * NR);
                    out[r * w.n + p * NR..r * w.n + p * NR + cols].copy_from_slice(&row[..cols]);
                }
            }
        }
    }
}

/// i32 sums of one scale group for a 4-row tile: `acc[i][j] = Σ_k q[row_of(i)][k] · w[j][k]`
/// over `ks`, `wg` being that group's part of the panel.
fn micro(
    kernel: Kernel,
    s: &Scratch,
    kp: usize,
    ks: std::ops::Range<usize>,
    wg: &[i8],
    row_of: impl Fn(usize) -> usize,
) -> [[i32; NR]; MR] {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    if kernel == Kernel::WasmRelaxedSimd {
        let rows: [&[u8]; MR] = std::array::from_fn(|i| &s.q8[row_of(i) * kp + ks.start..row_of(i) * kp + ks.end]);
        return wasm::relaxed(rows, wg);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if kernel == Kernel::WasmSimd128 {
        let rows: [&[u16]; MR] = std::array::from_fn(|i| &s.q16[row_of(i) * kp + ks.start..row_of(i) * kp + ks.end]);
        return wasm::simd128(rows, wg);
    }
    let _ = kernel;
    let rows: [&[u8]; MR] = std::array::from_fn(|i| &s.q8[row_of(i) * kp + ks.start..row_of(i) * kp + ks.end]);
    portable(rows, wg)
}

fn portable(rows: [&[u8]; MR], wg: &[i8]) -> [[i32; NR]; MR] {
    let mut acc = [[0i32; NR]; MR];
    for (step, w) in wg.chunks_exact(NR * KSTEP).enumerate() {
        for (i, row) in rows.iter().enumerate() {
            let a = &row[step * KSTEP..step * KSTEP + KSTEP];
            for j in 0..NR {
                let wj = &w[j * KSTEP..j * KSTEP + KSTEP];
                acc[i][j] += (0..KSTEP).map(|t| a[t] as i32 * wj[t] as i32).sum::<i32>();
            }
        }
    }
    acc
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::{KSTEP, MR, NR};
    use core::arch::wasm32::*;

    /// 4 rows × 8 columns: per step of 4 K values, two weight loads (4 columns × 4 values each)
    /// serve all 4 rows, each row's 4 activations splatted across the lanes.
    #[cfg(target_feature = "relaxed-simd")]
    pub fn relaxed(rows: [&[u8]; MR], wg: &[i8]) -> [[i32; NR]; MR] {
        let steps = wg.len() / (NR * KSTEP);
        let mut acc = [i32x4_splat(0); 2 * MR];
        for s in 0..steps {
            // SAFETY: `wg` holds `steps * 32` bytes and each row `steps * 4`; unaligned v128 and
            // u32 loads are allowed in wasm.
            let (w0, w1, a) = unsafe {
                let p = wg.as_ptr().add(s * NR * KSTEP) as *const v128;
                let a: [u32; MR] =
                    std::array::from_fn(|i| (rows[i].as_ptr().add(s * KSTEP) as *const u32).read_unaligned());
                (v128_load(p), v128_load(p.add(1)), a)
            };
            for i in 0..MR {
                let ai = i32x4_splat(a[i] as i32);
                acc[2 * i] = i32x4_relaxed_dot_i8x16_i7x16_add(w0, ai, acc[2 * i]);
                acc[2 * i + 1] = i32x4_relaxed_dot_i8x16_i7x16_add(w1, ai, acc[2 * i + 1]);
            }
        }
        std::array::from_fn(|i| {
            let (lo, hi) = (acc[2 * i], acc[2 * i + 1]);
            [
                i32x4_extract_lane::<0>(lo),
                i32x4_extract_lane::<1>(lo),
                i32x4_extract_lane::<2>(lo),
                i32x4_extract_lane::<3>(lo),
                i32x4_extract_lane::<0>(hi),
                i32x4_extract_lane::<1>(hi),
                i32x4_extract_lane::<2>(hi),
                i32x4_extract_lane::<3>(hi),
            ]
        })
    }

    /// As `relaxed` with widened values: each i16x8 half of a weight load is 2 columns × 4 values,
    /// and `i32x4_dot_i16x8` leaves each column's sum in two lanes, added at the end.
    pub fn simd128(rows: [&[u16]; MR], wg: &[i8]) -> [[i32; NR]; MR] {
        let steps = wg.len() / (NR * KSTEP);
        let mut acc = [i32x4_splat(0); 4 * MR];
        for s in 0..steps {
            // SAFETY: as in `relaxed`; rows hold `steps * 4` u16 values.
            let (w0, w1, a) = unsafe {
                let p = wg.as_ptr().add(s * NR * KSTEP) as *const v128;
                let a: [u64; MR] =
                    std::array::from_fn(|i| (rows[i].as_ptr().add(s * KSTEP) as *const u64).read_unaligned());
                (v128_load(p), v128_load(p.add(1)), a)
            };
            let w = [
                i16x8_extend_low_i8x16(w0),
                i16x8_extend_high_i8x16(w0),
                i16x8_extend_low_i8x16(w1),
                i16x8_extend_high_i8x16(w1),
            ];
            for i in 0..MR {
                let ai = i64x2_splat(a[i] as i64);
                for (h, wh) in w.iter().enumerate() {
                    acc[4 * i + h] = i32x4_add(acc[4 * i + h], i32x4_dot_i16x8(*wh, ai));
                }
            }
        }
        std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let v = acc[4 * i + j / 2];
                if j % 2 == 0 {
                    i32x4_extract_lane::<0>(v) + i32x4_extract_lane::<1>(v)
                } else {
                    i32x4_extract_lane::<2>(v) + i32x4_extract_lane::<3>(v)
                }
            })
        })
    }
}
