//! What scores a loaded model — the CPU engine, WebGPU, the multi-worker pipeline or a remote
//! endpoint — behind one set of methods, so the jobs never ask which one it is.

use super::error::{Res, WorkerError};
use super::grouping::{self, Batch, GPU_BATCH};
use super::shape::{remote_result, sequence_result, RunsOn};
use crate::protocol::SequenceResult;
use rewardlens_core::{ChatTemplate, Message};
use rewardlens_gpu::GpuRewardModel;
use rewardlens_models::{ConversationScore, EncodedInput, InputEncoder, LengthPolicy, ModelConfig, RewardModel};
use rewardlens_remote::{RemoteInput, RemoteScorer};

/// Names the worker build that runs (index.html picks it): results and model info show it.
pub const BACKEND: &str =
    if cfg!(target_feature = "relaxed-simd") { "WASM CPU (simd128 + relaxed-simd)" } else { "WASM CPU (simd128)" };

/// A cancel check polled while a job waits (the pipeline).
pub(super) type CancelCheck<'a> = &'a dyn Fn() -> Res<()>;

/// What scores: the engine here, or a remote endpoint.
// One per loaded model, behind an Rc: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Scorer {
    Local(RewardModel),
    /// Our WGSL kernels on the browser's WebGPU; inputs are encoded here, on the CPU.
    WebGpu {
        inputs: InputEncoder,
        model: GpuRewardModel,
    },
    Remote {
        client: RemoteScorer,
        template: Option<ChatTemplate>,
    },
    /// The CPU engine split over several workers, a contiguous slice of layers each
    /// (`stage.rs`); inputs are encoded here, as for WebGPU.
    Pipeline {
        inputs: InputEncoder,
        config: ModelConfig,
        pipeline: crate::stage::Pipeline,
    },
}

impl Scorer {
    /// Who scores, as the model info and the results show it.
    pub fn runs_on(&self) -> RunsOn {
        match self {
            Self::Local(model) => RunsOn { backend: BACKEND.to_owned(), workers: 1, kernel: model.linear_kernel() },
            // The results line's backend for a pipeline: the build and how many workers ran.
            Self::Pipeline { pipeline, .. } => RunsOn {
                backend: format!("{BACKEND}, {} workers", pipeline.stages()),
                workers: pipeline.stages(),
                kernel: pipeline.kernel(),
            },
            // The adapter label ends in "(WebGPU)" already; keep the weight format.
            Self::WebGpu { model, .. } => RunsOn {
                backend: format!("WebGPU: {}, {} weights", model.adapter(), model.format().name()),
                workers: 1,
                kernel: String::new(),
            },
            // Remote loads describe themselves (no local config); kept for completeness.
            Self::Remote { client, .. } => {
                RunsOn { backend: client.url().to_owned(), workers: 1, kernel: String::new() }
            }
        }
    }

    /// The GPU's buffers (weights, and the peak of every kind): WebGPU only.
    pub fn device_memory(&self) -> Option<String> {
        match self {
            Self::WebGpu { model, .. } => Some(model.gpu().memory().summary()),
            _ => None,
        }
    }

    /// Engine workers that score (the pipeline's stages; 1 otherwise).
    pub fn workers(&self) -> usize {
        match self {
            Self::Pipeline { pipeline, .. } => pipeline.stages(),
            _ => 1,
        }
    }

    /// The model's config; None for a remote endpoint.
    pub fn config(&self) -> Option<&ModelConfig> {
        self.local().map(|(_, config)| config)
    }

    /// The input encoder and config of a model in this tab; None for a remote endpoint.
    pub fn local(&self) -> Option<(&InputEncoder, &ModelConfig)> {
        match self {
            Self::Local(model) => Some((model.inputs(), model.config())),
            Self::WebGpu { inputs, model } => Some((inputs, model.config())),
            Self::Pipeline { inputs, config, .. } => Some((inputs, config)),
            Self::Remote { .. } => None,
        }
    }

    /// The head at every position of `ids`, on whichever engine holds the model.
    pub async fn positions(&self, ids: &[u32]) -> Res<Vec<Vec<f32>>> {
        match self {
            Self::Local(model) => Ok(model.forward_positions(ids)?),
            Self::WebGpu { model, .. } => Ok(model.forward_positions(ids).await?),
            Self::Pipeline { pipeline, config, .. } => {
                let one = std::slice::from_ref(&(0..1));
                let mut rows = pipeline.run(&[ids], one, config.pad_token_id, &|| Ok(())).await?;
                Ok(rows.pop().unwrap_or_default())
            }
            Self::Remote { .. } => Err(WorkerError::Remote("step rewards need the model in this browser".into())),
        }
    }

