//! Activations quantized per row (token): asymmetric unsigned with a zero point (the wasm
//! kernels), or per row and scale group: symmetric, finer (the x86-64 kernels).

use crate::aligned::Aligned;

/// Reusable buffers of [`crate::matmul`]: once they have grown to a shape, calls allocate nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    /// `[m][kp]` quantized activations.
    pub(crate) q8: Vec<u8>,
    /// The same widened to u16 (the simd128 kernel's i16 dot operands).
    pub(crate) q16: Vec<u16>,
    pub(crate) scales: Vec<f32>,
    pub(crate) zeros: Vec<i32>,
    /// `[m][groups]`: per row and group scales of [`quantize_groups`].
    pub(crate) group_scales: Vec<f32>,
    /// `q8` regrouped for AMX (x86-64): `[16-row tile][K chunk][16 rows][chunk bytes]`, so
    /// each activation tile is one contiguous run of memory.
    #[cfg_attr(not(all(target_arch = "x86_64", target_os = "linux")), allow(dead_code))]
    pub(crate) tiles: Aligned<u8>,
    /// Activations rounded to bf16 for `Kernel::X86AmxBf16`, in 16-row tiles (`bf16::prepare`).
    pub(crate) bf16: Aligned<u16>,
}

/// Quantizes each row of `x` (`[m, k]`) per group of `group` values, symmetrically:
/// `q = round(x / s)` in −127..=127 with `s = max|x| / 127` of the group, stored as `q + 128`
/// (`offset`, VNNI's unsigned operand) or as the byte of `q` (signed). The padding past `k` is
/// `q = 0`. One scale per group of 32 follows the hidden states' outliers as closely as Q8_0's
/// own activation blocks; one per row let an outlier coarsen the whole row.
pub(crate) fn quantize_groups(x: &[f32], m: usize, k: usize, kp: usize, group: usize, offset: bool, s: &mut Scratch) {
    let groups = kp / group;
    s.q8.resize(m * kp, 0);
    s.group_scales.resize(m * groups, 0.0);
    #[cfg(target_arch = "x86_64")]
    let vector = crate::kernel::has_avx2();
    #[cfg(not(target_arch = "x86_64"))]
    let vector = false;
    for r in 0..m {
        let row = &x[r * k..(r + 1) * k];
        for g in 0..groups {
            let (a, b) = ((g * group).min(k), ((g + 1) * group).min(k));
            let out = &mut s.q8[r * kp + g * group..r * kp + (g + 1) * group];
            let scale = &mut s.group_scales[r * groups + g];
            #[cfg(target_arch = "x86_64")]
            if vector && b - a == group && group.is_multiple_of(8) {
                // SAFETY: the CPU has AVX2; whole 8-value chunks.
                *scale = unsafe { x86::quantize_group(&row[a..b], offset, out) };
                continue;
            }
            let _ = vector;
            *scale = quantize_group(&row[a..b], offset, out);
        }
    }
}

/// One group of [`quantize_groups`]: `values` into `out` (the rest of `out` is padding);
/// returns the scale.
fn quantize_group(values: &[f32], offset: bool, out: &mut [u8]) -> f32 {
    let bias: i32 = if offset { 128 } else { 0 };
    let max = values.iter().fold(0.0f32, |m, &v| if v.abs() > m { v.abs() } else { m });
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    for (q, &v) in out.iter_mut().zip(values) {
        *q = ((v * inv).round().clamp(-127.0, 127.0) as i32 + bias) as u8;
    }
    for q in &mut out[values.len()..] {
        *q = bias as u8;
    }
    scale
}

/// Quantizes each of the `m` rows of `x` (`[m, k]`) to `0..=levels` into `s` (rows of `kp`
/// values, the padding at the zero point so it adds nothing). The range always holds 0, so
/// zeros stay exact. wasm simd128 builds run 16 values a step with the scalar code's bytes
/// (`f32::round` is a `roundf` call per value in wasm: about 10% of a 512-token pass's matmul
/// time went to it).
pub(crate) fn quantize_rows(x: &[f32], m: usize, k: usize, kp: usize, levels: u8, wide: bool, s: &mut Scratch) {
    quantize_rows_with(x, m, k, kp, levels, wide, s, true)
}

