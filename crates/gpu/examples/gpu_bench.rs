//! Prefill speed of the GPU forward pass on a checkpoint folder, on whatever adapter wgpu picks:
//!
//!     cargo run --release -p rewardlens-gpu --example gpu_bench -- DIR [f16,q8_0,q4_0] [128,512] [PEAK_GFLOPS]
//!
//! Same token ids as `rewardlens bench` (rewardlens_models::synthetic::bench_ids). Prints, per
//! weight format and length, the median of 3 runs after a warm-up: seconds per response,
//! tokens/s, achieved GFLOP/s (2 x matrix parameters x tokens, plus the attention's
//! 2 x T^2 x heads x head_dim per layer for QK and PV with the causal half), and with
//! PEAK_GFLOPS (the device's f32 peak, e.g. 67000 for an H100 SXM) the fraction of it; and the
//! GPU buffers (`Gpu::memory`): weights, and the peak of each length's passes by kind.

use rewardlens_gpu::{BufferKind, Gpu, GpuRewardModel, WeightFormat};
use rewardlens_models::{CheckpointFiles, ModelConfig, WeightFiles};
use std::time::Instant;

fn format(name: &str) -> WeightFormat {
    match name {
        "f32" => WeightFormat::F32,
        "f16" => WeightFormat::F16,
        "q8_0" => WeightFormat::Q8_0,
        "q4_0" => WeightFormat::Q4_0,
        other => panic!("unknown format {other} (f32, f16, q8_0, q4_0)"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().expect("usage: gpu_bench DIR [FORMATS] [LENGTHS] [PEAK_GFLOPS]");
    let formats: Vec<WeightFormat> =
        args.get(1).map_or("f16,q8_0,q4_0", String::as_str).split(',').map(format).collect();
    let lengths: Vec<usize> =
        args.get(2).map_or("128,512", String::as_str).split(',').map(|s| s.parse().unwrap()).collect();
    let peak: Option<f64> = args.get(3).map(|p| p.parse().expect("PEAK_GFLOPS is a number"));
    let files = CheckpointFiles::from_dir(std::path::Path::new(dir)).unwrap();
    let config = ModelConfig::from_json(&files.config_json).unwrap();
    let WeightFiles::Paths(paths) = &files.weights else { unreachable!() };
    let weights = rewardlens_models::weights::SafetensorsWeights::mmap(paths).unwrap();
    let p = rewardlens_models::memory::ParameterCount::of(&config);
    println!(
        "| weights | tokens | s per response | tokens/s | GFLOP/s | of peak | GPU peak MiB (weights + passes) |\n|---|---:|---:|---:|---:|---:|---|"
    );
    for f in formats {
        let t0 = Instant::now();
        let gpu = Gpu::new_blocking().unwrap();
        let model = GpuRewardModel::load(gpu, config.clone(), &weights, f).unwrap();
        eprintln!(
            "{dir} on {} ({}): {} weights loaded in {:.1}s, {:.0} MiB",
            model.adapter(),
            model.gpu().feature_names(),
            f.name(),
            t0.elapsed().as_secs_f64(),
            model.weight_bytes() as f64 / (1u64 << 20) as f64
        );
        for &len in &lengths {
            let ids = rewardlens_models::synthetic::bench_ids(len, 0, config.vocab_size);
            model.gpu().reset_memory_peak();
            model.forward_blocking(&[&ids]).unwrap();
            let mut times: Vec<f64> = (0..3)
                .map(|_| {
                    let t = Instant::now();
                    model.forward_blocking(&[&ids]).unwrap();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let s = times[1];
            let attn = 2.0
                * (len * len) as f64
                * (config.num_attention_heads * config.head_dim) as f64
                * config.num_hidden_layers as f64;
            let gflops = (2.0 * p.matrices as f64 * len as f64 + attn) / s / 1e9;
            let of_peak = peak.map_or("—".to_owned(), |pk| format!("{:.1}%", 100.0 * gflops / pk));
            let m = model.gpu().memory();
            let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
            let (_, activations) = m.of(BufferKind::Activations);
            let (_, uniforms) = m.of(BufferKind::Uniforms);
            let (_, staging) = m.of(BufferKind::Staging);
            println!(
                "| {} | {len} | {s:.3} | {:.1} | {gflops:.1} | {of_peak} | {:.1} ({:.1} + activations {:.1}, uniforms {:.2}, staging {:.2}) |",
                f.name(),
                len as f64 / s,
                mib(m.peak_total),
                mib(m.of(BufferKind::Weights).0),
                mib(activations),
                mib(uniforms),
                mib(staging)
            );
        }
    }
}
