//! Scoring on a remote endpoint (vLLM, NIM, OpenRLHF, TEI): chosen, or because the model
//! cannot run in this tab.

use super::download::TEXT_FILE_CAP;
use super::error::{Res, WorkerError};
use super::queue::{Auth, Engine, Loaded};
use super::scorer::Scorer;
use super::shape::remote_info;
use crate::protocol::{is_gguf_name, ModelSource, RemoteSettings};
use rewardlens_core::ChatTemplate;
use rewardlens_models::files;
use rewardlens_remote::{Protocol, RemoteConfig, RemoteScorer};

impl Engine {
    /// Scoring on a remote endpoint (chosen, or because the model cannot run here). Protocols
    /// that take rendered text use the model's chat template when its source has one.
    pub(super) async fn load_remote(
        &self,
        id: u64,
        source: &ModelSource,
        r: &RemoteSettings,
        reason: Option<String>,
        auth: Auth<'_>,
    ) -> Res<Loaded> {
        let protocol = Protocol::parse_name(&r.protocol).map_err(WorkerError::Remote)?;
        let mut cfg = RemoteConfig::new(r.endpoint.trim(), protocol);
        cfg.model = Some(r.model.trim().to_owned()).filter(|m| !m.is_empty());
        cfg.api_key = Some(r.api_key.trim().to_owned()).filter(|k| !k.is_empty());
        cfg.timeout = std::time::Duration::from_secs(120);
        let client = RemoteScorer::new(cfg).map_err(|e| WorkerError::Remote(e.to_string()))?;
        let template = if protocol.takes_chat() {
            None
        } else {
            let base = source.base_url(auth.hub).filter(|b| !is_gguf_name(b)).ok_or_else(|| {
                WorkerError::Remote(format!(
                    "the {} protocol takes text rendered with the model's chat template; choose a Hub repo or folder URL as the model, or the vllm/nim protocol",
                    protocol.name()
                ))
            })?;
            let mut stats = (0, 0);
            let cfg_text = self
                .fetch(
                    id,
                    &format!("{base}{}", files::TOKENIZER_CONFIG),
                    files::TOKENIZER_CONFIG,
                    auth,
                    false,
                    TEXT_FILE_CAP,
                    &mut stats,
                )
                .await?
                .expect("required");
            let jinja = self
                .fetch(
                    id,
                    &format!("{base}{}", files::CHAT_TEMPLATE),
                    files::CHAT_TEMPLATE,
                    auth,
                    true,
                    TEXT_FILE_CAP,
                    &mut stats,
                )
                .await?
                .map(|b| String::from_utf8_lossy(&b.to_vec()).into_owned());
            let text = String::from_utf8_lossy(&cfg_text.to_vec()).into_owned();
            Some(
                ChatTemplate::from_tokenizer_config(&text, jinja.as_deref())
                    .map_err(|e| WorkerError::BadConfig(e.to_string()))?,
            )
        };
        let backend = format!("Remote ({} at {})", protocol.name(), client.url());
        Ok(Loaded { info: remote_info(source, backend, reason), scorer: Scorer::Remote { client, template } })
    }
}
