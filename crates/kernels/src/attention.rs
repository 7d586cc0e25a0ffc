//! Causal attention of the browser engine on plain slices: per (batch row, kv head) and query
//! block, scores by [`crate::f32_gemm`], the masked softmax in place, the weighted values by the
//! same GEMM, each output row divided by its softmax sum at the end; plus the masked softmax row
//! and the vectorized `exp` that the engine's other CPU softmax shares.
//!
//! Why in place and normalized last: the probabilities written over their scores and the sum
//! applied to `head_dim` outputs instead of every key make two passes over a row instead of four
//! (fill, max, exp, normalize into a second buffer); at 2,048 tokens that work, on about a
//! billion scores a pass, was a third of attention. `exp` is written in simd128 because its sum
//! is an ordered float reduction, which the compiler does not vectorize.

use crate::f32_gemm::RowLimits;
use std::ops::Range;

/// Which keys a query may see in a padded batch: per batch row, where its tokens start and how
/// many there are (`spans`), after `past` keys of a shared prefix that every real token sees.
#[derive(Debug, Clone, Copy)]
pub struct CausalMask<'a> {
    pub spans: &'a [(usize, usize)],
    pub past: usize,
}

impl CausalMask<'_> {
    /// The visible keys of query position `q` of batch row `bi`: the prefix and the row's own
    /// tokens up to the query, or `None` for a padding position.
    pub fn visible(&self, bi: usize, q: usize) -> Option<[Range<usize>; 2]> {
        let (s, n) = self.spans[bi];
        (s..s + n).contains(&q).then(|| [0..self.past, self.past + s..self.past + q + 1])
    }

    /// One row of scores into probabilities (`dst[j] = softmax(scale · src)` over the visible
    /// keys, 0 elsewhere; a padding position's row is all 0: its output is never read, and it
    /// stays finite).
    pub fn softmax_row(&self, src: &[f32], dst: &mut [f32], bi: usize, q: usize, scale: f32) {
        dst.fill(0.0);
        let Some(ranges) = self.visible(bi, q) else { return };
        let max = ranges.iter().map(|r| max_of(&src[r.clone()])).fold(f32::NEG_INFINITY, f32::max);
        let shift = max * scale;
        let mut sum = 0.0;
        for r in ranges {
            dst[r.clone()].copy_from_slice(&src[r.clone()]);
            sum += exp_in_place(&mut dst[r], scale, shift);
        }
        let inv = 1.0 / sum;
        dst.iter_mut().for_each(|d| *d *= inv);
    }

    /// [`Self::softmax_row`] in place and left unnormalized: returns `1 / sum` (0 for a padding
    /// position), for the caller to apply to what the row produces.
    fn exp_row_in_place(&self, row: &mut [f32], bi: usize, q: usize, scale: f32) -> f32 {
        let Some([prefix, own]) = self.visible(bi, q) else {
            row.fill(0.0);
            return 0.0;
        };
        row[prefix.end..own.start].fill(0.0);
        row[own.end..].fill(0.0);
        let max = max_of(&row[prefix.clone()]).max(max_of(&row[own.clone()]));
        let shift = max * scale;
        let mut sum = 0.0;
        for r in [prefix, own] {
            sum += exp_in_place(&mut row[r], scale, shift);
        }
        1.0 / sum
    }
}

/// Dimensions of one attention op: `b` batch rows, `kv_heads` key/value heads, `rep` query heads
/// per kv head, `t` new tokens, `hd` values per head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub b: usize,
    pub kv_heads: usize,
    pub rep: usize,
    pub t: usize,
    pub hd: usize,
}

/// Reused buffers of [`causal_attention`] (one allocation per op, not per block).
#[derive(Default)]
pub struct AttentionScratch {
    kt: Vec<f32>,
    queries: Vec<f32>,
    scores: Vec<f32>,
    inv_sums: Vec<f32>,
    outputs: Vec<f32>,
    /// Per stacked query row: the keys it sees end here (0 for padding).
    ends: Vec<usize>,
}

