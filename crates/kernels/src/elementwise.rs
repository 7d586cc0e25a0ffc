//! The decoder's elementwise steps on plain slices, AVX2 where the CPU has it (natively chosen at
//! run time), with the portable code's bits: SwiGLU (`silu(gate) · up`) and RMSNorm. Candle's
//! generic CPU ops took 2–4 ns a value for them (7% and 6% of a 512-token pass).

use crate::attention::exp;

/// `out[i] = gate[i] / (1 + e^(−gate[i])) · up[i]`, [`exp`] as attention's.
///
/// Panics if the lengths differ (a caller bug).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && up.len() == out.len(), "swiglu: lengths differ");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX2; equal lengths asserted.
    let done = if crate::kernel::has_avx2() { unsafe { x86::swiglu(gate, up, out) } } else { 0 };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for ((o, &g), &u) in out[done..].iter_mut().zip(&gate[done..]).zip(&up[done..]) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// Each row of `x` (rows of `weight.len()` values) times `weight`, divided by its root mean
/// square: `out = x · (1 / sqrt(mean(x²) + eps)) · weight`, the squares summed in 8 lanes then
/// pairwise, in every build.
///
/// Panics if `x` is not whole rows or `out` not as long (a caller bug).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    assert!(n > 0 && x.len().is_multiple_of(n) && out.len() == x.len(), "rms_norm: not whole rows");
    for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let inv = 1.0 / (sum_squares(row) / n as f32 + eps).sqrt();
        #[cfg(target_arch = "x86_64")]
        if crate::kernel::has_avx2() {
            // SAFETY: the CPU has AVX2; equal lengths.
            unsafe { x86::scale_rows(row, weight, inv, dst) };
            continue;
        }
        for ((o, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    }
}

/// Σ v², in 8 lanes (lane `j` takes values `j, j + 8, …`), the lanes added pairwise, the
/// remainder last.
fn sum_squares(row: &[f32]) -> f32 {
    let mut chunks = row.chunks_exact(8);
    #[cfg(target_arch = "x86_64")]
    let lanes = if crate::kernel::has_avx2() {
        // SAFETY: the CPU has AVX2.
        unsafe { x86::square_lanes(&mut chunks) }
    } else {
        portable_lanes(&mut chunks)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let lanes = portable_lanes(&mut chunks);
    let pairs = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    let mut sum = (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]);
    for &v in chunks.remainder() {
        sum += v * v;
    }
    sum
}

fn portable_lanes(chunks: &mut std::slice::ChunksExact<f32>) -> [f32; 8] {
    let mut lanes = [0.0f32; 8];
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::attention::exp_f32x8;
    use std::arch::x86_64::*;

    /// [`super::swiglu`] on whole 8-value chunks (the same operations, so the same bits);
    /// returns how many values it did.
    ///
    /// SAFETY: the CPU must have AVX2; equal lengths.
    #[target_feature(enable = "avx2")]
    pub unsafe fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) -> usize {
        let whole = gate.len() / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        for i in (0..whole).step_by(8) {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let e = exp_f32x8(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))));
        }
        whole
    }

    /// Lane sums of squares (mul then add, as the portable loop).
    ///
    /// SAFETY: the CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn square_lanes(chunks: &mut std::slice::ChunksExact<f32>) -> [f32; 8] {
        let mut acc = _mm256_setzero_ps();
        for c in chunks {
            let v = _mm256_loadu_ps(c.as_ptr());
            acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes
    }

    /// `dst = row · inv · weight` (in that order), the remainder as the portable loop.
    ///
    /// SAFETY: the CPU must have AVX2; equal lengths.
    #[target_feature(enable = "avx2")]
    pub unsafe fn scale_rows(row: &[f32], weight: &[f32], inv: f32, dst: &mut [f32]) {
        let whole = row.len() / 8 * 8;
        let s = _mm256_set1_ps(inv);
        for i in (0..whole).step_by(8) {
            let v = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(i)), s);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_mul_ps(v, _mm256_loadu_ps(weight.as_ptr().add(i))));
        }
        for i in whole..row.len() {
            dst[i] = row[i] * inv * weight[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 20011) as f32 / 1000.0 - 10.0).collect()
    }

    /// The vector code gives the scalar formula's bits (ragged lengths, large |gate|).
    #[test]
    fn swiglu_equals_the_scalar_formula_to_the_bit() {
        for n in [1, 7, 8, 9, 100, 1027] {
            let (g, u) = (values(n, 1), values(n, 2));
            let mut out = vec![0.0; n];
            swiglu(&g, &u, &mut out);
            for i in 0..n {
                assert_eq!(out[i].to_bits(), (g[i] / (1.0 + exp(-g[i])) * u[i]).to_bits(), "{n} {i}");
            }
        }
    }

    /// Against f64, and the same bits whichever path ran (vector rows, a ragged tail).
    #[test]
    fn rms_norm_matches_f64_and_the_portable_order() {
        for n in [5, 8, 128, 1024, 1030] {
            let (x, w) = (values(3 * n, 3), values(n, 4));
            let mut out = vec![0.0; 3 * n];
            rms_norm(&x, &w, 1e-6, &mut out);
            for r in 0..3 {
                let row = &x[r * n..(r + 1) * n];
                let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
                let mut chunks = row.chunks_exact(8);
                let lanes = portable_lanes(&mut chunks);
                let pairs = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
                let portable =
                    chunks.remainder().iter().fold((pairs[0] + pairs[2]) + (pairs[1] + pairs[3]), |s, &v| s + v * v);
                assert_eq!(sum_squares(row).to_bits(), portable.to_bits());
                let inv = 1.0 / (portable / n as f32 + 1e-6).sqrt();
                for c in 0..n {
                    let want = x[r * n + c] as f64 / (ms + 1e-6).sqrt() * w[c] as f64;
                    let got = out[r * n + c];
                    assert!((got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0), "{n} {r} {c}: {got} vs {want}");
                    assert_eq!(got.to_bits(), (x[r * n + c] * inv * w[c]).to_bits());
                }
            }
        }
    }
}