/// [`quantize_rows`] with (`vector`) or without the wasm simd128 path.
#[allow(clippy::too_many_arguments)]
fn quantize_rows_with(x: &[f32], m: usize, k: usize, kp: usize, levels: u8, wide: bool, s: &mut Scratch, vector: bool) {
    s.q8.resize(m * kp, 0);
    s.scales.resize(m, 0.0);
    s.zeros.resize(m, 0);
    if wide {
        s.q16.resize(m * kp, 0);
    }
    let top = levels as f32;
    for r in 0..m {
        let row = &x[r * k..(r + 1) * k];
        let (lo, hi) = row_range(row, vector);
        let scale = if hi > lo { (hi - lo) / top } else { 1.0 };
        let inv = 1.0 / scale;
        let zero = (-lo * inv).round().clamp(0.0, top);
        s.scales[r] = scale;
        s.zeros[r] = zero as i32;
        let out = &mut s.q8[r * kp..(r + 1) * kp];
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        let done = if vector { wasm::quantize(row, inv, zero, top, out) } else { 0 };
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        let done = 0;
        for (q, &v) in out[done..].iter_mut().zip(&row[done..]) {
            *q = (v * inv + zero).round().clamp(0.0, top) as u8;
        }
        for q in &mut out[k..] {
            *q = zero as u8;
        }
        if wide {
            for (w, &q) in s.q16[r * kp..(r + 1) * kp].iter_mut().zip(out.iter()) {
                *w = q as u16;
            }
        }
    }
}

/// Quantizes `x` (`[m, k]`) per row as the relaxed-simd kernel does, with or without the wasm
/// vector path, for the kernel bench (`tests/bench/kernels`) to time each; returns a checksum.
#[doc(hidden)]
pub fn quantize_rows_for_bench(x: &[f32], m: usize, k: usize, vector: bool, s: &mut Scratch) -> u32 {
    quantize_rows_with(x, m, k, k.next_multiple_of(4), 127, false, s, vector);
    s.q8.iter().map(|&q| q as u32).sum()
}

/// (min, max) of a row and 0, NaN ignored.
fn row_range(row: &[f32], vector: bool) -> (f32, f32) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if vector {
        return wasm::range(row);
    }
    let _ = vector;
    row.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// The wasm vector path gives the scalar path's bytes and scales: ties at one half, NaN, an
