//! Every kernel against a CPU reference on random inputs, on whatever adapter wgpu finds
//! (Mesa's lavapipe in CI: `mesa-vulkan-drivers`).

use rewardlens_gpu::kernels::*;
use rewardlens_gpu::{BufferKind, Gpu, GpuOptions};
use std::sync::OnceLock;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let g = Gpu::new_blocking().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("adapter: {} (features: {})", g.adapter, g.feature_names());
        g
    })
}

/// The same adapter without shader-f16 and subgroups, and with a 4 KiB binding cap: the
/// fallbacks and the buffer splitting, whatever the adapter has.
fn plain_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let options = GpuOptions { shader_f16: false, subgroups: false, max_binding: Some(4096) };
        Gpu::with_options_blocking(options).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn both() -> [&'static Gpu; 2] {
    [gpu(), plain_gpu()]
}

/// Deterministic values in [-1, 1).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}[{i}]: gpu {a} vs cpu {b}");
    }
}

fn matmul_ref(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
        }
    }
    y
}

const FORMATS: [WeightFormat; 4] = [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0];

#[test]
fn matmul_matches_cpu_in_every_format_including_ragged_edges() {
    for g in both() {
        let mm = Matmul::new(g);
        for format in FORMATS {
            for (m, n, k) in [(1, 1, 32), (7, 33, 64), (64, 48, 96), (130, 17, 256), (65, 70, 32)] {
                let (x, w) = (random(m * k, 1), random(n * k, 2));
                let y = g.zeros(m * n);
                let wm = GpuMatrix::upload(g, format, &w, n, k).unwrap();
                mm.run(g, &g.upload_f32(&x), &wm, &y, m, n, 0).unwrap();
                // The reference uses the weights the kernel sees, so only summation order differs.
                let want = matmul_ref(&x, &decoded_weights(format, &w, n, k).unwrap(), m, n, k);
                let what = format!("matmul {} {m}x{n}x{k} (f16 {})", format.name(), g.shader_f16);
                assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 1e-4, &what);
            }
        }
    }
    let g = gpu();
    let w = random(5 * 7, 3);
    assert!(GpuMatrix::upload(g, WeightFormat::F32, &w, 5, 7).is_ok(), "f32 takes any width");
    for format in [WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0] {
        let err = GpuMatrix::upload(g, format, &w, 5, 7).err().expect("odd rows refused");
        assert!(err.to_string().contains(format.name()), "{err}");
    }
}

#[test]
fn quantizers_decode_like_candles_ggml_blocks() {
    use candle_core::quantized::{GgmlDType, QTensor};
    let (n, k) = (6, 128);
    let w = random(n * k, 4);
    let t = candle_core::Tensor::from_vec(w.clone(), (n, k), &candle_core::Device::Cpu).unwrap();
    for (format, dtype) in [(WeightFormat::Q8_0, GgmlDType::Q8_0), (WeightFormat::Q4_0, GgmlDType::Q4_0)] {
        let ggml: Vec<f32> = QTensor::quantize(&t, dtype)
            .unwrap()
            .dequantize(&candle_core::Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let ours = decoded_weights(format, &w, n, k).unwrap();
        assert_close(&ours, &ggml, 1e-6, &format!("{} against ggml", format.name()));
    }
    let f16 = decoded_weights(WeightFormat::F16, &w, n, k).unwrap();
    let want: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    assert_eq!(f16, want, "f16 round trip");
}

#[test]
fn split_matrices_fill_one_output() {
    // 4 KiB bindings: a [40, 96] f32 matrix (384 bytes a row) splits into 4 blocks of 10 rows.
    let g = plain_gpu();
    let (m, n, k) = (9, 40, 96);
    let (x, w) = (random(m * k, 5), random(n * k, 6));
    let mm = Matmul::new(g);
    for format in FORMATS {
        let chunks = GpuMatrix::upload_split(g, format, &w, n, k).unwrap();
        let rows_per_chunk = 4096 / format.row_bytes(k) as usize;
        assert_eq!(chunks.len(), n.div_ceil(rows_per_chunk), "{} chunks", format.name());
        let y = g.zeros(m * n);
        let mut col0 = 0;
        for c in &chunks {
            mm.run(g, &g.upload_f32(&x), c, &y, m, n, col0).unwrap();
            col0 += c.n;
        }
        assert_eq!(col0, n);
        let want = matmul_ref(&x, &decoded_weights(format, &w, n, k).unwrap(), m, n, k);
        assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 1e-4, &format!("split {}", format.name()));
    }
    let too_wide = GpuMatrix::upload_split(g, WeightFormat::F32, &random(2 * 2048, 1), 2, 2048).err().unwrap();
    assert!(too_wide.to_string().contains("largest storage binding"), "{too_wide}");
}

