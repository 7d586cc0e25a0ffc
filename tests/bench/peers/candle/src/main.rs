//! Candle's own Qwen3 (`candle_transformers::models::qwen3::Model`, the code Candle users would
//! reach for) timed on the same token ids as `rewardlens bench`, with the checkpoint's score row
//! applied at the last token: a peer in `cargo xtask bench-peers`. Prints the same table.
//!
//!     RAYON_NUM_THREADS=2 candle-qwen3-peer --model DIR --lengths 64,512 --batch 4 --shared 48 --iters 3 --warmup 1

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen3::{Config, Model};
use std::error::Error;
use std::time::Instant;

/// rewardlens-models' `synthetic::bench_ids`, restated: this crate stands apart from the workspace.
fn bench_ids(len: usize, row: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7919 + row * 104_729 + 13) % (vocab - 1000)) as u32 + 100).collect()
}

fn bench_ids_shared(len: usize, row: usize, vocab: usize, shared: usize) -> Vec<u32> {
    let mut ids = bench_ids(len, 0, vocab);
    let shared = shared.min(len);
    ids[shared..].copy_from_slice(&bench_ids(len, row, vocab)[shared..]);
    ids
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(arg(&args, "--model", "."));
    let lengths: Vec<usize> = arg(&args, "--lengths", "128").split(',').map(str::parse).collect::<Result<_, _>>()?;
    let batch: usize = arg(&args, "--batch", "1").parse()?;
    let shared: usize = arg(&args, "--shared", "0").parse()?;
    let iters: usize = arg(&args, "--iters", "3").parse()?;
    let warmup: usize = arg(&args, "--warmup", "1").parse()?;

    let t0 = Instant::now();
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let n = |k: &str| c[k].as_u64().map(|v| v as usize).ok_or_else(|| format!("config.json: no {k}"));
    let cfg = Config {
        vocab_size: n("vocab_size")?,
        hidden_size: n("hidden_size")?,
        intermediate_size: n("intermediate_size")?,
        num_hidden_layers: n("num_hidden_layers")?,
        num_attention_heads: n("num_attention_heads")?,
        head_dim: n("head_dim")?,
        attention_bias: c["attention_bias"].as_bool().unwrap_or(false),
        num_key_value_heads: n("num_key_value_heads")?,
        max_position_embeddings: n("max_position_embeddings")?,
        sliding_window: None,
        max_window_layers: n("num_hidden_layers")?,
        tie_word_embeddings: false,
        rope_theta: c["rope_theta"].as_f64().unwrap_or(1e6),
        rms_norm_eps: c["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    let dev = Device::Cpu;
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &dev)? };
    let model = Model::new(&cfg, vb.clone())?;
    let score = vb.get((1, cfg.hidden_size), "score.weight")?;
    println!(
        "candle-transformers 0.11.1 qwen3::Model, loaded in {:.2}s, threads {}",
        t0.elapsed().as_secs_f64(),
        candle_core::utils::get_num_threads()
    );
    println!("| tokens | batch | median s | tokens/s |");
    println!("|---:|---:|---:|---:|");
    let mut first_score = None;
    for &len in &lengths {
        let ids: Vec<u32> = (0..batch).flat_map(|r| bench_ids_shared(len, r, cfg.vocab_size, shared)).collect();
        let ids = Tensor::from_vec(ids, (batch, len), &dev)?;
        // A fresh clone per pass: the model keeps a KV cache, and scoring starts from none.
        let run = || -> Result<Vec<Vec<f32>>, candle_core::Error> {
            let mut m = model.clone();
            let h = m.forward(&ids, 0)?;
            h.i((.., len - 1, ..))?.matmul(&score.t()?)?.to_vec2()
        };
        let mut times = Vec::new();
        for i in 0..warmup + iters.max(1) {
            let t = Instant::now();
            run()?;
            if i >= warmup {
                times.push(t.elapsed().as_secs_f64());
            }
            first_score.get_or_insert(t0.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!("| {len} | {batch} | {median:.3} | {:.1} |", (len * batch) as f64 / median);
    }
    if let Some(s) = first_score {
        println!("first score after: {s:.2}s");
    }
    if let Some(m) = peak_rss_mib() {
        println!("peak RSS: {m:.0} MiB");
    }
    Ok(())
}
