//! Resolving `--model` to checkpoint files: a local folder, or a Hub repo downloaded into the
//! standard Hugging Face cache (`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` respected).

use crate::{DeviceArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rewardlens_gpu::{Gpu, GpuRewardModel, WeightFormat};
use rewardlens_models::files::{self, CheckpointFiles};
use rewardlens_models::gguf::GgufFile;
use rewardlens_models::linear::{with_kernel, LinearKernel, ScaleLayout};
use rewardlens_models::quantized::GgufWeights;
use rewardlens_models::{CheckpointText, InputEncoder, RewardModel};
use std::path::PathBuf;

/// The local folder of a checkpoint: the path given, or the Hub snapshot after download.
pub fn resolve_dir(args: &ModelArgs) -> Result<PathBuf> {
    match args.local_path() {
        Some(p) if p.is_dir() => Ok(p),
        Some(p) => bail!("{} is a file, not a checkpoint folder", p.display()),
        None => download(&args.model, &args.revision),
    }
}

/// Whether `path` is a GGUF file (by its magic, not its name).
fn is_gguf(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file() && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"GGUF"
}

/// The Candle device named on the command line.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::new_cuda(0)?),
        #[cfg(not(feature = "cuda"))]
        "cuda" => bail!(
            "this rewardlens was built without CUDA: build it with `cargo build --release -p rewardlens-cli --features cuda` (needs the CUDA toolkit)"
        ),
        other => bail!("unknown --device `{other}` (cpu, gpu, auto or cuda)"),
    }
}

fn weight_format(name: &str) -> Result<WeightFormat> {
    Ok(match name {
        "f32" => WeightFormat::F32,
        "f16" => WeightFormat::F16,
        "q8_0" => WeightFormat::Q8_0,
        "q4_0" => WeightFormat::Q4_0,
        other => bail!("unknown --gpu-weights `{other}` (f32, f16, q8_0 or q4_0)"),
    })
}

/// What runs the forward pass: `--device gpu` insists on a GPU; `auto` takes a hardware one
/// (a software adapter such as lavapipe is slower than the CPU engine) and says why it did not.
enum Target {
    Gpu(Box<Gpu>),
    Candle(Device),
}

fn target(args: &DeviceArgs) -> Result<Target> {
    match args.device.as_str() {
        "gpu" => {
            let gpu = Gpu::new_blocking().context("--device gpu")?;
            Ok(Target::Gpu(Box::new(gpu)))
        }
        "auto" => match Gpu::new_blocking() {
            Ok(gpu) if !gpu.software => Ok(Target::Gpu(Box::new(gpu))),
            Ok(gpu) => {
                eprintln!(
                    "--device auto: {} is a software adapter, slower than the CPU engine: using the CPU",
                    gpu.adapter
                );
                Ok(Target::Candle(Device::Cpu))
            }
            Err(e) => {
                eprintln!("--device auto: {e}: using the CPU");
                Ok(Target::Candle(Device::Cpu))
            }
        },
        other => Ok(Target::Candle(device(other)?)),
    }
}

fn gguf_tokenizer(args: &ModelArgs) -> Result<Option<(Vec<u8>, String)>> {
    let Some(dir) = &args.tokenizer else { return Ok(None) };
    Ok(Some((
        std::fs::read(dir.join(files::TOKENIZER))
            .with_context(|| format!("reading {}/tokenizer.json", dir.display()))?,
        std::fs::read_to_string(dir.join(files::TOKENIZER_CONFIG))
            .with_context(|| format!("reading {}/tokenizer_config.json", dir.display()))?,
    )))
}

/// The Hub commit of a downloaded checkpoint: hf-hub names each snapshot folder after it. None
/// for a local folder or file.
pub fn hub_commit(args: &ModelArgs, dir: &std::path::Path) -> Option<String> {
    if args.local_path().is_some() || dir.parent()?.file_name()? != "snapshots" {
        return None;
    }
    Some(dir.file_name()?.to_string_lossy().into_owned())
}

/// Loads the model named by `args`: a checkpoint folder, a GGUF file, or a Hub repo id, onto
/// the device `--device` names.
pub fn load_model(args: &ModelArgs) -> Result<RewardModel> {
    load_model_and_commit(args).map(|(m, _)| m)
}

/// [`load_model`], and the Hub commit it loaded when `args` names a Hub repo.
pub fn load_model_and_commit(args: &ModelArgs) -> Result<(RewardModel, Option<String>)> {
    let mut commit = None;
    let format = weight_format(&args.device.gpu_weights)?;
    let target = target(&args.device)?;
    let gguf = args.local_path().filter(|p| p.is_file());
    if let Some(p) = &gguf {
        if !is_gguf(p) {
            bail!("{}: not a GGUF file and not a checkpoint folder", p.display());
        }
    }
    let what = gguf.as_ref().map_or_else(|| args.model.clone(), |p| p.display().to_string());
    let kernel = q8_kernel(args.device.q8_kernel.as_deref())?;
    let model = match (target, gguf) {
        (Target::Candle(device), Some(p)) => {
            let (file, tokenizer) = (GgufFile::open(&p)?, gguf_tokenizer(args)?);
            with_kernel(kernel, || RewardModel::from_gguf(file, tokenizer, &device))
        }
        (Target::Candle(device), None) => {
            let dir = resolve_dir(args)?;
            commit = hub_commit(args, &dir);
            let files = CheckpointFiles::from_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
            with_kernel(kernel, || RewardModel::load(files, &device))
        }
        (Target::Gpu(gpu), Some(p)) => {
            let file = GgufFile::open(&p)?;
            let (config, inputs) = InputEncoder::from_gguf(&file, gguf_tokenizer(args)?)?;
            let weights = GgufWeights::new(file, config.clone());
            let model = GpuRewardModel::load(*gpu, config, &weights, format)?;
            Ok(RewardModel::new(Box::new(model), inputs))
        }
        (Target::Gpu(gpu), None) => {
            let dir = resolve_dir(args)?;
            commit = hub_commit(args, &dir);
            let files = CheckpointFiles::from_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
            let text = CheckpointText {
                config_json: &files.config_json,
                tokenizer_json: &files.tokenizer_json,
                tokenizer_config_json: &files.tokenizer_config_json,
                chat_template_jinja: files.chat_template_jinja.as_deref(),
            };
            let (config, inputs) = InputEncoder::from_checkpoint(&text)?;
            let model = GpuRewardModel::load(*gpu, config, &files.weights.open()?, format)?;
            Ok(RewardModel::new(Box::new(model), inputs))
        }
    };
    Ok((model.with_context(|| format!("loading {what}"))?, commit))
}