#[test]
fn rms_norm_matches_cpu_for_rows_and_heads_with_and_without_subgroups() {
    for g in both() {
        let norm = RmsNorm::new(g);
        for (rows, dim) in [(5, 64), (3 * 8, 128), (2, 1000)] {
            let (x, w) = (random(rows * dim, 5), random(dim, 6));
            let mut want = vec![0f32; rows * dim];
            for r in 0..rows {
                let row = &x[r * dim..(r + 1) * dim];
                let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / dim as f32 + 1e-6).sqrt();
                for i in 0..dim {
                    want[r * dim + i] = row[i] * inv * w[i];
                }
            }
            let y = g.zeros(rows * dim);
            norm.run(g, &g.upload_f32(&x), &g.upload_f32(&w), &y, rows, dim, 1e-6).unwrap();
            let what = format!("rms_norm {rows}x{dim} (subgroups {})", g.subgroups);
            assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 1e-4, &what);
        }
    }
}

#[test]
fn rope_matches_cpu_rotate_half() {
    let g = gpu();
    let rope = Rope::new(g);
    // Late positions too: large angles are where GPU sin/cos would drift.
    let (tokens, heads, d, offset) = (9, 3, 16, 3000);
    let x = random(tokens * heads * d, 7);
    let freq: Vec<f32> =
        rewardlens_models::config::rope_base_inv_freq(d, 10_000.0).into_iter().map(|f| f as f32).collect();
    let mut want = x.clone();
    for t in 0..tokens {
        for h in 0..heads {
            let b = (t * heads + h) * d;
            for i in 0..d / 2 {
                let ang = (t + offset) as f32 * freq[i];
                let (a, c) = (x[b + i], x[b + i + d / 2]);
                want[b + i] = a * ang.cos() - c * ang.sin();
                want[b + i + d / 2] = c * ang.cos() + a * ang.sin();
            }
        }
    }
    let buf = g.upload_f32(&x);
    let (cos, sin) = rewardlens_models::plan::rope_tables(&freq, offset..offset + tokens);
    rope.run(g, &buf, &g.upload_f32(&cos), &g.upload_f32(&sin), tokens, heads, d).unwrap();
    assert_close(&g.download_f32_blocking(&buf).unwrap(), &want, 1e-4, "rope");
}

#[test]
fn swiglu_add_and_embedding_match_cpu() {
    let g = gpu();
    let n = 1000;
    let (a, b) = (random(n, 8), random(n, 9));
    let y = g.zeros(n);
    SwiGlu::new(g).run(g, &g.upload_f32(&a), &g.upload_f32(&b), &y, n).unwrap();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, u)| x / (1.0 + (-x).exp()) * u).collect();
    assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 1e-5, "swiglu");
    Add::new(g).run(g, &g.upload_f32(&a), &g.upload_f32(&b), &y, n).unwrap();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, u)| x + u).collect();
    assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 1e-6, "add");

    // Whole, and split into chunks of 42 rows by the 4 KiB binding cap.
    let (vocab, dim) = (200, 24);
    let table = random(vocab * dim, 10);
    let ids = [3u32, 0, 199, 3, 17, 42, 41, 84];
    let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * dim..(i as usize + 1) * dim].to_vec()).collect();
    for g in both() {
        let chunks = GpuMatrix::upload_split(g, WeightFormat::F32, &table, vocab, dim).unwrap();
        let y = g.zeros(ids.len() * dim);
        Embedding::new(g).run(g, &chunks, &g.upload_u32(&ids), &y).unwrap();
        let what = format!("embedding in {} chunks", chunks.len());
        assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 0.0, &what);
        // The f16 table: exactly the f16 rounding of each value.
        let bits: Vec<u16> = table.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
        // Read 7 rows a piece: ragged at the 85-row blocks' ends (f16 rows of 48 bytes under
        // the 4 KiB cap) and the table's.
        let mut pieces = Vec::new();
        let chunks = GpuMatrix::upload_f16_rows(g, vocab, dim, 7, |r| {
            pieces.push(r.clone());
            Ok(bits[r.start * dim..r.end * dim].to_vec())
        })
        .unwrap();
        assert!(pieces.len() > vocab / 7 && pieces.windows(2).all(|p| p[0].end == p[1].start), "{pieces:?}");
        assert_eq!(pieces.last().unwrap().end, vocab);
        let short = GpuMatrix::upload_f16_rows(g, vocab, dim, 5, |r| Ok(vec![0; r.len()]));
        assert!(short.is_err_and(|e| e.to_string().contains("5 f16 values for 5 rows of 24")));
        let y = g.zeros(ids.len() * dim);
        Embedding::new(g).run(g, &chunks, &g.upload_u32(&ids), &y).unwrap();
        let want16: Vec<f32> = want.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let what = format!("f16 embedding in {} chunks", chunks.len());
        assert_close(&g.download_f32_blocking(&y).unwrap(), &want16, 0.0, &what);
    }
}

