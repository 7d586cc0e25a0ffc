//! [`ForwardPass`]: what every backend provides (token ids in, head outputs out), and its Candle
//! implementation by [`DecoderRewardModel`].

use crate::config::ModelConfig;
use crate::decoder::{DecoderRewardModel, HeadOutput, Padding};
use crate::Result;

/// A forward pass over token ids: the CPU engine here ([`DecoderRewardModel`]), or another
/// backend (the GPU crate's) that produces the same head outputs.
pub trait ForwardPass: Send + Sync {
    fn config(&self) -> &ModelConfig;
    /// Head outputs per row. `padding` is how a padded batch is laid out; backends that pack
    /// rows without padding ignore it (the outputs are the same either way).
    fn forward(&self, rows: &[&[u32]], padding: Padding) -> Result<Vec<HeadOutput>>;
    /// The head at every position of one sequence (step rewards, prefix scores).
    fn forward_positions(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>>;
    /// What runs it, for reports ("CPU", "GPU (adapter)").
    fn backend(&self) -> String;
    /// Shared-prompt reuse in batches: the shortest common prefix computed once (`None`: off).
    /// Backends without it keep the default, off.
    fn set_prefix_reuse(&mut self, _min_tokens: Option<usize>) {}
    fn prefix_reuse(&self) -> Option<usize> {
        None
    }
    /// Tokens one sequence may have on this backend, if fewer than the model's positions
    /// (a GPU pass holds a bounded number): front ends refuse longer inputs up front.
    fn max_sequence_tokens(&self) -> Option<usize> {
        None
    }
    /// The matrix-multiply kernel of the linear layers, for reports (empty where not known).
    fn linear_kernel(&self) -> String {
        String::new()
    }
    /// Device memory held apart from the process's own (a GPU's buffers by kind and their
    /// peak), for reports; `None` where the backend has none.
    fn device_memory(&self) -> Option<String> {
        None
    }
}

impl ForwardPass for DecoderRewardModel {
    fn config(&self) -> &ModelConfig {
        DecoderRewardModel::config(self)
    }
    fn forward(&self, rows: &[&[u32]], padding: Padding) -> Result<Vec<HeadOutput>> {
        DecoderRewardModel::forward(self, rows, padding)
    }
    fn forward_positions(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        DecoderRewardModel::forward_positions(self, ids)
    }
    fn set_prefix_reuse(&mut self, min_tokens: Option<usize>) {
        DecoderRewardModel::set_prefix_reuse(self, min_tokens)
    }
    fn prefix_reuse(&self) -> Option<usize> {
        DecoderRewardModel::prefix_reuse(self)
    }
    fn linear_kernel(&self) -> String {
        DecoderRewardModel::linear_kernel(self)
    }
    fn backend(&self) -> String {
        if self.device().is_cpu() {
            "CPU".into()
        } else {
            format!("{:?}", self.device().location())
        }
    }
}