/// Causal attention: `q` (b, kv_heads, rep, t, hd), `k` and `v` (b, kv_heads, past + t, hd), all
/// contiguous; `out` has `q`'s shape. Queries go in blocks of `block` rows per head, each against
/// only the keys its block can see; `scale` multiplies every score.
///
/// Panics if a slice's length does not match `shape` (callers check shapes first).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    mask: CausalMask,
    block: usize,
    scale: f32,
    scratch: &mut AttentionScratch,
) {
    let AttentionShape { b, kv_heads, rep, t, hd } = shape;
    let keys = mask.past + t;
    assert_eq!(mask.spans.len(), b, "attention: one span per batch row");
    assert_eq!(q.len(), b * kv_heads * rep * t * hd, "attention: queries");
    assert_eq!(out.len(), q.len(), "attention: output");
    assert!(k.len() == b * kv_heads * keys * hd && v.len() == k.len(), "attention: keys/values");
    for bg in 0..b * kv_heads {
        let group = |per: usize| bg * per..(bg + 1) * per;
        let (qg, kg) = (group(rep * t * hd), group(keys * hd));
        attend_group(
            bg / kv_heads,
            &q[qg.clone()],
            &k[kg.clone()],
            &v[kg],
            &mut out[qg],
            shape,
            mask,
            block,
            scale,
            scratch,
        );
    }
}

/// One (batch row `bi`, kv head) group of [`causal_attention`]: queries `qh` and output `oh`
/// (rep, t, hd), keys `kh` and values `vh` (past + t, hd). Groups are independent, so a caller
/// may run them on separate threads, each with its own scratch.
///
/// Panics if a slice's length does not match `shape`.
#[allow(clippy::too_many_arguments)]
pub fn attend_group(
    bi: usize,
    qh: &[f32],
    kh: &[f32],
    vh: &[f32],
    oh: &mut [f32],
    shape: AttentionShape,
    mask: CausalMask,
    block: usize,
    scale: f32,
    scratch: &mut AttentionScratch,
) {
    let AttentionShape { rep, t, hd, .. } = shape;
    let keys = mask.past + t;
    assert!(qh.len() == rep * t * hd && oh.len() == qh.len(), "attention: a group's queries/output");
    assert!(kh.len() == keys * hd && vh.len() == kh.len(), "attention: a group's keys/values");
    let block = block.max(1);
    let AttentionScratch { kt, queries, scores, inv_sums, outputs, ends } = scratch;
    kt.resize(hd * keys, 0.0);
    // Kᵀ (hd × keys): the scores' B operand, rows of keys.
    for (j, key) in kh.chunks_exact(hd).enumerate() {
        for (d, &x) in key.iter().enumerate() {
            kt[d * keys + j] = x;
        }
    }
    for start in (0..t).step_by(block) {
        let len = block.min(t - start);
        let (rows, seen) = (rep * len, mask.past + start + len);
        // The group's `rep` heads stacked: row r·len + i is head r, query start + i.
        queries.clear();
        for r in 0..rep {
            queries.extend_from_slice(&qh[(r * t + start) * hd..(r * t + start + len) * hd]);
        }
        scores.resize(rows * seen, 0.0);
        outputs.resize(rows * hd, 0.0);
        // A query's scores past its own position are never read (the softmax writes 0 there),
        // and those zeros add nothing to its weighted values: both products stop at its end.
        ends.clear();
        ends.extend((0..rows).map(|row| mask.visible(bi, start + row % len).map_or(0, |[_, own]| own.end)));
        crate::f32_gemm::gemm_limited(queries, hd, kt, keys, scores, rows, seen, hd, RowLimits::Columns(ends));
        inv_sums.clear();
        for (row, s) in scores.chunks_exact_mut(seen).enumerate() {
            inv_sums.push(mask.exp_row_in_place(s, bi, start + row % len, scale));
        }
        crate::f32_gemm::gemm_limited(scores, seen, vh, hd, outputs, rows, hd, seen, RowLimits::Depth(ends));
        for r in 0..rep {
            let dst = &mut oh[(r * t + start) * hd..(r * t + start + len) * hd];
            for (i, (d, o)) in dst.chunks_exact_mut(hd).zip(outputs[r * len * hd..].chunks_exact(hd)).enumerate() {
                let inv = inv_sums[r * len + i];
                d.iter_mut().zip(o).for_each(|(d, &o)| *d = o * inv);
            }
        }
    }
}