/// `--q8-kernel`: how the CPU multiplies Q8_0 weights.
fn q8_kernel(name: Option<&str>) -> Result<LinearKernel> {
    Ok(match name {
        None => LinearKernel::default_for_build(),
        Some("int8") => LinearKernel::Int8(ScaleLayout::PerGroup(32)),
        Some("int8-channel") => LinearKernel::Int8(ScaleLayout::PerChannel),
        Some("candle") => LinearKernel::Candle,
        Some(other) => bail!("--q8-kernel {other}: expected int8, int8-channel or candle"),
    })
}

pub(crate) fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Fetches the files of a Hub repo (or finds them in the cache) and returns the snapshot folder.
/// The folder of a served model's text files (for `--template`): a local folder as is, or its
/// chat template, tokenizer and config from the Hub — never its weights, which may be hundreds
/// of gigabytes for a model that runs on the endpoint anyway.
pub fn resolve_text_dir(args: &ModelArgs) -> Result<PathBuf> {
    match args.local_path() {
        Some(p) if p.is_dir() => Ok(p),
        Some(p) => bail!("{} is a file, not a folder with the model's tokenizer_config.json", p.display()),
        None => {
            let repo = hub_repo(&args.model, &args.revision)?;
            let config = repo.get(files::TOKENIZER_CONFIG).with_context(|| {
                format!("downloading {} from {}@{}", files::TOKENIZER_CONFIG, args.model, args.revision)
            })?;
            // Optional: for step rewards (config and tokenizer) and newer repos' template file.
            for name in [files::CONFIG, files::TOKENIZER, files::CHAT_TEMPLATE] {
                let _ = repo.get(name);
            }
            Ok(config.parent().expect("a cached file has a folder").to_path_buf())
        }
    }
}

fn hub_repo(repo_id: &str, revision: &str) -> Result<hf_hub::api::sync::ApiRepo> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    if !looks_like_repo_id(repo_id) {
        bail!("--model {repo_id}: no such folder, and not a Hub repo id of the form owner/name");
    }
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let mut builder = ApiBuilder::from_env().with_progress(true);
    if token.is_some() {
        builder = builder.with_token(token);
    }
    let api = builder.build().context("setting up the Hugging Face Hub client")?;
    Ok(api.repo(Repo::with_revision(repo_id.to_owned(), RepoType::Model, revision.to_owned())))
}

fn download(repo_id: &str, revision: &str) -> Result<PathBuf> {
    let repo = hub_repo(repo_id, revision)?;
    let get = |name: &str| repo.get(name).with_context(|| format!("downloading {name} from {repo_id}@{revision}"));
    let config = get(files::CONFIG)?;
    get(files::TOKENIZER)?;
    get(files::TOKENIZER_CONFIG)?;
    // Optional: newer repos keep the template in its own file.
    let _ = repo.get(files::CHAT_TEMPLATE);
    match repo.get(files::WEIGHTS_INDEX) {
        Ok(index) => {
            let text = std::fs::read_to_string(&index)?;
            for shard in files::shard_names(&text)? {
                get(&shard)?;
            }
        }
        Err(_) => {
            get(files::SINGLE_WEIGHTS)?;
        }
    }
    Ok(config.parent().expect("a cached file has a folder").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_kernel_names_are_checked() {
        assert_eq!(q8_kernel(Some("candle")).unwrap(), LinearKernel::Candle);
        assert_eq!(q8_kernel(Some("int8")).unwrap(), LinearKernel::Int8(ScaleLayout::PerGroup(32)));
        assert_eq!(q8_kernel(Some("int8-channel")).unwrap(), LinearKernel::Int8(ScaleLayout::PerChannel));
        assert_eq!(q8_kernel(None).unwrap(), LinearKernel::default_for_build());
        let err = q8_kernel(Some("avx512")).unwrap_err().to_string();
        assert!(err.contains("--q8-kernel avx512") && err.contains("int8, int8-channel or candle"), "{err}");
    }

    #[test]
    fn repo_ids() {
        assert!(super::looks_like_repo_id("Skywork/Skywork-Reward-V2-Qwen3-0.6B"));
        assert!(!super::looks_like_repo_id("a/b/c"));
        assert!(!super::looks_like_repo_id("../x"));
        assert!(!super::looks_like_repo_id("model"));
    }
}
