//! Fused CPU ops where Candle's chain of ops costs extra passes and a scalar `exp` per element:
//! attention's masked softmax and the MLP's SwiGLU; and RMSNorm on our vector code (Candle's
//! generic op took about 2 ns a value).
//!
//! Why: scale, additive mask and `softmax_last_dim` are three passes over the score buffer (two
//! of them allocating), the mask itself is a buffer of the same size, and the softmax calls a
//! scalar `exp` on every key, masked ones included; `silu(gate) * up` is two passes with a
//! scalar `exp` each. In wasm that `exp` is a libm call per element (at 512 tokens attention
//! was 21% of a pass, SwiGLU 5%). Here a softmax row's visible keys are two ranges (the shared
//! prefix, then the row's own tokens up to the query), the rest is written as 0 without being
//! read, and `exp` is `rewardlens_kernels::attention`'s polynomial (simd128 in the browser
//! build). The browser's attention itself is one op ([`crate::cpu_attention`]).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape};
use rayon::prelude::*;
use rewardlens_kernels::attention::CausalMask;

/// Which keys the queries `start..start + len` of a padded batch may see: per batch row, where
/// its tokens start and how many there are (`spans`), after `past` prefix keys every real token
/// sees. Scores come as (b, heads, len, past + start + len), heads being any number of
/// (kv head, query head) pairs.
pub(crate) struct MaskedSoftmax<'a> {
    pub spans: &'a [(usize, usize)],
    pub past: usize,
    pub start: usize,
    pub len: usize,
    /// Multiplies every score first (attention's 1/sqrt(head_dim)).
    pub scale: f32,
}

impl MaskedSoftmax<'_> {
    /// One row of scores into probabilities ([`CausalMask::softmax_row`]) for query `i` of the
    /// block (0-based) in batch row `bi`.
    pub(crate) fn row(&self, src: &[f32], dst: &mut [f32], bi: usize, i: usize) {
        CausalMask { spans: self.spans, past: self.past }.softmax_row(src, dst, bi, self.start + i, self.scale);
    }
}

/// The two inputs of a binary op as contiguous f32 slices, or an error naming `op`.
fn f32_pair<'a>(
    op: &str,
    (a, a_layout): (&'a CpuStorage, &Layout),
    (b, b_layout): (&'a CpuStorage, &Layout),
) -> candle_core::Result<(&'a [f32], &'a [f32])> {
    let (CpuStorage::F32(a), CpuStorage::F32(b)) = (a, b) else { candle_core::bail!("{op} takes f32") };
    let (Some((a0, a1)), Some((b0, b1))) = (a_layout.contiguous_offsets(), b_layout.contiguous_offsets()) else {
        candle_core::bail!("{op}: inputs not contiguous")
    };
    Ok((&a[a0..a1], &b[b0..b1]))
}

/// silu(gate) · up, elementwise (the MLP's SwiGLU), one pass.
pub(crate) struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, u) = f32_pair(self.name(), (gate, gate_layout), (up, up_layout))?;
        if gate_layout.shape() != up_layout.shape() {
            candle_core::bail!("swiglu: gate {:?} and up {:?} differ", gate_layout.shape(), up_layout.shape())
        }
        let mut out = vec![0f32; g.len()];
        const CHUNK: usize = 4096;
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| rewardlens_kernels::elementwise::swiglu(g, u, o));
        Ok((CpuStorage::F32(out), gate_layout.shape().clone()))
    }
}