/// The largest value (NEG_INFINITY for none). A NaN score wins in the wasm build and may not
/// in the portable one; either way it shows in the row's output through `exp`.
fn max_of(x: &[f32]) -> f32 {
    let mut chunks = x.chunks_exact(4);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let lanes: [f32; 4] = {
        use core::arch::wasm32::*;
        let mut m = f32x4_splat(f32::NEG_INFINITY);
        for c in &mut chunks {
            // SAFETY: a chunk is 4 floats; unaligned v128 loads are allowed in wasm.
            m = f32x4_max(m, unsafe { v128_load(c.as_ptr() as *const v128) });
        }
        [f32x4_extract_lane::<0>(m), f32x4_extract_lane::<1>(m), f32x4_extract_lane::<2>(m), f32x4_extract_lane::<3>(m)]
    };
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let lanes: [f32; 4] = {
        let mut m = [f32::NEG_INFINITY; 4];
        for c in &mut chunks {
            m.iter_mut().zip(c).for_each(|(m, &v)| *m = m.max(v));
        }
        m
    };
    chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// `x[j] = exp(scale · x[j] − shift)`; returns their sum, kept in four lanes then added up, in
/// the same order in every build.
fn exp_in_place(x: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut chunks = x.chunks_exact_mut(4);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let lanes: [f32; 4] = {
        use core::arch::wasm32::*;
        let (sc, sh) = (f32x4_splat(scale), f32x4_splat(shift));
        let mut acc = f32x4_splat(0.0);
        for c in &mut chunks {
            let p = c.as_mut_ptr() as *mut v128;
            // SAFETY: a chunk is 4 floats; unaligned v128 access is allowed in wasm.
            unsafe {
                let e = exp_f32x4(f32x4_sub(f32x4_mul(v128_load(p), sc), sh));
                v128_store(p, e);
                acc = f32x4_add(acc, e);
            }
        }
        [
            f32x4_extract_lane::<0>(acc),
            f32x4_extract_lane::<1>(acc),
            f32x4_extract_lane::<2>(acc),
            f32x4_extract_lane::<3>(acc),
        ]
    };
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let lanes: [f32; 4] = {
        let mut acc = [0.0f32; 4];
        #[cfg(target_arch = "x86_64")]
        if crate::kernel::has_avx2() {
            // SAFETY: the CPU has AVX2.
            unsafe { x86::exp_chunk_pairs(&mut chunks, scale, shift, &mut acc) };
        }
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *v = exp(*v * scale - shift);
                *a += *v;
            }
        }
        acc
    };
    let mut sum = ((lanes[0] + lanes[1]) + lanes[2]) + lanes[3];
    for v in chunks.into_remainder() {
        *v = exp(*v * scale - shift);
        sum += *v;
    }
    sum
}

// Constants of `exp`: ln 2 in two parts (Cody-Waite; the high part has trailing zero bits, so
// n · LN2_HI is exact for the |n| ≤ 127 used here), and 1.5 · 2^23, whose addition and
// subtraction round to the nearest integer.
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const ROUND: f32 = 12_582_912.0;
/// Taylor coefficients to degree 6 on |r| ≤ ln2/2: the remainder is below 2e-7 relative.
const TAYLOR: [f32; 7] = [1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0];

/// e^x within 3e-7 relative of `f32::exp` on [-87, 88] (2e-6 up to 88.72, where the exponent
/// clamp stretches the reduced range); 0 below, +inf above; NaN stays NaN (a broken score must
/// not turn into a quiet 0). Branch-free, so that loops over it vectorize.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let n = ((x * LOG2E + ROUND) - ROUND).clamp(-126.0, 127.0);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = TAYLOR.iter().rev().fold(0.0, |p, &c| p * r + c);
    let e = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    let e = if x < -87.0 { 0.0 } else { e };
    if x > 88.72 {
        f32::INFINITY
    } else {
        e
    }
}

