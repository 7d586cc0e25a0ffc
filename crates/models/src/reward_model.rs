//! [`RewardModel`]: conversations in, scores out, exactly as transformers computes them.

use crate::batching::batches;
use crate::config::ModelConfig;
use crate::decoder::{DecoderRewardModel, HeadOutput, Padding};
use crate::encoder::{CheckpointText, EncodedInput, InputEncoder, LengthPolicy};
use crate::files::CheckpointFiles;
use crate::forward_pass::ForwardPass;
use crate::gguf::GgufFile;
use crate::prm::{StepConvention, StepScores};
use crate::quantized::{self, QuantType};
use crate::weights::WeightSource;
use crate::Result;
use candle_core::Device;
use rewardlens_core::types::prompt_response;
use rewardlens_core::{preference_probability, ranking, Message};

/// The model's output for one conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationScore {
    /// One value per label: at the pooled token for sequence classification, at the last
    /// token for token classification.
    pub logits: Vec<f32>,
    /// Token classification only: one logit vector per input token.
    pub token_logits: Option<Vec<Vec<f32>>>,
    /// Tokens scored (after truncation).
    pub tokens: usize,
    /// Tokens cut off the end when truncation was requested.
    pub truncated_tokens: usize,
}

impl ConversationScore {
    /// The scalar reward: the first label's value.
    pub fn score(&self) -> f32 {
        self.logits[0]
    }
}

/// Scores of N responses to one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseScores {
    /// In input order.
    pub responses: Vec<ConversationScore>,
    /// Response indices, best first.
    pub ranking: Vec<usize>,
}

/// Scores of a preference pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairScore {
    pub chosen: ConversationScore,
    pub rejected: ConversationScore,
    /// `sigmoid(chosen - rejected)`.
    pub preference_probability: f32,
}

impl PairScore {
    /// Whether the model prefers the chosen response.
    pub fn correct(&self) -> bool {
        self.chosen.score() > self.rejected.score()
    }
}

impl ConversationScore {
    /// The score of `input` from its head output.
    pub fn from_head(o: HeadOutput, input: &EncodedInput) -> Self {
        let (logits, token_logits) = match o {
            HeadOutput::Sequence { logits, .. } => (logits, None),
            HeadOutput::Token(t) => (t.last().cloned().unwrap_or_default(), Some(t)),
        };
        ConversationScore { logits, token_logits, tokens: input.ids.len(), truncated_tokens: input.truncated_tokens }
    }
}

/// A loaded reward model: its input encoder and a forward pass (CPU by default).
pub struct RewardModel {
    model: Box<dyn ForwardPass>,
    inputs: InputEncoder,
}

impl RewardModel {
    /// Loads a checkpoint onto `device`.
    pub fn load(files: CheckpointFiles, device: &Device) -> Result<Self> {
        let CheckpointFiles { config_json, tokenizer_json, tokenizer_config_json, chat_template_jinja, weights } =
            files;
        let text = CheckpointText {
            config_json: &config_json,
            tokenizer_json: &tokenizer_json,
            tokenizer_config_json: &tokenizer_config_json,
            chat_template_jinja: chat_template_jinja.as_deref(),
        };
        Self::from_checkpoint(&text, &weights.open()?, None, device)
    }

    /// Builds a model from a checkpoint's text files and any weight store; with `quantize`,
    /// the matrices are quantized while loading (a float checkpoint at a quarter of its f32 size).
    pub fn from_checkpoint(
        text: &CheckpointText<'_>,
        weights: &dyn WeightSource,
        quantize: Option<QuantType>,
        device: &Device,
    ) -> Result<Self> {
        let (config, inputs) = InputEncoder::from_checkpoint(text)?;
        let model = match quantize {
            Some(qtype) => {
                let q = quantized::QuantizeOnLoad { inner: weights, qtype };
                DecoderRewardModel::load(config, &q, device)?
            }
            None => DecoderRewardModel::load(config, weights, device)?,
        };
        Ok(Self::new(Box::new(model), inputs))
    }

    /// Loads a GGUF reward model. Files written by `rewardlens quantize` carry their tokenizer and
    /// chat template; for others (llama.cpp's), pass `tokenizer` as (tokenizer.json,
    /// tokenizer_config.json) contents.
    pub fn from_gguf(file: GgufFile, tokenizer: Option<(Vec<u8>, String)>, device: &Device) -> Result<Self> {
        let (config, inputs) = InputEncoder::from_gguf(&file, tokenizer)?;
        let weights = quantized::GgufWeights::new(file, config.clone());
        Ok(Self::new(Box::new(DecoderRewardModel::load(config, &weights, device)?), inputs))
    }

