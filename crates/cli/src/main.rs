//! The `rewardlens` command line: batch JSONL scoring (local or through a remote endpoint),
//! quantization, benchmarks, and `serve`.

mod argilla;
mod backend;
mod bench;
mod compare;
mod eval;
mod images;
mod jsonl;
mod merge;
mod quantize;
mod random_model;
mod serve;
mod source;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "rewardlens", version, about = "Score LLM answers with reward models")]
struct Cli {
    /// Worker threads for the tensor math (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a JSONL file of conversations, responses or preference pairs.
    Score(jsonl::ScoreArgs),
    /// Evaluate a reward model on RewardBench 1 or 2, RM-Bench or ProcessBench, as their
    /// reference code counts.
    Eval(eval::EvalArgs),
    /// Measure scoring speed and peak memory on random token ids.
    Bench(bench::BenchArgs),
    /// Write a checkpoint as one self-contained, quantized GGUF file.
    Quantize(quantize::QuantizeArgs),
    /// Serve models over vLLM-, OpenRLHF-, NIM- and TEI-compatible HTTP APIs.
    Serve(serve::ServeArgs),
    /// Join the outputs of `score --shard I/N` runs back in input order.
    Merge(merge::MergeArgs),
    /// Write a reward model's suggestions (ranking, best label or rating) to an Argilla dataset.
    Argilla(argilla::ArgillaArgs),
    /// Compare two scorings of the same input: score error and rank/pair agreement.
    Compare(compare::CompareArgs),
    /// Write a checkpoint with deterministic random weights (tests and benchmarks).
    #[command(hide = true)]
    RandomModel(random_model::RandomModelArgs),
}

/// A model given as a local folder or a Hugging Face Hub repo id.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A checkpoint folder, or a Hub repo id such as Skywork/Skywork-Reward-V2-Qwen3-0.6B.
    #[arg(long)]
    pub model: String,
    /// Hub revision (branch, tag or commit).
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// For a GGUF without an embedded tokenizer (llama.cpp's): the folder holding the model's
    /// tokenizer.json and tokenizer_config.json.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Where local math runs.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// cpu; gpu (our WGSL kernels through wgpu: Vulkan, Metal or DX12); auto (a hardware GPU
    /// when wgpu finds one, else the CPU, saying why); or cuda (Candle's CUDA backend, needs a
    /// build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How the GPU holds the weight matrices: f32, f16, q8_0 or q4_0 (dequantized in the kernels).
    #[arg(long, default_value = "f16")]
    pub gpu_weights: String,
    /// How the CPU multiplies 8-bit (Q8_0) weights: int8 (rewardlens-kernels: bf16 AMX, int8
    /// AMX, AVX-512 VNNI, AVX-VNNI or AVX2, whichever the CPU has, else portable code, on Q8_0's
    /// own 32-value scales), int8-channel (the same kernels on the weights requantized to one
    /// scale per output channel: faster, less accurate) or candle (Candle's quantized matmul).
    /// Default: int8 where one of its SIMD microkernels runs, else candle (see
    /// docs/PERFORMANCE.md).
    #[arg(long)]
    pub q8_kernel: Option<String>,
}

impl Default for DeviceArgs {
    fn default() -> Self {
        Self { device: "cpu".into(), gpu_weights: "f16".into(), q8_kernel: None }
    }
}

impl ModelArgs {
    pub fn local_path(&self) -> Option<PathBuf> {
        let p = PathBuf::from(&self.model);
        p.exists().then_some(p)
    }
}

/// Candle's barrier pool: how long its workers spin before parking (read when the pool starts).
const CANDLE_SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // Read by candle's CPU kernels when they first run, so set before any model work.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if std::env::var_os(CANDLE_SPIN).is_none() {
        // Candle runs its elementwise ops (residual adds, dtype casts) on its own pool, whose
        // workers spin 25,000 rounds after every op before sleeping: with a thread per core they
        // then hold a core the next matmul's threads need (64-token passes 25% slower on 2 cores;
        // docs/PERFORMANCE.md). Sleep at once instead; set the variable to keep Candle's default.
        std::env::set_var(CANDLE_SPIN, "0");
    }
    let result: Result<ExitCode> = match cli.command {
        Command::Score(args) => jsonl::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Argilla(args) => argilla::run(args),
        Command::Serve(args) => serve::run(args),
        Command::RandomModel(args) => random_model::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