/// [`exp`] on four lanes, the same operations in the same order.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn exp_f32x4(x: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    let s = f32x4_splat;
    let n = f32x4_sub(f32x4_add(f32x4_mul(x, s(LOG2E)), s(ROUND)), s(ROUND));
    // clamp: NaN passes through both (f32::clamp keeps NaN too).
    let n = f32x4_pmax(f32x4_pmin(n, s(127.0)), s(-126.0));
    let r = f32x4_sub(f32x4_sub(x, f32x4_mul(n, s(LN2_HI))), f32x4_mul(n, s(LN2_LO)));
    let p = TAYLOR.iter().rev().fold(s(0.0), |p, &c| f32x4_add(f32x4_mul(p, r), s(c)));
    let bits = i32x4_shl(i32x4_add(i32x4_trunc_sat_f32x4(n), i32x4_splat(127)), 23);
    let e = f32x4_mul(p, bits);
    let e = v128_bitselect(s(0.0), e, f32x4_lt(x, s(-87.0)));
    v128_bitselect(s(f32::INFINITY), e, f32x4_gt(x, s(88.72)))
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::exp_f32x8;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{LN2_HI, LN2_LO, LOG2E, ROUND, TAYLOR};
    use std::arch::x86_64::*;

    /// [`super::exp`] on eight lanes, the same operations in the same order (mul then add, no
    /// FMA), so every value has the same bits as the portable and wasm code's.
    #[target_feature(enable = "avx2")]
    pub(crate) fn exp_f32x8(x: __m256) -> __m256 {
        let s = _mm256_set1_ps;
        let n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, s(LOG2E)), s(ROUND)), s(ROUND));
        // clamp: `minps`/`maxps` return their second operand when either is NaN, so NaN passes.
        let n = _mm256_max_ps(s(-126.0), _mm256_min_ps(s(127.0), n));
        let r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, s(LN2_HI))), _mm256_mul_ps(n, s(LN2_LO)));
        let p = TAYLOR.iter().rev().fold(s(0.0), |p, &c| _mm256_add_ps(_mm256_mul_ps(p, r), s(c)));
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)));
        let e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
        let e = _mm256_blendv_ps(e, s(0.0), _mm256_cmp_ps::<_CMP_LT_OQ>(x, s(-87.0)));
        _mm256_blendv_ps(e, s(f32::INFINITY), _mm256_cmp_ps::<_CMP_GT_OQ>(x, s(88.72)))
    }

    /// Two 4-value chunks at a time through [`exp_f32x8`], each added to the 4-lane sums in
    /// turn, as the portable loop adds them; leaves an odd last chunk to it.
    ///
    /// SAFETY: the CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn exp_chunk_pairs(
        chunks: &mut std::slice::ChunksExactMut<f32>,
        scale: f32,
        shift: f32,
        acc: &mut [f32; 4],
    ) {
        let (sc, sh) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
        let mut sum = _mm_loadu_ps(acc.as_ptr());
        for _ in 0..chunks.len() / 2 {
            let (a, b) = (chunks.next().unwrap(), chunks.next().unwrap());
            // SAFETY: each chunk is 4 floats.
            let x = _mm256_loadu2_m128(b.as_ptr(), a.as_ptr());
            let e = exp_f32x8(_mm256_sub_ps(_mm256_mul_ps(x, sc), sh));
            _mm256_storeu2_m128(b.as_mut_ptr(), a.as_mut_ptr(), e);
            sum = _mm_add_ps(sum, _mm256_castps256_ps128(e));
            sum = _mm_add_ps(sum, _mm256_extractf128_ps::<1>(e));
        }
        _mm_storeu_ps(acc.as_mut_ptr(), sum);
    }
}

