//! Resolving `--model` to checkpoint files: a local folder, or a Hub repo downloaded into the
//! standard Hugging Face cache (`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` respected).

use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rewardlens_models::files::{self, CheckpointFiles};
use rewardlens_models::RewardModel;
use std::path::PathBuf;

/// Loads the model named by `args`.
pub fn load_model(args: &ModelArgs) -> Result<RewardModel> {
    let dir = match args.local_path() {
        Some(p) => p,
        None => download(&args.model, &args.revision)?,
    };
    let files = CheckpointFiles::from_dir(&dir).with_context(|| format!("loading {}", dir.display()))?;
    RewardModel::load(files, &Device::Cpu).with_context(|| format!("loading {}", args.model))
}

fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Fetches the files of a Hub repo (or finds them in the cache) and returns the snapshot folder.
fn download(repo_id: &str, revision: &str) -> Result<PathBuf> {
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
    let repo = api.repo(Repo::with_revision(repo_id.to_owned(), RepoType::Model, revision.to_owned()));
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
    #[test]
    fn repo_ids() {
        assert!(super::looks_like_repo_id("Skywork/Skywork-Reward-V2-Qwen3-0.6B"));
        assert!(!super::looks_like_repo_id("a/b/c"));
        assert!(!super::looks_like_repo_id("../x"));
        assert!(!super::looks_like_repo_id("model"));
    }
}
