//! Attention on the CPU as one op per layer for the browser engine: per (batch row, kv head) and
//! query block, scores by a register-tiled f32 GEMM, the masked softmax of [`crate::fused`], and
//! the weighted values by the same GEMM.
//!
//! Why: in wasm, Candle's f32 matmul ran attention's small, oddly shaped products (the `rep`
//! query heads of a group times 128 queries, against up to t keys) at about 7 GMAC/s, and the
//! blocks around them cost copies and allocations per block; at 512 tokens attention was 16% of
//! a q8_0 pass, and it grows with the square of the length. Here a 4-row × 8-column tile keeps
//! its 8 accumulators in registers (f32x4 multiply-add: `relaxed_madd` in the relaxed-simd
//! build, mul + add in the simd128 one) and reuses every load of B across 4 rows.
//!
//! Natively Candle's matmul (the `gemm` crate, AVX/FMA, threads) stays faster, so this op is
//! the default only on wasm32; the native tests run it against Candle's path.

use crate::fused::MaskedSoftmax;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape};

/// Rows and columns of one register tile.
const MR: usize = 4;
const NR: usize = 8;
/// K values per pass over the tiles: a panel of B (`KC × NR` floats) stays in L1 while every row
/// tile of A passes over it, and A's `m × KC` block in L2.
const KC: usize = 256;

/// `c[m × n] = a[m × k] · b[k × n]`, rows `lda`, `ldb` and `n` apart. Every element is summed over
/// `k` in order with the same arithmetic wherever it falls (a full tile or an edge, any block),
/// so a query's scores do not depend on where its block starts.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32], m: usize, n: usize, k: usize) {
    assert!(m == 0 || a.len() >= (m - 1) * lda + k, "gemm: A too short");
    assert!(k == 0 || b.len() >= (k - 1) * ldb + n, "gemm: B too short");
    assert!(c.len() >= m * n, "gemm: C too short");
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    // B's panels are copied to contiguous `kc × NR` blocks (zero-padded past `n`): read in place,
    // rows `ldb` apart map to few cache sets (keys × 4 bytes: 8 KiB at 2,048 keys) and thrash L1.
    let mut panel = vec![0.0f32; KC.min(k) * NR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for c0 in (0..n).step_by(NR) {
            let cols = NR.min(n - c0);
            for kk in 0..kc {
                let src = &b[(k0 + kk) * ldb + c0..(k0 + kk) * ldb + c0 + cols];
                panel[kk * NR..kk * NR + cols].copy_from_slice(src);
                panel[kk * NR + cols..(kk + 1) * NR].fill(0.0);
            }
            for r0 in (0..m).step_by(MR) {
                let rows = MR.min(m - r0);
                // Missing rows of a ragged tile repeat the first; their results are dropped.
                let row_of = |i: usize| if i < rows { r0 + i } else { r0 };
                let a_rows: [&[f32]; MR] = std::array::from_fn(|i| &a[row_of(i) * lda + k0..row_of(i) * lda + k0 + kc]);
                // Later K blocks continue each element's sum where the earlier one left it.
                let mut acc = [[0.0f32; NR]; MR];
                if k0 > 0 {
                    for (i, row) in acc.iter_mut().enumerate() {
                        let r = row_of(i);
                        row[..cols].copy_from_slice(&c[r * n + c0..r * n + c0 + cols]);
                    }
                }
                tile(&mut acc, a_rows, &panel[..kc * NR], kc);
                for (i, row) in acc.iter().enumerate().take(rows) {
                    c[(r0 + i) * n + c0..(r0 + i) * n + c0 + cols].copy_from_slice(&row[..cols]);
                }
            }
        }
    }
}

/// One 4 × 8 tile: `acc[i][j] += Σ_kk a[i][kk] · b[kk * NR + j]`, in order of `kk`.
fn tile(acc: &mut [[f32; NR]; MR], a: [&[f32]; MR], b: &[f32], k: usize) {
    assert!(b.len() >= k * NR && a.iter().all(|r| r.len() >= k));
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    // SAFETY: lengths asserted above.
    unsafe {
        wasm_tile(acc, a, b, k)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    for kk in 0..k {
        let bk = &b[kk * NR..kk * NR + NR];
        for i in 0..MR {
            let x = a[i][kk];
            for j in 0..NR {
                acc[i][j] += x * bk[j];
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
unsafe fn wasm_tile(out: &mut [[f32; NR]; MR], a: [&[f32]; MR], b: &[f32], k: usize) {
    use core::arch::wasm32::*;
    #[inline(always)]
    fn madd(x: v128, y: v128, acc: v128) -> v128 {
        #[cfg(target_feature = "relaxed-simd")]
        {
            f32x4_relaxed_madd(x, y, acc)
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            f32x4_add(acc, f32x4_mul(x, y))
        }
    }
    let mut acc = [f32x4_splat(0.0); 2 * MR];
    for (i, row) in out.iter().enumerate() {
        let p = row.as_ptr() as *const v128;
        acc[2 * i] = v128_load(p);
        acc[2 * i + 1] = v128_load(p.add(1));
    }
    for kk in 0..k {
        // Unaligned v128 and 32-bit loads are allowed in wasm.
        let p = b.as_ptr().add(kk * NR) as *const v128;
        let (b0, b1) = (v128_load(p), v128_load(p.add(1)));
        for i in 0..MR {
            let x = v128_load32_splat(a[i].as_ptr().add(kk) as *const u32);
            acc[2 * i] = madd(x, b0, acc[2 * i]);
            acc[2 * i + 1] = madd(x, b1, acc[2 * i + 1]);
        }
    }
    for (i, row) in out.iter_mut().enumerate() {
        let p = row.as_mut_ptr() as *mut v128;
        v128_store(p, acc[2 * i]);
        v128_store(p.add(1), acc[2 * i + 1]);
    }
}

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

    #[test]
    fn gemm_matches_a_plain_triple_loop_on_ragged_shapes() {
        for (i, &(m, n, k)) in
            [(1, 1, 1), (3, 7, 5), (4, 8, 16), (9, 17, 33), (13, 130, 64), (2, 9, 0)].iter().enumerate()
        {
            let (lda, ldb) = (k + 3, n + 5);
            let a = values(m * lda, i as u64);
            let b = values(k.max(1) * ldb, 100 + i as u64);
            let mut c = vec![f32::NAN; m * n];
            gemm(&a, lda, &b, ldb, &mut c, m, n, k);
            for r in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|kk| a[r * lda + kk] * b[kk * ldb + j]).sum();
                    let got = c[r * n + j];
                    assert!((got - want).abs() <= 1e-5 * (k as f32).max(1.0), "{m}x{n}x{k} [{r},{j}]: {got} vs {want}");
                }
            }
        }
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
