//! Activations quantized per row (token): asymmetric unsigned with a zero point.

/// Reusable buffers of [`crate::matmul`]: once they have grown to a shape, calls allocate nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    /// `[m][kp]` quantized activations.
    pub(crate) q8: Vec<u8>,
    /// The same widened to u16 (the simd128 kernel's i16 dot operands).
    pub(crate) q16: Vec<u16>,
    pub(crate) scales: Vec<f32>,
    pub(crate) zeros: Vec<i32>,
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
}
