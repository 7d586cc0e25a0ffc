//! The worker's failures as one enum, turned into the protocol's [`UserError`] (a stable `code`
//! and a message for people) once, where a job's outcome is posted to the page.

use crate::protocol::UserError;
use rewardlens_models::ModelError;

/// Why a job failed (or stopped). Callers match on the variant, never on the message.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The page cancelled the job: answered with `Cancelled`, not `Failed`.
    #[error("cancelled")]
    Cancelled,
    /// A Hub repo id, revision or mirror URL the worker refuses.
    #[error("{0}")]
    BadSource(String),
    /// A job that needs a model came before any load (`load a model before scoring`).
    #[error("load a model before {0}")]
    NoModel(&'static str),
    /// Nothing to score.
    #[error("{0}")]
    NoInput(&'static str),
    /// The engine refused the model or the input; its code follows the kind (see [`model_code`]).
    #[error("{}", model_message(.0))]
    Model(#[from] ModelError),
    /// A file that is not what it should be (not UTF-8, not a GGUF, too many shards).
    #[error("{0}")]
    Corrupted(String),
    /// A tokenizer config or chat template that cannot be read.
    #[error("{0}")]
    BadConfig(String),
    /// Picked files without a file a checkpoint needs.
    #[error("{0}")]
    MissingFiles(String),
    /// A picked file the browser could not read.
    #[error("{0}")]
    File(String),
    /// More bytes than the tab can hold, or than the model can need.
    #[error("{0}")]
    TooLarge(String),
    /// HTTP 404 for a required file.
    #[error("{0}")]
    NotFound(String),
    /// HTTP 401/403.
    #[error("{0}")]
    Unauthorized(String),
    /// Any other HTTP error status, or an empty body.
    #[error("{0}")]
    Http(String),
    /// The request failed, broke off, or sent other than it announced.
    #[error("{0}")]
    Network(String),
    /// A Cache Storage entry could not be read.
    #[error("{0}")]
    Cache(String),
    /// WebGPU is missing where it was required, or failed.
    #[error("{0}")]
    Gpu(String),
    /// A sequence's steps or token scores could not be computed (its score stands).
    #[error("{0}")]
    Steps(String),
    /// Remote scoring is misconfigured, or asked for what only a model in this tab can do.
    #[error("{0}")]
    Remote(String),
    /// The remote endpoint failed; `code` is its client's (`network`, `timeout`, `http`, ...).
    #[error("{message}")]
    Endpoint { code: &'static str, message: String },
    /// The multi-worker pipeline failed.
    #[error("{0}")]
    Engine(String),
    /// A pipeline stage worker crashed: the model is loaded again before the next job.
    #[error("{0}")]
    WorkerCrashed(String),
    /// A benchmark row that cannot be read or scored (named in the message).
    #[error("{0}")]
    Benchmark(String),
    /// An image that cannot go to the endpoint (not an image, a path, a failed download).
    #[error("{0}")]
    Image(String),
    /// A failure a pipeline stage reported with its own code (the stage messages carry it).
    #[error("{}", .0.message)]
    Stage(UserError),
}

pub type Res<T> = Result<T, WorkerError>;

/// The code of a model error: what the page and the component can act on.
pub fn model_code(e: &ModelError) -> &'static str {
    match e {
        ModelError::UnsupportedArchitecture(_) => "unsupported_architecture",
        ModelError::Config(_) => "bad_config",
        ModelError::MissingTensor { .. } | ModelError::TensorShape { .. } | ModelError::Weights(_) => "corrupted",
        ModelError::InputTooLong { .. } => "too_long",
        ModelError::Images { .. } => "images",
        _ => "engine",
    }
}

fn model_message(e: &ModelError) -> String {
    match model_code(e) {
        "corrupted" => format!(
            "the model files are damaged or incomplete: {e}. Clear the cache and load again, or check the files."
        ),
        _ => e.to_string(),
    }
}

impl WorkerError {
    /// The stable code the page, the component and the tests match on.
    pub fn code(&self) -> &str {
        match self {
            Self::Cancelled => "cancelled",
            Self::BadSource(_) => "bad_source",
            Self::NoModel(_) => "no_model",
            Self::NoInput(_) => "no_input",
            Self::Model(e) => model_code(e),
            Self::Corrupted(_) => "corrupted",
            Self::BadConfig(_) => "bad_config",
            Self::MissingFiles(_) => "missing_files",
            Self::File(_) => "file",
            Self::TooLarge(_) => "too_large",
            Self::NotFound(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Http(_) => "http",
            Self::Network(_) => "network",
            Self::Cache(_) => "cache",
            Self::Gpu(_) => "webgpu",
            Self::Steps(_) => "steps",
            Self::Remote(_) => "remote",
            Self::Endpoint { code, .. } => code,
            Self::Engine(_) => "engine",
            Self::WorkerCrashed(_) => "worker_crashed",
            Self::Benchmark(_) => "benchmark",
            Self::Image(_) => "image",
            Self::Stage(e) => &e.code,
        }
    }

    /// The error as the page receives it.
    pub fn to_user(&self) -> UserError {
        UserError::new(self.code(), self.to_string())
    }
}

impl From<WorkerError> for UserError {
    fn from(e: WorkerError) -> Self {
        e.to_user()
    }
}

#[cfg(target_arch = "wasm32")]
impl From<rewardlens_gpu::GpuError> for WorkerError {
    fn from(e: rewardlens_gpu::GpuError) -> Self {
        Self::Gpu(format!("WebGPU: {e}"))
    }
}

#[cfg(target_arch = "wasm32")]
impl From<rewardlens_remote::RemoteError> for WorkerError {
    fn from(e: rewardlens_remote::RemoteError) -> Self {
        Self::Endpoint { code: e.code(), message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_errors_keep_their_codes_and_damaged_files_say_what_to_do() {
        let cases = [
            (ModelError::UnsupportedArchitecture("Foo".into()), "unsupported_architecture"),
            (ModelError::Config("no hidden_size".into()), "bad_config"),
            (ModelError::MissingTensor { name: "lm_head".into() }, "corrupted"),
            (ModelError::TensorShape { name: "w".into(), expected: vec![2], actual: vec![3] }, "corrupted"),
            (ModelError::Weights("short".into()), "corrupted"),
            (ModelError::InputTooLong { tokens: 9, limit: 8 }, "too_long"),
            (ModelError::Images { count: 1, message: 1 }, "images"),
            (ModelError::EmptyInput, "engine"),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let u = WorkerError::from(e).to_user();
            assert_eq!(u.code, code, "{text}");
            if code == "corrupted" {
                assert!(u.message.starts_with("the model files are damaged or incomplete: "), "{}", u.message);
                assert!(u.message.contains(&text) && u.message.ends_with("or check the files."), "{}", u.message);
            } else {
                assert_eq!(u.message, text);
            }
        }
    }

    #[test]
    fn every_variant_maps_to_its_protocol_code() {
        let s = || "why".to_string();
        let cases = [
            (WorkerError::Cancelled, "cancelled", "cancelled"),
            (WorkerError::BadSource(s()), "bad_source", "why"),
            (WorkerError::NoModel("scoring"), "no_model", "load a model before scoring"),
            (WorkerError::NoInput("add at least one response"), "no_input", "add at least one response"),
            (WorkerError::Corrupted(s()), "corrupted", "why"),
            (WorkerError::BadConfig(s()), "bad_config", "why"),
            (WorkerError::MissingFiles(s()), "missing_files", "why"),
            (WorkerError::File(s()), "file", "why"),
            (WorkerError::TooLarge(s()), "too_large", "why"),
            (WorkerError::NotFound(s()), "not_found", "why"),
            (WorkerError::Unauthorized(s()), "unauthorized", "why"),
            (WorkerError::Http(s()), "http", "why"),
            (WorkerError::Network(s()), "network", "why"),
            (WorkerError::Cache(s()), "cache", "why"),
            (WorkerError::Gpu(s()), "webgpu", "why"),
            (WorkerError::Steps(s()), "steps", "why"),
            (WorkerError::Remote(s()), "remote", "why"),
            (WorkerError::Endpoint { code: "timeout", message: s() }, "timeout", "why"),
            (WorkerError::Engine(s()), "engine", "why"),
            (WorkerError::WorkerCrashed(s()), "worker_crashed", "why"),
            (
                WorkerError::Stage(UserError::new("corrupted", "pipeline stage 1: why")),
                "corrupted",
                "pipeline stage 1: why",
            ),
        ];
        for (e, code, message) in cases {
            assert_eq!(UserError::from(e), UserError::new(code, message));
        }
    }
}