/// infinity, a constant row, a ragged tail (run by [`crate::self_test`] in each worker build).
pub(crate) fn check_row_quantizer() -> Result<(), String> {
    let (m, k, kp) = (4, 45, 48);
    let mut x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1013) as f32 / 64.0 - 7.0).collect();
    // Row 0 spans exactly 0..=127 (a scale of 1 at 127 levels) in steps of one half: a tie at
    // every odd column, both in the vector chunks and in the scalar tail.
    for (c, v) in x[..k].iter_mut().enumerate() {
        *v = c as f32 * 0.5;
    }
    x[k - 1] = 127.0;
    x[k + 3] = f32::NAN;
    x[k + 20] = f32::NAN;
    x[2 * k..3 * k].fill(2.5);
    x[3 * k + 7] = f32::INFINITY;
    for (levels, wide) in [(127u8, false), (255, true)] {
        let (mut a, mut b) = (Scratch::default(), Scratch::default());
        quantize_rows_with(&x, m, k, kp, levels, wide, &mut a, true);
        quantize_rows_with(&x, m, k, kp, levels, wide, &mut b, false);
        let bits = |s: &Scratch| s.scales.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        if a.q8 != b.q8 || a.q16 != b.q16 || a.zeros != b.zeros || bits(&a) != bits(&b) {
            return Err(format!("row quantizer ({levels} levels): vector {:?} != scalar {:?}", a.q8, b.q8));
        }
    }
    Ok(())
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use core::arch::wasm32::*;

    /// `row_range`'s fold, 4 lanes (min and max are exact, so the order does not matter).
    pub fn range(row: &[f32]) -> (f32, f32) {
        let (mut lo, mut hi) = (f32x4_splat(0.0), f32x4_splat(0.0));
        let mut chunks = row.chunks_exact(4);
        for c in &mut chunks {
            // SAFETY: 4 f32, an unaligned v128 load.
            let v = unsafe { v128_load(c.as_ptr() as *const v128) };
            // `pmin(lo, v)` is `v < lo ? v : lo`: a NaN `v` keeps `lo`, as `f32::min` does.
            lo = f32x4_pmin(lo, v);
            hi = f32x4_pmax(hi, v);
        }
        let lanes = |v: v128| {
            [
                f32x4_extract_lane::<0>(v),
                f32x4_extract_lane::<1>(v),
                f32x4_extract_lane::<2>(v),
                f32x4_extract_lane::<3>(v),
            ]
        };
        let lo = lanes(lo).into_iter().chain(chunks.remainder().iter().copied()).fold(0.0f32, f32::min);
        let hi = lanes(hi).into_iter().chain(chunks.remainder().iter().copied()).fold(0.0f32, f32::max);
        (lo, hi)
    }

    /// `round(clamp(v · inv + zero, 0, top))` for whole 16-value chunks of `row` into `out`:
    /// the scalar code's bytes (after the clamp the value is ≥ 0 or NaN, so rounding half away
    /// from zero is the truncation plus one where the exact fraction reaches one half; NaN
    /// converts to 0 as `as u8` does). Returns the values done.
    pub fn quantize(row: &[f32], inv: f32, zero: f32, top: f32, out: &mut [u8]) -> usize {
        let (inv, zero, top) = (f32x4_splat(inv), f32x4_splat(zero), f32x4_splat(top));
        let (half, one, nought) = (f32x4_splat(0.5), f32x4_splat(1.0), f32x4_splat(0.0));
        let n = row.len() / 16 * 16;
        assert!(out.len() >= n);
        for c in (0..n).step_by(16) {
            let q: [v128; 4] = std::array::from_fn(|j| {
                // SAFETY: `c + 16 <= n <= row.len()`; unaligned loads.
                let v = unsafe { v128_load(row.as_ptr().add(c + 4 * j) as *const v128) };
                // `pmax(t, 0)` is `t < 0 ? 0 : t` and `pmin(t, top)` `top < t ? top : t`: NaN stays NaN.
                let t = f32x4_pmin(f32x4_pmax(f32x4_add(f32x4_mul(v, inv), zero), nought), top);
                let whole = f32x4_trunc(t);
                let up = v128_and(f32x4_ge(f32x4_sub(t, whole), half), one);
                i32x4_trunc_sat_f32x4(f32x4_add(whole, up))
            });
            let bytes = u8x16_narrow_i16x8(i16x8_narrow_i32x4(q[0], q[1]), i16x8_narrow_i32x4(q[2], q[3]));
            // SAFETY: `c + 16 <= out.len()`.
            unsafe { v128_store(out.as_mut_ptr().add(c) as *mut v128, bytes) };
        }
        n
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::quantize_group`] on whole 8-value chunks, the same bytes and scale: max |v|
    /// ignoring NaN (`maxps` keeps its second operand), `round` half away from zero as the
    /// truncation plus the sign where the (exact) fraction reaches one half, NaN to 0.
    ///
    /// SAFETY: the CPU must have AVX2; `values.len()` a multiple of 8, `out` as long.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_group(values: &[f32], offset: bool, out: &mut [u8]) -> f32 {
        assert!(values.len().is_multiple_of(8) && out.len() >= values.len());
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        let mut max = _mm256_setzero_ps();
        for c in values.chunks_exact(8) {
            max = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(c.as_ptr()), abs_mask), max);
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), max);
        let max = lanes.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let inv = _mm256_set1_ps(1.0 / scale);
        let (half, one, top) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0), _mm256_set1_ps(127.0));
        let sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
        let bias = _mm256_set1_epi32(if offset { 128 } else { 0 });
        for (j, c) in values.chunks_exact(8).enumerate() {
            let q = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), inv);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(q);
            let frac = _mm256_and_ps(_mm256_sub_ps(q, t), abs_mask);
            let up =
                _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), _mm256_or_ps(one, _mm256_and_ps(q, sign_mask)));
            let r = _mm256_add_ps(t, up);
            // NaN to 0, then the clamp (no NaN left for `minps`/`maxps` to pass on).
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
            let r = _mm256_max_ps(_mm256_min_ps(r, top), _mm256_sub_ps(_mm256_setzero_ps(), top));
            let v = _mm256_add_epi32(_mm256_cvttps_epi32(r), bias);
            // 8 i32 in 0..=255 (or −127..=127 as bytes) to 8 bytes.
            let packed = _mm256_packs_epi32(v, v);
            let packed = _mm256_permute4x64_epi64::<0b1000>(packed);
            let bytes = if offset {
                _mm_packus_epi16(_mm256_castsi256_si128(packed), _mm256_castsi256_si128(packed))
            } else {
                _mm_packs_epi16(_mm256_castsi256_si128(packed), _mm256_castsi256_si128(packed))
            };
            _mm_storel_epi64(out.as_mut_ptr().add(8 * j) as *mut __m128i, bytes);
        }
        scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_within_half_a_step() {
        let x = [-1.0, 0.0, 0.5, 3.0, 0.0, 0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 8.0];
        let mut s = Scratch::default();
        for levels in [255u8, 127] {
            quantize_rows(&x, 3, 4, 8, levels, true, &mut s);
            for r in 0..3 {
                for c in 0..4 {
                    let back = (s.q8[r * 8 + c] as i32 - s.zeros[r]) as f32 * s.scales[r];
                    assert!((back - x[r * 4 + c]).abs() <= s.scales[r] / 2.0 + 1e-6, "{levels} {r} {c}: {back}");
                    assert!(s.q8[r * 8 + c] <= levels);
                }
                // Padding sits at the zero point; zero is exact.
                assert!(s.q8[r * 8 + 4..r * 8 + 8].iter().all(|&q| q as i32 == s.zeros[r]));
            }
            assert_eq!((s.q8[8 + 1] as i32 - s.zeros[1]) as f32 * s.scales[1], 0.0);
            assert_eq!(s.q16[3], s.q8[3] as u16);
        }
    }

    /// The AVX2 group quantizer gives the portable bytes and scales: ties, NaN, an infinity,
    /// an all-zero group, both storages.
    #[test]
    fn groups_quantize_alike_in_every_build() {
        let (m, k, kp, group) = (3, 96, 96, 32);
        let mut x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1013) as f32 / 64.0 - 7.0).collect();
        // Group 0 of row 0: max 127 (a scale of exactly 1), halves in between: ties.
        for (c, v) in x[..32].iter_mut().enumerate() {
            *v = (c as f32 - 16.0) * 0.5;
        }
        x[31] = 127.0;
        x[40] = f32::NAN;
        x[k + 5] = f32::INFINITY;
        x[2 * k + 32..2 * k + 64].fill(0.0);
        for offset in [true, false] {
            let mut a = Scratch::default();
            quantize_groups(&x, m, k, kp, group, offset, &mut a);
            let (mut q, mut scales) = (vec![0u8; m * kp], vec![0.0f32; m * kp / group]);
            for r in 0..m {
                for g in 0..kp / group {
                    let out = &mut q[r * kp + g * group..r * kp + (g + 1) * group];
                    scales[r * kp / group + g] =
                        quantize_group(&x[r * k + g * group..r * k + (g + 1) * group], offset, out);
                }
            }
            assert_eq!(a.q8, q, "offset {offset}");
            assert_eq!(
                a.group_scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
            );
            let q1 = if offset { a.q8[1] as i32 - 128 } else { a.q8[1] as i8 as i32 };
            assert_eq!(q1, -8, "−7.5 rounds away from zero");
        }
    }
}
