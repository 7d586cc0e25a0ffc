//! What a download may be: the byte caps (from config.json for the weights), the budget each
//! download is counted against as its bytes arrive, and what a failed HTTP answer means.

use super::error::WorkerError;
use crate::protocol::url_host;

/// Largest text file downloaded (config.json, tokenizer_config.json, chat_template.jinja, the
/// shard index): real ones are kilobytes to a few megabytes.
pub const TEXT_FILE_CAP: u64 = 16 << 20;
/// Largest tokenizer.json (the largest real ones are about 35 MB).
pub const TOKENIZER_CAP: u64 = 128 << 20;
/// Largest single file: a download is one JS array read with 32-bit offsets.
pub const FILE_CAP: u64 = u32::MAX as u64;

/// Bytes a checkpoint's safetensors shards may hold in all, from config.json alone: every
/// counted parameter and an untied LM head as large as the embedding (checkpoints converted
/// from a causal LM keep it) in f32, the widest type checkpoints use; a quarter of the
/// parameters more for tensors the count leaves out (other heads, buffers); 64 MiB of headers.
pub fn weights_cap(parameters: u64, embedding: u64) -> u64 {
    parameters.saturating_add(embedding).saturating_mul(4).saturating_add(parameters / 4).saturating_add(64 << 20)
}

/// Most shards a checkpoint of `layers` layers may list: each shard holds a tensor at least,
/// and a layer has at most 16 (projections, biases, norms).
pub fn max_shards(layers: usize) -> usize {
    layers.saturating_mul(16).saturating_add(8)
}

/// One download's bytes against its cap, checked as they arrive: a missing or false
/// Content-Length cannot make the worker hold more than the cap.
#[derive(Debug, Clone)]
pub struct DownloadBudget {
    label: String,
    cap: u64,
    done: u64,
}

impl DownloadBudget {
    pub fn new(label: &str, cap: u64) -> Self {
        Self { label: label.to_owned(), cap: cap.min(FILE_CAP), done: 0 }
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    fn too_large(&self, bytes: u64) -> WorkerError {
        WorkerError::TooLarge(format!(
            "{} is larger than expected ({bytes} bytes, at most {} allowed for it): the server sent more than \
             this model can need, so the download was stopped",
            self.label, self.cap
        ))
    }

    /// Refuses a declared length (Content-Length, or a cached entry's size) over the cap
    /// before any byte is read.
    pub fn declared(&self, len: Option<u64>) -> Result<(), WorkerError> {
        match len {
            Some(n) if n > self.cap => Err(self.too_large(n)),
            _ => Ok(()),
        }
    }

    /// Counts `n` more bytes; an error once the total passes the cap.
    pub fn add(&mut self, n: u64) -> Result<(), WorkerError> {
        self.done = self.done.saturating_add(n);
        if self.done > self.cap {
            return Err(self.too_large(self.done));
        }
        Ok(())
    }
}

/// The error for a required file answered with `status` (not 2xx). `hub`: the token may go to
/// `url` (see `protocol::token_allowed`); `has_token`: the user gave one.
pub fn status_error(url: &str, label: &str, status: u16, status_text: &str, hub: bool, has_token: bool) -> WorkerError {
    match status {
        404 => WorkerError::NotFound(format!(
            "{label} was not found at {url} (HTTP 404): check the repo id, revision and file names"
        )),
        401 | 403 => WorkerError::Unauthorized(if hub && !has_token {
            format!("{url} needs authorization (HTTP {status}): the repo is gated or private. Accept its terms on huggingface.co and enter an access token.")
        } else if hub {
            format!("{url} refused the access token (HTTP {status}): check that it is valid and that you accepted the repo's terms.")
        } else {
            // Not the Hub: no token was sent, and none is asked for (a link's host could
            // otherwise phish for one).
            format!("{url} refused access (HTTP {status}); a Hugging Face token is never sent to {}", url_host(url))
        }),
        _ => WorkerError::Http(format!("{url} answered HTTP {status} {status_text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_stop_at_their_cap() {
        let mut b = DownloadBudget::new("config.json", 10);
        b.declared(Some(10)).unwrap();
        assert!(matches!(b.declared(Some(11)), Err(WorkerError::TooLarge(_))));
        // No Content-Length: the running count stops it.
        b.declared(None).unwrap();
        b.add(6).unwrap();
        b.add(4).unwrap();
        let e = b.add(1).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("11 bytes"), "{e}");
        // Past 4 GiB nothing wraps: the cap never exceeds one JS array's 32-bit offsets.
        let mut big = DownloadBudget::new("model.safetensors", u64::MAX);
        assert_eq!(big.cap(), u32::MAX as u64);
        big.add(u32::MAX as u64).unwrap();
        assert!(big.add(1).is_err());
        assert_eq!(big.done(), (u32::MAX as u64) + 1);
        // The fixture qwen3-seq (9.74M parameters, 9.71M of them the embedding; 19.5 MB in
        // bf16, 39 MB in f32) fits; its copy padded by 200 MiB is refused in the browser test.
        let cap = weights_cap(9_744_448, 9_706_816);
        assert!(cap > 39_000_000 && cap < 200 << 20, "{cap}");
        assert_eq!(max_shards(2), 40);
    }

    #[test]
    fn failed_answers_name_the_file_and_ask_for_a_token_only_on_the_hub() {
        let url = "https://huggingface.co/a/b/resolve/main/config.json";
        let e = status_error(url, "config.json", 404, "Not Found", true, false);
        assert_eq!(e.code(), "not_found");
        assert!(e.to_string().starts_with("config.json was not found at https://huggingface.co/"), "{e}");
        let gated = status_error(url, "config.json", 401, "", true, false).to_string();
        assert!(gated.contains("enter an access token"), "{gated}");
        let refused = status_error(url, "config.json", 403, "", true, true).to_string();
        assert!(refused.contains("refused the access token"), "{refused}");
        // Another host is never asked for a token.
        let other = status_error("https://evil.example/m/config.json", "config.json", 401, "", false, false);
        assert_eq!(other.code(), "unauthorized");
        assert!(other.to_string().contains("never sent to https://evil.example"), "{other}");
        let e = status_error(url, "config.json", 500, "Internal Server Error", true, false);
        assert_eq!((e.code(), e.to_string()), ("http", format!("{url} answered HTTP 500 Internal Server Error")));
    }
}
