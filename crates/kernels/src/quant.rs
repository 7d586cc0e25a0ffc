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
/// zeros stay exact.
pub(crate) fn quantize_rows(x: &[f32], m: usize, k: usize, kp: usize, levels: u8, wide: bool, s: &mut Scratch) {
    s.q8.resize(m * kp, 0);
    s.scales.resize(m, 0.0);
    s.zeros.resize(m, 0);
    if wide {
        s.q16.resize(m * kp, 0);
    }
    let top = levels as f32;
    for r in 0..m {
        let row = &x[r * k..(r + 1) * k];
        let (lo, hi) = row.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let scale = if hi > lo { (hi - lo) / top } else { 1.0 };
        let inv = 1.0 / scale;
        let zero = (-lo * inv).round().clamp(0.0, top);
        s.scales[r] = scale;
        s.zeros[r] = zero as i32;
        let out = &mut s.q8[r * kp..(r + 1) * kp];
        for (q, &v) in out.iter_mut().zip(row) {
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