/// The reference check of this build's attention (the browser tests run it inside both worker
/// builds, `cargo test` natively): a padded batch of two rows (one left-padded), a shared prefix,
/// a block that does not divide the length, scores of a few units so that a wrong scale or mask
/// shows, against attention written out per query in f64. Returns the worst absolute error.
pub fn check(seed: u64) -> Result<f32, String> {
    let shape = AttentionShape { b: 2, kv_heads: 2, rep: 3, t: 19, hd: 12 };
    let AttentionShape { b, kv_heads, rep, t, hd } = shape;
    let past = 5;
    let keys = past + t;
    let spans = [(0, 19), (6, 13)];
    let mut s = seed;
    let mut values = |n: usize, amp: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5) * amp
            })
            .collect()
    };
    let (q, k, v) = (
        values(b * kv_heads * rep * t * hd, 8.0),
        values(b * kv_heads * keys * hd, 8.0),
        values(b * kv_heads * keys * hd, 1.0),
    );
    let scale = 1.0 / (hd as f32).sqrt();
    let mask = CausalMask { spans: &spans, past };
    let mut got = vec![f32::NAN; q.len()];
    causal_attention(&q, &k, &v, &mut got, shape, mask, 4, scale, &mut AttentionScratch::default());
    let mut worst = 0.0f32;
    for (bi, &(s, n)) in spans.iter().enumerate() {
        for g in 0..kv_heads {
            let key = |j: usize| &k[((bi * kv_heads + g) * keys + j) * hd..][..hd];
            let value = |j: usize| &v[((bi * kv_heads + g) * keys + j) * hd..][..hd];
            for r in 0..rep {
                for i in s..s + n {
                    let qrow = &q[(((bi * kv_heads + g) * rep + r) * t + i) * hd..][..hd];
                    let seen: Vec<usize> = (0..past).chain(past + s..=past + i).collect();
                    let sc: Vec<f64> = seen
                        .iter()
                        .map(|&j| {
                            qrow.iter().zip(key(j)).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale as f64
                        })
                        .collect();
                    let max = sc.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
                    let e: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = seen.iter().zip(&e).map(|(&j, w)| w / sum * value(j)[d] as f64).sum();
                        let at = (((bi * kv_heads + g) * rep + r) * t + i) * hd + d;
                        let err = (got[at] as f64 - want).abs() as f32;
                        // NaN fails too.
                        if err.is_nan() || err > 1e-5 {
                            return Err(format!("attention [{bi},{g},{r},{i},{d}]: {} vs {want}", got[at]));
                        }
                        worst = worst.max(err);
                    }
                }
            }
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_matches_a_per_query_reference() {
        for seed in 1..4 {
            check(seed).unwrap();
        }
    }

    /// Every block size gives the same output to the bit: each score and each weighted sum is
    /// computed in the same order wherever its block starts.
    #[test]
    fn block_size_does_not_change_the_output() {
        let shape = AttentionShape { b: 1, kv_heads: 1, rep: 2, t: 23, hd: 8 };
        let n = shape.rep * shape.t * shape.hd;
        let q: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 300.0) - 1.5).collect();
        let kv: Vec<f32> = (0..shape.t * shape.hd).map(|i| ((i * 104729 % 1000) as f32 / 300.0) - 1.5).collect();
        let run = |block| {
            let mut out = vec![0.0; n];
            let mask = CausalMask { spans: &[(0, 23)], past: 0 };
            causal_attention(&q, &kv, &kv, &mut out, shape, mask, block, 0.3, &mut AttentionScratch::default());
            out
        };
        let one = run(1);
        for block in [4, 7, 23, 64] {
            assert_eq!(run(block), one, "block {block}");
        }
    }

    #[test]
    fn exp_matches_std_over_the_range_it_serves() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max((got - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    /// The vectorized rows (simd128, AVX2) compute every value and the 4-lane sum exactly as
    /// scalar `exp` in lane order would: the same bits on every CPU and in the browser.
    #[test]
    fn exp_in_place_equals_scalar_exp_in_lane_order_to_the_bit() {
        let special = [f32::NAN, -100.0, 100.0, 88.8, -87.5, 0.0];
        // Odd lengths carry the special values (and so a NaN sum), even ones only finite values.
        for len in [0, 3, 4, 8, 13, 37, 64, 70] {
            let value = |i: usize| ((i * 7919) % 997) as f32 / 31.0 - 16.0;
            let src: Vec<f32> = (0..len)
                .map(|i| if len % 2 == 1 { special.get(i % 11).copied().unwrap_or(value(i)) } else { value(i) })
                .collect();
            let (scale, shift) = (0.9, 1.5);
            let mut got = src.clone();
            let sum = exp_in_place(&mut got, scale, shift);
            let want: Vec<f32> = src.iter().map(|&x| exp(x * scale - shift)).collect();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "len {len} [{i}]: {g} vs {w}");
            }
            let mut lanes = [0.0f32; 4];
            for c in want.chunks_exact(4) {
                lanes.iter_mut().zip(c).for_each(|(l, &v)| *l += v);
            }
            let mut want_sum = ((lanes[0] + lanes[1]) + lanes[2]) + lanes[3];
            want.chunks_exact(4).remainder().iter().for_each(|v| want_sum += v);
            assert!(
                sum.to_bits() == want_sum.to_bits() || (sum.is_nan() && want_sum.is_nan()),
                "len {len}: {sum} vs {want_sum}"
            );
        }
    }

    #[test]
    fn softmax_row_is_zero_outside_the_visible_keys_and_sums_to_one() {
        let spans = [(2, 5)];
        let mask = CausalMask { spans: &spans, past: 3 };
        let src: Vec<f32> = (0..10).map(|i| i as f32 * 0.7 - 2.0).collect();
        let mut dst = vec![f32::NAN; 10];
        mask.softmax_row(&src, &mut dst, 0, 4, 0.5);
        // Visible: prefix 0..3, own tokens 3+2 ..= 3+4.
        for (j, &p) in dst.iter().enumerate() {
            assert_eq!(p > 0.0, j < 3 || (5..=7).contains(&j), "key {j}: {p}");
        }
        assert!((dst.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        mask.softmax_row(&src, &mut dst, 0, 1, 0.5);
        assert!(dst.iter().all(|&p| p == 0.0), "a padding position's row is all 0");
    }
}