/// RMSNorm over the last dimension of a contiguous f32 tensor ([`rewardlens_kernels::elementwise::rms_norm`]),
/// rows spread over Rayon's threads: Candle's generic op took about 2 ns a value.
pub(crate) struct RmsNormOp {
    pub eps: f32,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = f32_pair(self.name(), (x, x_layout), (weight, weight_layout))?;
        let n = *x_layout.dims().last().unwrap_or(&0);
        if n == 0 || w.len() != n {
            candle_core::bail!("rms-norm: weight of {} for rows of {n}", w.len())
        }
        let mut out = vec![0f32; x.len()];
        // Whole rows per task, about 4,096 values each.
        let rows = (4096 / n).max(1) * n;
        out.par_chunks_mut(rows)
            .zip(x.par_chunks(rows))
            .for_each(|(o, x)| rewardlens_kernels::elementwise::rms_norm(x, w, self.eps, o));
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

impl CustomOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(all) = storage else { candle_core::bail!("masked softmax takes f32 scores") };
        let Some((from, to)) = layout.contiguous_offsets() else {
            candle_core::bail!("masked softmax: scores not contiguous")
        };
        let src = &all[from..to];
        let dims = layout.shape().dims();
        let (b, keys) = (dims[0], dims[dims.len() - 1]);
        if keys != self.past + self.start + self.len || b != self.spans.len() || src.len() % (keys * self.len) != 0 {
            candle_core::bail!(
                "masked softmax: scores {dims:?} do not match the block ({} keys)",
                self.past + self.start + self.len
            )
        }
        let per_batch_row = src.len() / b;
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(keys).zip(src.par_chunks(keys)).enumerate().for_each(|(row, (d, s))| {
            self.row(s, d, row * keys / per_batch_row, row % self.len);
        });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn swiglu_matches_silu_times_up() {
        let g = Tensor::from_vec((0..10_000).map(|i| (i as f32 - 5000.0) / 97.0).collect(), (100, 100), &Device::Cpu)
            .unwrap();
        let u = Tensor::from_vec(
            (0..10_000).map(|i| ((i * 31 % 200) as f32 - 100.0) / 50.0).collect(),
            (100, 100),
            &Device::Cpu,
        )
        .unwrap();
        let got = g.apply_op2_no_bwd(&u, &SwiGlu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = (candle_nn::ops::silu(&g).unwrap() * &u).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert!(g.apply_op2_no_bwd(&u.narrow(0, 0, 50).unwrap(), &SwiGlu).is_err(), "shapes must match");
    }

    /// Against the mask-and-softmax it replaces: a padded batch of two rows (one left-padded),
    /// a shared prefix, a block in the middle of the sequence.
    #[test]
    fn matches_mask_then_softmax() {
        let (b, heads, past, start, len) = (2, 3, 4, 2, 5);
        let keys = past + start + len;
        let spans = [(0, 7), (3, 4)];
        let n = b * heads * len * keys;
        let scores: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0).collect();
        let t = Tensor::from_vec(scores.clone(), (b, heads, len, keys), &Device::Cpu).unwrap();
        let scale = 0.35;
        let op = MaskedSoftmax { spans: &spans, past, start, len, scale };
        let got = t.apply_op1_no_bwd(&op).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (bi, &(s, cnt)) in spans.iter().enumerate() {
            for h in 0..heads {
                for i in 0..len {
                    let row = ((bi * heads + h) * len + i) * keys;
                    let q = start + i;
                    let real = (s..s + cnt).contains(&q);
                    let seen = |j: usize| real && (j < past || (past + s..=past + q).contains(&j));
                    let m = (0..keys).filter(|&j| seen(j)).map(|j| scores[row + j] * scale).fold(f32::MIN, f32::max);
                    let z: f32 = (0..keys).filter(|&j| seen(j)).map(|j| (scores[row + j] * scale - m).exp()).sum();
                    for j in 0..keys {
                        let want = if seen(j) { (scores[row + j] * scale - m).exp() / z } else { 0.0 };
                        assert!((got[row + j] - want).abs() < 1e-6, "b{bi} h{h} q{i} k{j}: {} vs {want}", got[row + j]);
                    }
                }
            }
        }
        let bad = MaskedSoftmax { spans: &spans, past, start, len: len + 1, scale };
        assert!(t.apply_op1_no_bwd(&bad).is_err(), "a block of the wrong size is refused");
    }
}