/// The buffer count: weights counted while alive, a pass's buffers pooled and reused by the
/// next pass of the same shape (none created), rewritten inputs and cleared outputs never
/// mixing with the earlier pass's, and destroyed when a pass of another shape needs room.
#[test]
fn pass_buffers_are_counted_pooled_and_reused() {
    let g = Gpu::new_blocking().unwrap_or_else(|e| panic!("{e}"));
    let weights = g.upload_weights_f32(&random(1000, 3));
    let m = g.memory();
    assert_eq!(m.of(BufferKind::Weights).0, 4000);
    let add = Add::new(&g);
    let run = |n: usize, seed: u64| {
        let (a, b) = (random(n, seed), random(n, seed + 1));
        let y = g.zeros(n);
        add.run(&g, &g.upload_f32(&a), &g.upload_f32(&b), &y, n).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, u)| x + u).collect();
        assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 1e-6, &format!("add of {n}, seed {seed}"));
    };
    run(256, 1);
    let after_first = g.memory();
    // Three activation buffers of 1 KiB, one uniform; the readback buffer is gone again.
    assert_eq!(after_first.of(BufferKind::Activations).0, 3 * 1024);
    assert_eq!(after_first.of(BufferKind::Staging).0, 0);
    assert!(after_first.of(BufferKind::Staging).1 >= 1024, "the readback was counted while alive");
    run(256, 7);
    run(256, 9);
    let again = g.memory();
    assert_eq!(again.created, after_first.created + 2, "only the two readbacks are new: {again:?}");
    assert_eq!(again.alive, after_first.alive);
    // Another shape: the 256-value buffers are destroyed, not kept beside the new ones (the
    // last output once a pass has run without it).
    run(300, 11);
    run(300, 13);
    assert_eq!(g.memory().of(BufferKind::Activations).0, 3 * 1200);
    g.reset_memory_peak();
    run(300, 15);
    let m = g.memory();
    assert_eq!(m.of(BufferKind::Activations).1, 3 * 1200, "a pass of a pooled shape adds nothing");
    // Weights let go of are destroyed with the next submission (the encoder being recorded
    // could still use them).
    drop(weights);
    run(300, 17);
    assert_eq!(g.memory().of(BufferKind::Weights).0, 0);
}

/// Causal softmax attention of one sequence, as transformers computes it.
fn attention_ref(q: &[f32], k: &[f32], v: &[f32], tokens: usize, heads: usize, kv_heads: usize, d: usize) -> Vec<f32> {
    let mut want = vec![0f32; tokens * heads * d];
    let scale = 1.0 / (d as f32).sqrt();
    for t in 0..tokens {
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let qb = (t * heads + h) * d;
            let scores: Vec<f32> = (0..=t)
                .map(|j| {
                    let kb = (j * kv_heads + kvh) * d;
                    (0..d).map(|i| q[qb + i] * k[kb + i]).sum::<f32>() * scale
                })
                .collect();
            let mx = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - mx).exp()).collect();
            let z: f32 = e.iter().sum();
            for (j, w) in e.iter().enumerate() {
                let vb = (j * kv_heads + kvh) * d;
                for i in 0..d {
                    want[qb + i] += w / z * v[vb + i];
                }
            }
        }
    }
    want
}

