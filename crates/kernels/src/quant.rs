//! Activations quantized per row (token): asymmetric unsigned with a zero point (the wasm
//! kernels), or per row and scale group: symmetric, finer (the x86-64 kernels).

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
    #[cfg(target_arch = "x86_64")]
    if crate::kernel::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { quantize_rows_avx2(x, m, k, kp, levels, wide, s) };
        return;
    }
    quantize_rows_body(x, m, k, kp, levels, wide, false, s);
}

/// The same code compiled for AVX2 (the row range vectorizes), with 32 values at a time
/// quantized by [`x86::quantize_row`] (baseline x86-64 calls libm's `roundf` per value).
///
/// SAFETY: the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_rows_avx2(x: &[f32], m: usize, k: usize, kp: usize, levels: u8, wide: bool, s: &mut Scratch) {
    quantize_rows_body(x, m, k, kp, levels, wide, true, s)
}

/// `vector`: quantize with [`x86::quantize_row`] (only where the CPU has AVX2).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn quantize_rows_body(x: &[f32], m: usize, k: usize, kp: usize, levels: u8, wide: bool, vector: bool, s: &mut Scratch) {
    let _ = vector;
    let top = levels as f32;
    for r in 0..m {
        let row = &x[r * k..(r + 1) * k];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `vector` only where the CPU has AVX2.
        let (lo, hi) = if vector { unsafe { x86::range(row) } } else { range(row) };
        #[cfg(not(target_arch = "x86_64"))]
        let (lo, hi) = range(row);
        let scale = if hi > lo { (hi - lo) / top } else { 1.0 };
        let inv = 1.0 / scale;
        let zero = (-lo * inv).round().clamp(0.0, top);
        s.scales[r] = scale;
        s.zeros[r] = zero as i32;
        let out = &mut s.q8[r * kp..(r + 1) * kp];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `vector` only where the CPU has AVX2.
        let done = if vector { unsafe { x86::quantize_row(row, inv, zero, top, out) } } else { 0 };
        #[cfg(not(target_arch = "x86_64"))]
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

    /// [`super::range`] in four 8-lane accumulators (one chain of `minps` per lane ran at about
    /// a value per cycle). `minps(v, lo)` keeps `lo` for a NaN `v` and for equal zeros, as the
    /// portable comparison does.
    ///
    /// SAFETY: the CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn range(row: &[f32]) -> (f32, f32) {
        let n = row.len() / 32 * 32;
        let mut lo = [_mm256_setzero_ps(); 4];
        let mut hi = [_mm256_setzero_ps(); 4];
        for j in (0..n).step_by(32) {
            for u in 0..4 {
                let v = _mm256_loadu_ps(row.as_ptr().add(j + 8 * u));
                lo[u] = _mm256_min_ps(v, lo[u]);
                hi[u] = _mm256_max_ps(v, hi[u]);
            }
        }
        let (mut l, mut h) = ([0.0f32; 32], [0.0f32; 32]);
        for u in 0..4 {
            _mm256_storeu_ps(l.as_mut_ptr().add(8 * u), lo[u]);
            _mm256_storeu_ps(h.as_mut_ptr().add(8 * u), hi[u]);
        }
        let (l, h) = l.iter().zip(&h).fold((0.0f32, 0.0f32), |(l, h), (&a, &b)| (l.min(a), h.max(b)));
        row[n..].iter().fold((l, h), |(l, h), &v| (l.min(v), h.max(v)))
    }

    /// `out[j] = clamp(round(row[j] · inv + zero), 0, top)` for the longest multiple of 32
    /// values; returns how many. Exactly the portable values: the clamp first (NaN to 0, as
    /// `as u8` gives), then `round` (half away from zero) of a value ≥ 0 as its truncation plus
    /// one where the (exact) fraction is at least one half.
    ///
    /// SAFETY: the CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_row(row: &[f32], inv: f32, zero: f32, top: f32, out: &mut [u8]) -> usize {
        let n = row.len().min(out.len()) / 32 * 32;
        let (inv, zero, top, half, one) =
            (_mm256_set1_ps(inv), _mm256_set1_ps(zero), _mm256_set1_ps(top), _mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
        let quantize = |p: *const f32| {
            // Multiply then add, as the portable `v * inv + zero` (no FMA).
            let q = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(p), inv), zero);
            // `maxps` returns its second operand when either is NaN: NaN becomes 0.
            let q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), top);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(q);
            let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_sub_ps(q, t), half), one);
            _mm256_cvttps_epi32(_mm256_add_ps(t, up))
        };
        for j in (0..n).step_by(32) {
            let p = row.as_ptr().add(j);
            let (a, b, c, d) = (quantize(p), quantize(p.add(8)), quantize(p.add(16)), quantize(p.add(24)));
            // Packing works per 128-bit lane; the permute puts the 32 bytes back in order.
            let bytes = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
            let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(out.as_mut_ptr().add(j) as *mut __m256i, bytes);
        }
        n
    }
}

/// `(min(0, row), max(0, row))`, in 8 lanes so that it vectorizes (min and max give the same
/// result in any order).
#[inline(always)]
fn range(row: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0.0f32; 8], [0.0f32; 8]);
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
        }
    }
    let fold = |(l, h): (f32, f32), &v: &f32| (l.min(v), h.max(v));
    let (l, h) = lo.iter().zip(&hi).fold((0.0f32, 0.0f32), |(l, h), (&a, &b)| (l.min(a), h.max(b)));
    chunks.remainder().iter().fold((l, h), fold)
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

    /// The AVX2 build of the loop gives the portable code's bytes, halves (ties of `round`) and
    /// a NaN included.
    #[test]
    fn the_vectorized_build_quantizes_like_the_portable_one() {
        let (m, k, kp) = (5, 77, 80);
        assert!(k > 64, "the rows must hold whole 32-value blocks for the vector code");
        let mut x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1013) as f32 / 64.0 - 7.0).collect();
        // Row 1 spans 0..=255 (a scale of exactly 1 at 255 levels) in steps of 0.5: odd steps
        // are ties.
        for (c, v) in x[k..2 * k].iter_mut().enumerate() {
            *v = c as f32 * 0.5;
        }
        x[2 * k - 1] = 255.0;
        x[3 * k + 5] = f32::NAN;
        for (levels, wide) in [(255u8, false), (127, true), (254, false)] {
            let (mut a, mut b) = (Scratch::default(), Scratch::default());
            quantize_rows(&x, m, k, kp, levels, wide, &mut a);
            b.q8.resize(m * kp, 0);
            b.scales.resize(m, 0.0);
            b.zeros.resize(m, 0);
            b.q16.resize(if wide { m * kp } else { 0 }, 0);
            quantize_rows_body(&x, m, k, kp, levels, wide, false, &mut b);
            assert_eq!((&a.q8, &a.zeros, &a.q16), (&b.q8, &b.zeros, &b.q16), "levels {levels}");
            assert_eq!(
                a.scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
                b.scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
            );
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
