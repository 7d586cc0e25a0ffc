//! `rewardlens quantize`: safetensors checkpoint -> one self-contained GGUF, streamed tensor by
//! tensor (positioned reads, no mmap of the whole checkpoint), written to a temporary file that
//! is renamed into place only when complete.

use crate::{source, ModelArgs};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rewardlens_core::ChatTemplate;
use rewardlens_models::files::{CheckpointFiles, WeightFiles};
use rewardlens_models::quantized::{self, QuantType};
use rewardlens_models::st_header::{self, StTensor};
use rewardlens_models::ModelConfig;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The GGUF file to write.
    #[arg(long)]
    out: PathBuf,
    /// q8_0, q4_0, q4_k, q5_k, q6_k or f16.
    #[arg(long = "type", default_value = "q8_0")]
    quant: String,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

/// The tensors of the shard files: where each lives (file, range) and its dtype and shape.
fn tensor_directory(shards: &[PathBuf]) -> Result<Vec<(PathBuf, StTensor)>> {
    let mut out = Vec::new();
    for path in shards {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = f.metadata()?.len();
        let mut first = [0u8; 8];
        f.read_exact_at(&mut first, 0).with_context(|| format!("{}: too short for safetensors", path.display()))?;
        let hlen = st_header::header_len(&first, len).with_context(|| path.display().to_string())?;
        let mut header = vec![0u8; (hlen - 8) as usize];
        f.read_exact_at(&mut header, 8)?;
        for t in st_header::parse_header(&header, len).with_context(|| path.display().to_string())? {
            out.push((path.clone(), t));
        }
    }
    Ok(out)
}

pub fn run(args: QuantizeArgs) -> Result<ExitCode> {
    let qt = QuantType::parse(&args.quant)?;
    if args.out.exists() && !args.force {
        bail!("{} already exists (pass --force to replace it)", args.out.display());
    }
    let dir = source::resolve_dir(&args.model)?;
    let ck = CheckpointFiles::from_dir(&dir)?;
    let config = ModelConfig::from_json(&ck.config_json)?;
    // The effective template goes into the file's tokenizer_config so the GGUF needs nothing else.
    let template = ChatTemplate::from_tokenizer_config(&ck.tokenizer_config_json, ck.chat_template_jinja.as_deref())?;
    let mut tok_cfg: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&ck.tokenizer_config_json)?;
    tok_cfg.insert("chat_template".into(), template.source().into());
    let tokenizer_json = String::from_utf8(ck.tokenizer_json).context("tokenizer.json is not UTF-8")?;

    // from_dir already resolved the single file or the index's shards.
    let directory = match &ck.weights {
        WeightFiles::Paths(shards) => tensor_directory(shards)?,
        WeightFiles::Buffers(_) => bail!("quantize reads checkpoint files from disk"),
    };
    let shapes: Vec<(String, Vec<usize>)> = directory.iter().map(|(_, t)| (t.name.clone(), t.shape.clone())).collect();
    let planned = quantized::plan(&config, &shapes, qt)?;
    let by_name: HashMap<&str, &(PathBuf, StTensor)> = directory.iter().map(|e| (e.1.name.as_str(), e)).collect();
    let name = args.model.model.trim_end_matches('/').rsplit('/').next().unwrap_or("model").to_owned();
    let meta = quantized::metadata(
        &config,
        &ck.config_json,
        &tokenizer_json,
        &serde_json::Value::Object(tok_cfg).to_string(),
        template.source(),
        &name,
        qt,
    );

    let total: u64 = directory.iter().map(|(_, t)| t.end - t.start).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {msg}")
            .expect("template"),
    );
    let parent = args.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile_in(parent, &args.out)?;
    let started = Instant::now();
    let mut open_files: HashMap<PathBuf, File> = HashMap::new();
    let result = (|| -> Result<()> {
        let out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let load = |hf: &str| -> rewardlens_models::Result<Tensor> {
            let (path, t) = by_name[hf];
            let f = match open_files.get(path) {
                Some(f) => f,
                None => {
                    let f = File::open(path).map_err(|e| rewardlens_models::ModelError::Io(e.to_string()))?;
                    open_files.entry(path.clone()).or_insert(f)
                }
            };
            let mut buf = vec![0u8; (t.end - t.start) as usize];
            f.read_exact_at(&mut buf, t.start)
                .map_err(|e| rewardlens_models::ModelError::Io(format!("{}: {e}", path.display())))?;
            Ok(Tensor::from_raw_buffer(&buf, t.dtype, &t.shape, &Device::Cpu)?)
        };
        let w = quantized::write_gguf(out, &meta, &config, &planned, load, |p| {
            if let Some((_, t)) = by_name.get(p.hf_name.as_str()) {
                bar.inc(t.end - t.start);
            }
            bar.set_message(format!("{} -> {:?}", p.gguf_name, p.dtype));
        })?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        bar.abandon();
        return Err(e.context(format!("quantizing {} to {}", args.model.model, args.out.display())));
    }
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), args.out.display()))?;
    bar.finish_and_clear();
    let size = std::fs::metadata(&args.out)?.len();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in &planned {
        *counts.entry(format!("{:?}", p.dtype)).or_default() += 1;
    }
    let mut counts: Vec<String> = counts.into_iter().map(|(k, v)| format!("{v} {k}")).collect();
    counts.sort();
    eprintln!(
        "wrote {} ({:.1} MiB, {} tensors: {}) in {:.1}s",
        args.out.display(),
        size as f64 / (1 << 20) as f64,
        planned.len(),
        counts.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// A fresh temporary path next to `out` (same filesystem, so the final rename is atomic).
fn tempfile_in(dir: &Path, out: &Path) -> Result<PathBuf> {
    let base = out.file_name().and_then(|n| n.to_str()).unwrap_or("model.gguf");
    for i in 0..1000 {
        let p = dir.join(format!(".{base}.tmp-{}-{i}", std::process::id()));
        if !p.exists() {
            return Ok(p);
        }
    }
    bail!("cannot find a free temporary file name in {}", dir.display())
}