    /// How `convs` are scored: encoded here when the batching needs their tokens (the CPU
    /// engine and the pipeline share prompts), and cut into batches (`grouping`).
    pub fn batches(&self, convs: &[Vec<Message>], policy: &LengthPolicy) -> Res<(Vec<EncodedInput>, Vec<Batch>)> {
        Ok(match self {
            Self::Local(model) => {
                let enc = convs.iter().map(|c| model.encode(c, policy)).collect::<Result<Vec<_>, _>>()?;
                let ids: Vec<&[u32]> = enc.iter().map(|e| e.ids.as_slice()).collect();
                let batches = grouping::cpu_batches(&ids, model.prefix_reuse());
                (enc, batches)
            }
            Self::WebGpu { .. } => (vec![], grouping::each(grouping::fixed_groups(convs.len(), GPU_BATCH))),
            Self::Remote { client, .. } => {
                (vec![], grouping::each(grouping::fixed_groups(convs.len(), client.config().batch_size)))
            }
            Self::Pipeline { inputs, .. } => {
                let enc = convs.iter().map(|c| inputs.encode(c, policy)).collect::<Result<Vec<_>, _>>()?;
                let ids: Vec<&[u32]> = enc.iter().map(|e| e.ids.as_slice()).collect();
                let batches = grouping::pipeline_batches(&ids, rewardlens_models::plan::MIN_SHARED_PREFIX);
                (enc, batches)
            }
        })
    }

    /// Scores one batch: `convs` and, where `batches` encoded them, `encoded` are the batch's
    /// own; `groups` share a prompt (numbered within the batch). Results have no time yet.
    pub async fn score_batch(
        &self,
        convs: &[Vec<Message>],
        encoded: &[EncodedInput],
        groups: &[std::ops::Range<usize>],
        policy: &LengthPolicy,
        cancel: CancelCheck<'_>,
    ) -> Res<Vec<SequenceResult>> {
        match self {
            Self::Local(model) => {
                let scores = model.score_encoded(encoded, convs.len())?;
                Ok(scores.into_iter().map(|s| sequence_result(s, 0.0)).collect())
            }
            Self::WebGpu { inputs, model } => {
                let encoded = convs.iter().map(|c| inputs.encode(c, policy)).collect::<Result<Vec<_>, _>>()?;
                let rows: Vec<&[u32]> = encoded.iter().map(|e| e.ids.as_slice()).collect();
                let heads = model.forward(&rows).await?;
                Ok(heads
                    .into_iter()
                    .zip(&encoded)
                    .map(|(h, e)| sequence_result(ConversationScore::from_head(h, e), 0.0))
                    .collect())
            }
            Self::Remote { client, template } => {
                let inputs = convs
                    .iter()
                    .map(|c| RemoteInput::from_conversation(c, template.as_ref(), client.config().protocol))
                    .collect::<Result<Vec<_>, _>>()?;
                let scores = client.score(&inputs).await?;
                Ok(scores.into_iter().map(|s| remote_result(s.values, 0.0)).collect())
            }
            // Every input goes down the pipeline back to back (its stages stay busy), the
            // responses to one prompt continuing one prompt pass.
            Self::Pipeline { config, pipeline, .. } => {
                let rows: Vec<&[u32]> = encoded.iter().map(|e| e.ids.as_slice()).collect();
                let positions = pipeline.run(&rows, groups, config.pad_token_id, cancel).await?;
                encoded
                    .iter()
                    .zip(positions)
                    .map(|(e, p)| {
                        let head = rewardlens_models::pipeline::head_output(config, &e.ids, p)?;
                        Ok(sequence_result(ConversationScore::from_head(head, e), 0.0))
                    })
                    .collect()
            }
        }
    }

    /// One benchmark pass over `rows`; with `profile`, the CPU engine also records where the
    /// time goes, per kind of op (empty elsewhere).
    pub async fn bench_pass(&self, rows: &[&[u32]], profile: bool, cancel: CancelCheck<'_>) -> Res<Vec<(String, f64)>> {
        match self {
            Self::Local(model) if profile => {
                let (r, p) = rewardlens_models::profile::record(super::bench::performance_now, || {
                    model.forward_padded(rows, rewardlens_models::Padding::Right)
                });
                r?;
                Ok(p.rows())
            }
            Self::Local(model) => {
                model.forward_padded(rows, rewardlens_models::Padding::Right)?;
                Ok(Vec::new())
            }
            Self::WebGpu { model, .. } => {
                model.forward(rows).await?;
                Ok(Vec::new())
            }
            // All rows back to back through the stages, one shared-prompt group: every row
            // continues the same shared prompt.
            Self::Pipeline { pipeline, config, .. } => {
                let all = 0..rows.len();
                pipeline.run(rows, &[all], config.pad_token_id, cancel).await?;
                Ok(Vec::new())
            }
            Self::Remote { .. } => Err(WorkerError::Remote(
                "the benchmark measures the engine in this browser, not a remote endpoint".into(),
            )),
        }
    }
}
