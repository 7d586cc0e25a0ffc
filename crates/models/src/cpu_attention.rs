//! Attention on the CPU as one op per layer for the browser engine: per (batch row, kv head) and
//! query block, scores by `rewardlens_kernels::f32_gemm`, the masked softmax of [`crate::fused`],
//! and the weighted values by the same GEMM.
//!
//! Why: in wasm, Candle's f32 matmul ran attention's small, oddly shaped products (the `rep`
//! query heads of a group times 128 queries, against up to t keys) at about 7 GMAC/s, and the
//! blocks around them cost copies and allocations per block; at 512 tokens attention was 16% of
//! a q8_0 pass, and it grows with the square of the length.
//!
//! Natively Candle's matmul (the `gemm` crate, AVX/FMA, threads) stays faster, so this op is
//! the default only on wasm32; the native tests run it against Candle's path.

use crate::fused::MaskedSoftmax;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rewardlens_kernels::f32_gemm::gemm;

/// Causal attention of a padded batch: `q` (b, kv_heads, rep, t, hd), `k` and `v`
/// (b, kv_heads, past + t, hd), all contiguous f32; the output has `q`'s shape. Queries go in
/// blocks of `block`, each against only the keys it can see.
pub(crate) struct CpuAttention<'a> {
    /// Per batch row: where its tokens start in the padded batch and how many there are.
    pub spans: &'a [(usize, usize)],
    /// Keys of a shared prefix before the batch's own, visible to every real token.
    pub past: usize,
    pub block: usize,
    pub scale: f32,
}

impl CustomOp3 for CpuAttention<'_> {
    fn name(&self) -> &'static str {
        "cpu-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) = (q, k, v) else {
            candle_core::bail!("cpu attention takes f32")
        };
        let (q, k, v) = (contiguous(q, ql, "queries")?, contiguous(k, kl, "keys")?, contiguous(v, vl, "values")?);
        let &[b, nkv, rep, t, hd] = ql.shape().dims() else {
            candle_core::bail!("cpu attention: queries {:?}, want (b, kv_heads, rep, t, hd)", ql.shape())
        };
        let keys = self.past + t;
        if kl.shape().dims() != [b, nkv, keys, hd] || vl.shape() != kl.shape() || b != self.spans.len() {
            candle_core::bail!(
                "cpu attention: keys {:?} / values {:?} do not match queries {:?} after {} prefix keys",
                kl.shape(),
                vl.shape(),
                ql.shape(),
                self.past
            )
        }
        let block = self.block.max(1);
        let mut out = vec![0f32; q.len()];
        let mut kt = vec![0f32; hd * keys];
        let (mut qa, mut scores, mut probs, mut ob) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for bg in 0..b * nkv {
            let bi = bg / nkv;
            let (kh, vh) = (&k[bg * keys * hd..(bg + 1) * keys * hd], &v[bg * keys * hd..(bg + 1) * keys * hd]);
            // Kᵀ (hd × keys): the scores' B operand, rows of keys.
            for (j, key) in kh.chunks_exact(hd).enumerate() {
                for (d, &x) in key.iter().enumerate() {
                    kt[d * keys + j] = x;
                }
            }
            let qh = &q[bg * rep * t * hd..(bg + 1) * rep * t * hd];
            for start in (0..t).step_by(block) {
                let len = block.min(t - start);
                let (rows, seen) = (rep * len, self.past + start + len);
                // The group's `rep` heads stacked: row r·len + i is head r, query start + i.
                qa.clear();
                for r in 0..rep {
                    qa.extend_from_slice(&qh[(r * t + start) * hd..(r * t + start + len) * hd]);
                }
                scores.resize(rows * seen, 0.0);
                probs.resize(rows * seen, 0.0);
                ob.resize(rows * hd, 0.0);
                gemm(&qa, hd, &kt, keys, &mut scores, rows, seen, hd);
                let softmax = MaskedSoftmax { spans: self.spans, past: self.past, start, len, scale: self.scale };
                for (row, (s, p)) in scores.chunks_exact(seen).zip(probs.chunks_exact_mut(seen)).enumerate() {
                    softmax.row(s, p, bi, row % len);
                }
                gemm(&probs, seen, vh, hd, &mut ob, rows, hd, seen);
                let oh = &mut out[bg * rep * t * hd..(bg + 1) * rep * t * hd];
                for r in 0..rep {
                    oh[(r * t + start) * hd..(r * t + start + len) * hd]
                        .copy_from_slice(&ob[r * len * hd..(r + 1) * len * hd]);
                }
            }
        }
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }
}

fn contiguous<'a>(s: &'a [f32], l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("cpu attention: {what} not contiguous"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The op against attention written out per query: scores scaled, the prefix and the row's
    /// own keys up to the query visible, softmax, weighted values; a padded batch (one row
    /// left-padded), a shared prefix, a block that does not divide the length.
    #[test]
    fn attention_matches_a_per_query_reference() {
        use candle_core::{Device, Tensor};
        let (b, nkv, rep, t, hd, past) = (2, 2, 3, 19, 12, 5);
        let keys = past + t;
        let spans = [(0, 19), (6, 13)];
        let (q, k, v) =
            (values(b * nkv * rep * t * hd, 1), values(b * nkv * keys * hd, 2), values(b * nkv * keys * hd, 3));
        // Scores of a few units, so that a wrong scale or mask shows.
        let (q, k): (Vec<f32>, Vec<f32>) = (q.iter().map(|x| x * 8.0).collect(), k.iter().map(|x| x * 8.0).collect());
        let scale = 1.0 / (hd as f32).sqrt();
        let op = CpuAttention { spans: &spans, past, block: 4, scale };
        let dev = Device::Cpu;
        let tensor = |x: &[f32], d: &[usize]| Tensor::from_vec(x.to_vec(), d, &dev).unwrap();
        let got = tensor(&q, &[b, nkv, rep, t, hd])
            .apply_op3_no_bwd(&tensor(&k, &[b, nkv, keys, hd]), &tensor(&v, &[b, nkv, keys, hd]), &op)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for bi in 0..b {
            let (s, n) = spans[bi];
            for g in 0..nkv {
                for r in 0..rep {
                    for i in s..s + n {
                        let qrow = &q[(((bi * nkv + g) * rep + r) * t + i) * hd..][..hd];
                        let seen: Vec<usize> = (0..past).chain(past + s..=past + i).collect();
                        let key = |j: usize| &k[((bi * nkv + g) * keys + j) * hd..][..hd];
                        let sc: Vec<f32> = seen
                            .iter()
                            .map(|&j| qrow.iter().zip(key(j)).map(|(a, b)| a * b).sum::<f32>() * scale)
                            .collect();
                        let max = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                        let e: Vec<f32> = sc.iter().map(|x| (x - max).exp()).collect();
                        let sum: f32 = e.iter().sum();
                        for d in 0..hd {
                            let want: f32 = seen
                                .iter()
                                .zip(&e)
                                .map(|(&j, w)| w / sum * v[((bi * nkv + g) * keys + j) * hd + d])
                                .sum();
                            let at = (((bi * nkv + g) * rep + r) * t + i) * hd + d;
                            assert!((got[at] - want).abs() <= 1e-5, "[{bi},{g},{r},{i},{d}]: {} vs {want}", got[at]);
                        }
                    }
                }
            }
        }
        let short = tensor(&k[..b * nkv * (keys - 1) * hd], &[b, nkv, keys - 1, hd]);
        let err = tensor(&q, &[b, nkv, rep, t, hd]).apply_op3_no_bwd(&short, &short, &op).unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
    }
}
