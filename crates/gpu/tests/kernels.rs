//! Every kernel against a CPU reference on random inputs, on whatever adapter wgpu finds
//! (Mesa's lavapipe in CI: `mesa-vulkan-drivers`).

use rewardlens_gpu::kernels::*;
use rewardlens_gpu::Gpu;
use std::sync::OnceLock;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let g = Gpu::new_blocking().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("adapter: {}", g.adapter);
        g
    })
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

#[test]
fn matmul_f32_matches_cpu_including_ragged_edges() {
    let g = gpu();
    let mm = Matmul::new(g);
    for (m, n, k) in [(1, 1, 1), (7, 33, 50), (64, 48, 96), (130, 17, 257)] {
        let (x, w) = (random(m * k, 1), random(n * k, 2));
        let y = g.zeros(m * n);
        mm.run(g, &g.upload_f32(&x), &g.upload_f32(&w), &y, m, n, k).unwrap();
        assert_close(
            &g.download_f32_blocking(&y).unwrap(),
            &matmul_ref(&x, &w, m, n, k),
            1e-4,
            &format!("matmul {m}x{n}x{k}"),
        );
    }
}

#[test]
fn matmul_q8_0_matches_dequantized_cpu() {
    let g = gpu();
    let mm = MatmulQ8_0::new(g);
    let (m, n, k) = (19, 40, 128);
    let (x, w) = (random(m * k, 3), random(n * k, 4));
    let (quants, scales) = quantize_q8_0(&w, n, k).unwrap();
    // The CPU reference uses the same dequantized weights the kernel sees.
    let bytes: Vec<i8> = quants.iter().flat_map(|q| q.to_le_bytes()).map(|b| b as i8).collect();
    let deq: Vec<f32> = bytes.iter().enumerate().map(|(i, &q)| q as f32 * scales[i / 32]).collect();
    let max_err = w.iter().zip(&deq).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_err <= 1.0 / 127.0 + 1e-6, "Q8_0 rounding error {max_err}");
    let wq = Q8_0Weights::upload(g, &quants, &scales, n, k).unwrap();
    let y = g.zeros(m * n);
    mm.run(g, &g.upload_f32(&x), &wq, &y, m).unwrap();
    assert_close(&g.download_f32_blocking(&y).unwrap(), &matmul_ref(&x, &deq, m, n, k), 1e-4, "matmul_q8_0");
    assert!(quantize_q8_0(&w[..n * 100], n, 100).is_err(), "rows must be multiples of 32");
}

#[test]
fn rms_norm_matches_cpu_for_rows_and_heads() {
    let g = gpu();
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
        assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 1e-4, &format!("rms_norm {rows}x{dim}"));
    }
}

#[test]
fn rope_matches_cpu_rotate_half() {
    let g = gpu();
    let rope = Rope::new(g);
    // Late positions too: large angles are where GPU sin/cos would drift.
    let (tokens, heads, d, offset) = (9, 3, 16, 3000);
    let x = random(tokens * heads * d, 7);
    let freq = inv_freq(d, 10_000.0);
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
    let (cos, sin) = rope_tables(&freq, offset, tokens);
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

    let (vocab, dim) = (50, 24);
    let table = random(vocab * dim, 10);
    let ids = [3u32, 0, 49, 3, 17];
    let y = g.zeros(ids.len() * dim);
    Embedding::new(g).run(g, &g.upload_f32(&table), &g.upload_u32(&ids), &y, vocab, dim).unwrap();
    let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * dim..(i as usize + 1) * dim].to_vec()).collect();
    assert_close(&g.download_f32_blocking(&y).unwrap(), &want, 0.0, "embedding");
}

#[test]
fn causal_gqa_attention_matches_cpu_softmax() {
    let g = gpu();
    let attn = Attention::new(g);
    for (tokens, heads, kv_heads, d) in [(1, 2, 1, 8), (37, 8, 2, 64), (70, 4, 4, 128), (1000, 4, 2, 32)] {
        let q = random(tokens * heads * d, 11);
        let k = random(tokens * kv_heads * d, 12);
        let v = random(tokens * kv_heads * d, 13);
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
        let out = g.zeros(tokens * heads * d);
        attn.run(g, &g.upload_f32(&q), &g.upload_f32(&k), &g.upload_f32(&v), &out, tokens, heads, kv_heads, d).unwrap();
        assert_close(
            &g.download_f32_blocking(&out).unwrap(),
            &want,
            1e-4,
            &format!("attention t{tokens} h{heads}/{kv_heads} d{d}"),
        );
    }
}

#[test]
fn shape_mismatches_are_errors_not_gpu_faults() {
    let g = gpu();
    let err = Matmul::new(g).run(g, &g.zeros(10), &g.zeros(10), &g.zeros(10), 4, 4, 4).unwrap_err();
    assert!(err.to_string().contains("matmul x"), "{err}");
}
