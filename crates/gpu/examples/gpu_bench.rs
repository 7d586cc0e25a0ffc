//! Prefill speed of the GPU forward pass on a checkpoint folder, on whatever adapter wgpu picks:
//!
//!     cargo run --release -p rewardlens-gpu --example gpu_bench -- DIR [f32|q8_0] [128,512]
//!
//! Same token ids as `rewardlens bench` (rewardlens_models::synthetic::bench_ids). Prints the
//! median of 3 runs after a warm-up, tokens/s and the achieved FLOP/s (2 x parameters x tokens
//! for the matrices plus the attention's 4 x T^2 x heads x head_dim / 2).

use rewardlens_gpu::{Gpu, GpuRewardModel, WeightFormat};
use rewardlens_models::{CheckpointFiles, ModelConfig, WeightFiles};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().expect("usage: gpu_bench DIR [f32|q8_0] [LENGTHS]");
    let storage = WeightFormat::F32;
    let lengths: Vec<usize> =
        args.get(2).map(String::as_str).unwrap_or("128,512").split(',').map(|s| s.parse().unwrap()).collect();
    let files = CheckpointFiles::from_dir(std::path::Path::new(dir)).unwrap();
    let config = ModelConfig::from_json(&files.config_json).unwrap();
    let WeightFiles::Paths(paths) = &files.weights else { unreachable!() };
    let weights = rewardlens_models::weights::SafetensorsWeights::mmap(paths).unwrap();
    let t0 = Instant::now();
    let model = GpuRewardModel::load(Gpu::new_blocking().unwrap(), config.clone(), &weights, storage).unwrap();
    println!("{} on {}: loaded ({storage:?}) in {:.1}s", dir, model.adapter(), t0.elapsed().as_secs_f64());
    let p = rewardlens_models::memory::ParameterCount::of(&config);
    println!("| tokens | median s | tokens/s | GFLOP/s |\n|---:|---:|---:|---:|");
    for len in lengths {
        let ids = rewardlens_models::synthetic::bench_ids(len, 0, config.vocab_size);
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
        let flops = 2.0 * p.matrices as f64 * len as f64 + attn;
        println!("| {len} | {s:.3} | {:.1} | {:.1} |", len as f64 / s, flops / s / 1e9);
    }
}