    /// A model from any forward pass (CPU, GPU) and the encoder of its checkpoint.
    pub fn new(model: Box<dyn ForwardPass>, inputs: InputEncoder) -> Self {
        Self { model, inputs }
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// What runs the forward pass.
    pub fn backend(&self) -> String {
        self.model.backend()
    }

    /// The kernel of the linear layers ("int8 simd128 (per-group(32) scales)", "candle q8_0", ...).
    pub fn linear_kernel(&self) -> String {
        self.model.linear_kernel()
    }

    /// Shared-prompt reuse across a batch (see `DecoderRewardModel::set_prefix_reuse`); `None`
    /// turns it off, e.g. to measure what it saves.
    pub fn set_prefix_reuse(&mut self, min_tokens: Option<usize>) {
        self.model.set_prefix_reuse(min_tokens)
    }

    /// The shortest shared prefix the forward pass computes once (`None`: reuse is off).
    pub fn prefix_reuse(&self) -> Option<usize> {
        self.model.prefix_reuse()
    }

    /// See [`ForwardPass::device_memory`].
    pub fn device_memory(&self) -> Option<String> {
        self.model.device_memory()
    }

    /// See [`ForwardPass::max_sequence_tokens`].
    pub fn max_sequence_tokens(&self) -> Option<usize> {
        self.model.max_sequence_tokens()
    }

    pub fn inputs(&self) -> &InputEncoder {
        &self.inputs
    }

    /// Label names in label-id order.
    pub fn labels(&self) -> &[String] {
        &self.config().labels
    }

    /// The conversation as the chat template writes it.
    pub fn render(&self, conversation: &[Message]) -> Result<String> {
        self.inputs.render(conversation)
    }

    /// The longest input this model accepts under `policy`.
    pub fn token_limit(&self, policy: &LengthPolicy) -> usize {
        self.inputs.token_limit(policy)
    }

    /// Renders and tokenizes a conversation, applying the length policy.
    pub fn encode(&self, conversation: &[Message], policy: &LengthPolicy) -> Result<EncodedInput> {
        self.inputs.encode(conversation, policy)
    }

    /// Tokenizes text already rendered with the chat template, applying the length policy.
    pub fn encode_text(&self, text: &str, policy: &LengthPolicy) -> Result<EncodedInput> {
        self.inputs.encode_text(text, policy)
    }

    /// Scores encoded inputs, `batch_size` at a time. Inputs are grouped by length so that
    /// batches carry little padding, and with prefix reuse first by shared prompt, so that the
    /// responses to one prompt share a batch; results come back in input order.
    pub fn score_encoded(&self, inputs: &[EncodedInput], batch_size: usize) -> Result<Vec<ConversationScore>> {
        let batch_size = batch_size.max(1);
        let rows: Vec<&[u32]> = inputs.iter().map(|i| i.ids.as_slice()).collect();
        let mut out: Vec<Option<ConversationScore>> = vec![None; inputs.len()];
        for chunk in &batches(&rows, batch_size, self.model.prefix_reuse()) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| inputs[i].ids.as_slice()).collect();
            let outputs = self.model.forward(&rows, Padding::Right)?;
            for (&i, o) in chunk.iter().zip(outputs) {
                out[i] = Some(ConversationScore::from_head(o, &inputs[i]));
            }
        }
        Ok(out.into_iter().map(|s| s.expect("every input scored")).collect())
    }

    /// Rewards of the steps of a conversation's answer under `convention`: one forward pass, the
    /// head read where the convention reads it.
    pub fn score_steps(
        &self,
        convention: &StepConvention,
        conversation: &[Message],
        steps: Vec<rewardlens_core::Step>,
        policy: &LengthPolicy,
    ) -> Result<StepScores> {
        convention.check(self.config())?;
        let input = self.inputs.encode_steps(convention, conversation, &steps, policy)?;
        let rows = self.model.forward_positions(&input.ids)?;
        let scores = convention.rewards(&rows, &input.positions);
        Ok(StepScores { convention: convention.name(), steps, scores })
    }

    /// The head at every position of one encoded sequence.
    pub fn forward_positions(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.model.forward_positions(ids)
    }

    /// Raw head outputs of a batch padded on the given side (for tests and the benchmark).
    pub fn forward_padded(&self, rows: &[&[u32]], padding: Padding) -> Result<Vec<HeadOutput>> {
        self.model.forward(rows, padding)
    }

    /// Scores whole conversations.
    pub fn score_conversations(
        &self,
        conversations: &[Vec<Message>],
        policy: &LengthPolicy,
        batch_size: usize,
    ) -> Result<Vec<ConversationScore>> {
        let inputs = conversations.iter().map(|c| self.encode(c, policy)).collect::<Result<Vec<_>>>()?;
        self.score_encoded(&inputs, batch_size)
    }

    /// Scores one conversation.
    pub fn score_conversation(&self, conversation: &[Message], policy: &LengthPolicy) -> Result<ConversationScore> {
        let input = self.encode(conversation, policy)?;
        Ok(self.score_encoded(std::slice::from_ref(&input), 1)?.remove(0))
    }

    /// Scores each response as the assistant's answer to `prompt`.
    pub fn score_responses(
        &self,
        prompt: &str,
        responses: &[String],
        policy: &LengthPolicy,
        batch_size: usize,
    ) -> Result<ResponseScores> {
        let convs: Vec<Vec<Message>> = responses.iter().map(|r| prompt_response(prompt, r)).collect();
        let responses = self.score_conversations(&convs, policy, batch_size)?;
        let scores: Vec<f32> = responses.iter().map(ConversationScore::score).collect();
        Ok(ResponseScores { ranking: ranking(&scores), responses })
    }

    /// Scores a preference pair.
    pub fn score_pair(&self, prompt: &str, chosen: &str, rejected: &str, policy: &LengthPolicy) -> Result<PairScore> {
        let mut r =
            self.score_conversations(&[prompt_response(prompt, chosen), prompt_response(prompt, rejected)], policy, 2)?;
        let rejected = r.pop().expect("two scores");
        let chosen = r.pop().expect("two scores");
        let preference_probability = preference_probability(chosen.score(), rejected.score());
        Ok(PairScore { chosen, rejected, preference_probability })
    }
}
