//! Attention on the CPU as one Candle op per layer for the browser engine: the checks of the
//! tensors' shapes and layouts around [`rewardlens_kernels::attention::causal_attention`] (per
//! (batch row, kv head) and query block: scores by its f32 GEMM, the masked softmax in place, the
//! weighted values by the same GEMM).
//!
//! Why: in wasm, Candle's f32 matmul ran attention's small, oddly shaped products (the `rep`
//! query heads of a group times 128 queries, against up to t keys) at about 7 GMAC/s, and the
//! blocks around them cost copies and allocations per block; at 512 tokens attention was 16% of
//! a q8_0 pass, and it grows with the square of the length.
//!
//! Natively it is the default where the kernels' f32 GEMM has a SIMD tile (x86-64 with AVX2 and
//! FMA), with the (batch row, kv head) groups spread over Rayon's threads: on the 0.6B shape it
//! beat Candle's matmul around blocks (docs/PERFORMANCE.md). Elsewhere Candle's path stays; the
//! native tests run both.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
#[cfg(not(target_arch = "wasm32"))]
use rewardlens_kernels::attention::attend_group;
#[cfg(any(target_arch = "wasm32", test))]
use rewardlens_kernels::attention::causal_attention;
use rewardlens_kernels::attention::{AttentionScratch, AttentionShape, CausalMask};

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
        let mut out = vec![0f32; q.len()];
        let shape = AttentionShape { b, kv_heads: nkv, rep, t, hd };
        let mask = CausalMask { spans: self.spans, past: self.past };
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Natively the (batch row, kv head) groups go to Rayon's threads, each with its own
            // scratch; in wasm one engine worker is one thread.
            use rayon::prelude::*;
            let (per_q, per_k) = (rep * t * hd, keys * hd);
            out.par_chunks_mut(per_q).enumerate().for_each_init(AttentionScratch::default, |scratch, (bg, oh)| {
                let (qh, kh, vh) = (&q[bg * per_q..][..per_q], &k[bg * per_k..][..per_k], &v[bg * per_k..][..per_k]);
                attend_group(bg / nkv, qh, kh, vh, oh, shape, mask, self.block, self.scale, scratch);
            });
        }
        #[cfg(target_arch = "wasm32")]
        causal_attention(q, k, v, &mut out, shape, mask, self.block, self.scale, &mut AttentionScratch::default());
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
    use candle_core::{Device, Tensor};

    /// The op gives the kernel's output for the same slices (the kernel's own tests check it
    /// against a per-query reference) and refuses keys that do not match the queries.
    #[test]
    fn op_runs_the_kernel_and_checks_shapes() {
        let (b, nkv, rep, t, hd, past) = (2, 2, 3, 9, 8, 4);
        let keys = past + t;
        let spans = [(0, 9), (3, 6)];
        let values = |n: usize, m: usize| (0..n).map(|i| ((i * m % 1000) as f32 / 250.0) - 2.0).collect::<Vec<f32>>();
        let (q, k, v) = (
            values(b * nkv * rep * t * hd, 7919),
            values(b * nkv * keys * hd, 104729),
            values(b * nkv * keys * hd, 31),
        );
        let op = CpuAttention { spans: &spans, past, block: 4, scale: 0.3 };
        let dev = Device::Cpu;
        let tensor = |x: &[f32], d: &[usize]| Tensor::from_vec(x.to_vec(), d, &dev).unwrap();
        let got = tensor(&q, &[b, nkv, rep, t, hd])
            .apply_op3_no_bwd(&tensor(&k, &[b, nkv, keys, hd]), &tensor(&v, &[b, nkv, keys, hd]), &op)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut want = vec![0.0; q.len()];
        let shape = AttentionShape { b, kv_heads: nkv, rep, t, hd };
        let mask = CausalMask { spans: &spans, past };
        causal_attention(&q, &k, &v, &mut want, shape, mask, 4, 0.3, &mut AttentionScratch::default());
        assert_eq!(got, want);
        let short = tensor(&k[..b * nkv * (keys - 1) * hd], &[b, nkv, keys - 1, hd]);
        let err = tensor(&q, &[b, nkv, rep, t, hd]).apply_op3_no_bwd(&short, &short, &op).unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
    }
}
