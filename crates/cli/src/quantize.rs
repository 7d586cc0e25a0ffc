//! `rewardlens quantize`: safetensors checkpoint -> one self-contained GGUF, streamed tensor by
//! tensor (positioned reads, no mmap of the whole checkpoint), written to a temporary file that
//! is renamed into place only when complete. The temporary file has an unpredictable name and is
//! created exclusively (never through a planted symlink), and is removed on any error, on panic
//! and on Ctrl-C.

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
    let (_interrupt, tmp) = RemoveOnInterrupt::create(|| create_temp(parent, &args.out))?;
    let started = Instant::now();
    let mut open_files: HashMap<PathBuf, File> = HashMap::new();
    let result = (|| -> Result<()> {
        let out = BufWriter::with_capacity(1 << 20, tmp.as_file());
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
        drop(tmp); // removes it
        bar.abandon();
        return Err(e.context(format!("quantizing {} to {}", args.model.model, args.out.display())));
    }
    let tmp_path = tmp.path().to_owned();
    // Without --force, never replace a file that appeared meanwhile.
    let persisted = if args.force { tmp.persist(&args.out) } else { tmp.persist_noclobber(&args.out) };
    persisted
        .map_err(|e| e.error)
        .with_context(|| format!("renaming {} to {}", tmp_path.display(), args.out.display()))?;
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

/// A new temporary file next to `out` (same filesystem, so the final rename is atomic): a random
/// name, created with O_EXCL so a symlink or file already there is never followed or reused,
/// and removed when dropped unless persisted.
fn create_temp(dir: &Path, out: &Path) -> Result<tempfile::NamedTempFile> {
    let base = out.file_name().and_then(|n| n.to_str()).unwrap_or("model.gguf");
    tempfile::Builder::new()
        .prefix(&format!(".{base}."))
        .suffix(".tmp")
        // As File::create: 0666 less the umask (tempfile's default 0600 would carry over to OUT).
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

/// Removes the temporary file if the process is interrupted (Ctrl-C / SIGINT), where no drop
/// runs, then exits with 130 as the default handler would.
struct RemoveOnInterrupt {
    path: std::sync::Arc<std::sync::Mutex<Option<PathBuf>>>,
}

impl RemoveOnInterrupt {
    /// Arms the handler, then runs `create` (which makes the temporary file) holding the lock
    /// the handler takes: an interrupt at any moment finds either no file yet or its path (the
    /// handler used to be armed after the file existed, and a SIGINT in between left it).
    fn create(create: impl FnOnce() -> Result<tempfile::NamedTempFile>) -> Result<(Self, tempfile::NamedTempFile)> {
        let this = Self::arm();
        let mut slot = this.path.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = create()?;
        *slot = Some(tmp.path().to_owned());
        drop(slot);
        Ok((this, tmp))
    }

    fn arm() -> Self {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(None::<PathBuf>));
        let watched = shared.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            // Register the handler before returning, so no SIGINT after this can be missed.
            let signal =
                rt.block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) });
            if let Ok(mut signal) = signal {
                std::thread::spawn(move || {
                    rt.block_on(signal.recv());
                    if let Some(p) = watched.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = std::fs::remove_file(&p);
                    }
                    eprintln!("interrupted");
                    std::process::exit(130);
                });
            }
        }
        Self { path: shared }
    }
}

impl Drop for RemoveOnInterrupt {
    /// Disarms the handler (the file was persisted or removed).
    fn drop(&mut self) {
        self.path.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_never_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim_dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.gguf");
        // Dangling symlinks at every name the old scheme (`.{name}.tmp-{pid}-{i}`) would pick.
        for i in 0..1000 {
            let link = dir.path().join(format!(".m.gguf.tmp-{}-{i}", std::process::id()));
            std::os::unix::fs::symlink(victim_dir.path().join(format!("victim-{i}")), link).unwrap();
        }
        let mut tmp = create_temp(dir.path(), &out).unwrap();
        std::io::Write::write_all(&mut tmp, b"data").unwrap();
        let path = tmp.path().to_owned();
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_dir(victim_dir.path()).unwrap().count(), 0, "nothing written through a link");
        drop(tmp);
        assert!(!path.exists(), "removed when dropped");
    }
}
