//! `rewardlens random-model` (hidden, for tests and benchmarks): writes a checkpoint with
//! deterministic random weights for any supported config, with transformers' tensor names, so
//! quantization accuracy and speed can be measured on real shapes without downloading weights
//! or running Python.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use rewardlens_models::plan;
use rewardlens_models::ModelConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RandomModelArgs {
    /// config.json of the model shape to generate.
    #[arg(long)]
    config: PathBuf,
    /// Folder with tokenizer.json and tokenizer_config.json to copy next to the weights.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// splitmix64 + Box-Muller: reproducible normals without a rand dependency.
struct Normal(u64);

impl Normal {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn sample(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    fn tensor(&mut self, shape: &[usize], mean: f32, std: f32) -> Result<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| mean + std * self.sample()).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(DType::BF16)?)
    }
}

pub fn run(args: RandomModelArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config).with_context(|| args.config.display().to_string())?;
    let c = ModelConfig::from_json(&text)?;
    let mut rng = Normal(args.seed);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    // Every tensor the model reads, named and shaped by the plan every backend loads from, drawn
    // in a fixed order (linear layers, then norms, per layer) so a seed keeps giving the same
    // model: the quantization bounds in the tests were measured on these weights.
    let mut draw = |name: String, shape: Vec<usize>| -> Result<()> {
        let (mean, std) = match shape[..] {
            _ if name.ends_with(".bias") => (0.0, 0.02),
            // Norm weights near 1.
            [_] => (1.0, 0.1),
            _ if name == plan::EMBEDDING => (0.0, 1.0),
            // Scale 1/sqrt(fan_in) keeps activations of a random deep stack in range.
            [_, inp] => (0.0, 1.0 / (inp as f32).sqrt()),
            _ => anyhow::bail!("{name}: unexpected shape {shape:?}"),
        };
        t.insert(name, rng.tensor(&shape, mean, std)?);
        Ok(())
    };
    let linear = |l: &plan::LinearWeights, draw: &mut dyn FnMut(String, Vec<usize>) -> Result<()>| {
        draw(l.weight(), vec![l.out, l.inp])?;
        match l.bias_name() {
            Some(b) => draw(b, vec![l.out]),
            None => Ok(()),
        }
    };
    draw(plan::EMBEDDING.into(), vec![c.vocab_size, c.hidden_size])?;
    for i in 0..c.num_hidden_layers {
        let l = plan::LayerWeights::new(&c, i);
        for w in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
            linear(w, &mut draw)?;
        }
        for n in [&l.q_norm, &l.k_norm].into_iter().flatten().chain([&l.input_norm, &l.post_norm]) {
            draw(n.weight(), vec![n.size])?;
        }
    }
    let norm = plan::final_norm(&c);
    draw(norm.weight(), vec![norm.size])?;
    for l in plan::score_layers(&c) {
        linear(&l, &mut draw)?;
    }
    if c.architecture.score == rewardlens_models::ScoreHead::LmHeadRows {
        draw(plan::lm_head_table(&c).into(), vec![c.vocab_size, c.hidden_size])?;
    }
    // The plan's list is what loading reads: nothing missing, nothing extra.
    let wanted = plan::tensors(&c, 0..c.num_hidden_layers);
    anyhow::ensure!(
        wanted.len() == t.len() && wanted.iter().all(|(n, s)| t.get(n).is_some_and(|x| x.dims() == s.as_slice())),
        "random-model drew other tensors than the plan lists"
    );

    std::fs::create_dir_all(&args.out)?;
    candle_core::safetensors::save(&t, args.out.join("model.safetensors"))?;
    std::fs::write(args.out.join("config.json"), text)?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(args.tokenizer.join(f), args.out.join(f)).with_context(|| format!("copying {f}"))?;
    }
    eprintln!("wrote {} ({} tensors)", args.out.display(), t.len());
    Ok(ExitCode::SUCCESS)
}