#[test]
fn causal_gqa_attention_matches_cpu_softmax() {
    let g = gpu();
    let attn = Attention::new(g);
    for (tokens, heads, kv_heads, d) in [(1, 2, 1, 8), (37, 8, 2, 64), (70, 4, 4, 128), (1000, 4, 2, 32)] {
        let q = random(tokens * heads * d, 11);
        let k = random(tokens * kv_heads * d, 12);
        let v = random(tokens * kv_heads * d, 13);
        let want = attention_ref(&q, &k, &v, tokens, heads, kv_heads, d);
        let out = g.zeros(tokens * heads * d);
        let starts = g.upload_u32(&vec![0; tokens]);
        let (qb, kb, vb) = (g.upload_f32(&q), g.upload_f32(&k), g.upload_f32(&v));
        attn.run(g, &qb, &kb, &vb, &out, &starts, 0, tokens, heads, kv_heads, d).unwrap();
        let what = format!("attention t{tokens} h{heads}/{kv_heads} d{d}");
        assert_close(&g.download_f32_blocking(&out).unwrap(), &want, 1e-4, &what);
    }
}

#[test]
fn packed_sequences_attend_only_within_themselves() {
    let g = gpu();
    let (heads, kv_heads, d) = (4, 2, 32);
    let lens = [5usize, 70, 1, 130];
    let total: usize = lens.iter().sum();
    let q = random(total * heads * d, 14);
    let k = random(total * kv_heads * d, 15);
    let v = random(total * kv_heads * d, 16);
    let mut starts = Vec::new();
    let mut want = Vec::new();
    let mut s0 = 0;
    for &len in &lens {
        starts.extend(std::iter::repeat_n(s0 as u32, len));
        let (qs, ks) = (&q[s0 * heads * d..(s0 + len) * heads * d], &k[s0 * kv_heads * d..(s0 + len) * kv_heads * d]);
        let vs = &v[s0 * kv_heads * d..(s0 + len) * kv_heads * d];
        want.extend(attention_ref(qs, ks, vs, len, heads, kv_heads, d));
        s0 += len;
    }
    let out = g.zeros(total * heads * d);
    let (qb, kb, vb) = (g.upload_f32(&q), g.upload_f32(&k), g.upload_f32(&v));
    Attention::new(g).run(g, &qb, &kb, &vb, &out, &g.upload_u32(&starts), 0, total, heads, kv_heads, d).unwrap();
    assert_close(&g.download_f32_blocking(&out).unwrap(), &want, 1e-4, "packed attention");
}

/// A prompt packed once, then several continuations of it: each continuation token sees the
/// prompt and its own sequence, as if prompt + continuation were one sequence; the prompt
/// tokens see only the prompt.
#[test]
fn continuations_attend_to_the_shared_prompt() {
    let (heads, kv_heads, d) = (4, 2, 32);
    let prompt = 75usize;
    let lens = [3usize, 66, 1];
    let total = prompt + lens.iter().sum::<usize>();
    let q = random(total * heads * d, 17);
    let k = random(total * kv_heads * d, 18);
    let v = random(total * kv_heads * d, 19);
    let (qw, kw) = (heads * d, kv_heads * d);
    let mut want = attention_ref(&q[..prompt * qw], &k[..prompt * kw], &v[..prompt * kw], prompt, heads, kv_heads, d);
    let mut starts = vec![0u32; prompt];
    let mut s0 = prompt;
    for &len in &lens {
        starts.extend(std::iter::repeat_n(s0 as u32, len));
        // The whole sequence this continuation stands for: the prompt, then its own tokens.
        let whole = |x: &[f32], w: usize| [&x[..prompt * w], &x[s0 * w..(s0 + len) * w]].concat();
        let out = attention_ref(&whole(&q, qw), &whole(&k, kw), &whole(&v, kw), prompt + len, heads, kv_heads, d);
        want.extend_from_slice(&out[prompt * qw..]);
        s0 += len;
    }
    for g in both() {
        let out = g.zeros(total * qw);
        let (qb, kb, vb) = (g.upload_f32(&q), g.upload_f32(&k), g.upload_f32(&v));
        Attention::new(g)
            .run(g, &qb, &kb, &vb, &out, &g.upload_u32(&starts), prompt, total, heads, kv_heads, d)
            .unwrap();
        assert_close(&g.download_f32_blocking(&out).unwrap(), &want, 1e-4, "attention with a shared prompt");
    }
}

#[test]
fn shape_mismatches_are_errors_not_gpu_faults() {
    let g = gpu();
    let w = GpuMatrix::upload(g, WeightFormat::F32, &random(16, 1), 4, 4).unwrap();
    let err = Matmul::new(g).run(g, &g.zeros(10), &w, &g.zeros(16), 4, 4, 0).unwrap_err();
    assert!(err.to_string().contains("matmul x"), "{err}");
    let err = Matmul::new(g).run(g, &g.zeros(16), &w, &g.zeros(16), 4, 4, 2).unwrap_err();
    assert!(err.to_string().contains("past a row"), "{err}");
}
