//! Time of each kernel at the Skywork-0.6B shape (hidden 1024, intermediate 3072, 16 heads of
//! 128, 8 kv heads) for T tokens, on whatever adapter wgpu picks: which kernel to fix first.
//!
//!     cargo run --release -p rewardlens-gpu --example gpu_ops -- [TOKENS]

use rewardlens_gpu::kernels::*;
use rewardlens_gpu::Gpu;
use std::time::Instant;

fn time(g: &Gpu, what: &str, flops: f64, mut f: impl FnMut()) {
    let sync = g.zeros(1);
    f();
    g.download_f32_blocking(&sync).unwrap();
    let t = Instant::now();
    let n = 3;
    for _ in 0..n {
        f();
    }
    g.download_f32_blocking(&sync).unwrap();
    let s = t.elapsed().as_secs_f64() / n as f64;
    println!("| {what} | {:.2} | {:.1} |", s * 1e3, flops / s / 1e9);
}

fn main() {
    let t: usize = std::env::args().nth(1).map_or(128, |a| a.parse().unwrap());
    let g = Gpu::new_blocking().unwrap();
    println!("{} ({}), {t} tokens\n| kernel | ms | GFLOP/s |\n|---|---:|---:|", g.adapter, g.feature_names());
    let (h, i, nq, nkv, hd) = (1024, 3072, 16, 8, 128);
    let mm = Matmul::new(&g);
    let x = g.upload_f32(&vec![0.01; t * i]);
    let y = g.zeros(t * i);
    for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0] {
        let w = GpuMatrix::upload(&g, format, &vec![0.02; i * h], i, h).unwrap();
        time(&g, &format!("matmul {} [{t}x{h}]·[{i}x{h}]ᵀ", format.name()), 2.0 * (t * h * i) as f64, || {
            mm.run(&g, &x, &w, &y, t, i, 0).unwrap()
        });
    }
    let attn = Attention::new(&g);
    let (q, k, v, o) = (g.zeros(t * nq * hd), g.zeros(t * nkv * hd), g.zeros(t * nkv * hd), g.zeros(t * nq * hd));
    let starts = g.upload_u32(&vec![0; t]);
    time(&g, "attention", 2.0 * (t * t * nq * hd) as f64, || {
        attn.run(&g, &q, &k, &v, &o, &starts, 0, t, nq, nkv, hd).unwrap()
    });
    let norm = RmsNorm::new(&g);
    let w = g.upload_f32(&vec![1.0; h]);
    time(&g, "rms_norm", 0.0, || norm.run(&g, &x, &w, &y, t, h, 1e-6).unwrap());
    let sw = SwiGlu::new(&g);
    time(&g, "swiglu", 0.0, || sw.run(&g, &x, &x, &y, t * i).unwrap());
}
