//! [`RewardModel`]: conversations in, scores out, exactly as transformers computes them.

use crate::config::ModelConfig;
use crate::decoder::{DecoderRewardModel, HeadOutput, Padding};
use crate::files::CheckpointFiles;
use crate::gguf::GgufFile;
use crate::quantized::{self, QuantType};
use crate::weights::WeightSource;
use crate::{ModelError, Result};
use candle_core::Device;
use rewardlens_core::types::prompt_response;
use rewardlens_core::{preference_probability, ranking, ChatTemplate, Message, TextEncoder};

/// How over-long inputs are handled: an error by default, cut on request (and reported).
#[derive(Debug, Clone, Copy, Default)]
pub struct LengthPolicy {
    /// A limit below the model's `max_position_embeddings`.
    pub max_tokens: Option<usize>,
    /// Keep the first `limit` tokens instead of failing.
    pub truncate: bool,
}

/// A conversation rendered and tokenized, ready to score.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedInput {
    pub ids: Vec<u32>,
    pub truncated_tokens: usize,
}

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

/// The text files of a checkpoint (everything but the weights).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointText<'a> {
    pub config_json: &'a str,
    pub tokenizer_json: &'a [u8],
    pub tokenizer_config_json: &'a str,
    pub chat_template_jinja: Option<&'a str>,
}

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

/// Conversations to token ids: the chat template, the tokenizer and the length policy. Kept
/// apart from any forward pass so that every backend (CPU, GPU, browser) encodes alike.
pub struct InputEncoder {
    template: ChatTemplate,
    encoder: TextEncoder,
    max_positions: usize,
    bos_token: Option<String>,
}

impl InputEncoder {
    pub fn new(template: ChatTemplate, encoder: TextEncoder, config: &ModelConfig) -> Result<Self> {
        if encoder.vocab_size() > config.vocab_size {
            // Ids past the embedding table would only fail at scoring time; say it now.
            return Err(ModelError::Config(format!(
                "the tokenizer has {} tokens but the model's vocab_size is {}",
                encoder.vocab_size(),
                config.vocab_size
            )));
        }
        Ok(Self { template, encoder, max_positions: config.max_position_embeddings, bos_token: None })
    }

    /// The tokenizer.
    pub fn text_encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// The tokenizer's BOS token text (`bos_token` in tokenizer_config.json), if it has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// What the tokenizer config adds to the tokenizer and config: tokens it declares that
    /// tokenizer.json lacks, the BOS text, and for causal LMs the `lm_head` rows to keep.
    fn finish(
        mut encoder: TextEncoder,
        template: ChatTemplate,
        tokenizer_config: &str,
        mut config: ModelConfig,
    ) -> Result<(ModelConfig, Self)> {
        encoder.add_declared_tokens(tokenizer_config)?;
        let bos_token = serde_json::from_str::<serde_json::Value>(tokenizer_config).ok().and_then(|v| {
            let b = v.get("bos_token")?;
            b.as_str().or_else(|| b.get("content")?.as_str()).map(str::to_owned)
        });
        let mut inputs = Self::new(template, encoder, &config)?;
        inputs.bos_token = bos_token;
        if config.architecture.score == crate::ScoreHead::LmHeadRows {
            let (rows, labels) = crate::prm::shepherd_rows(&inputs)?;
            config.keep_lm_head_rows(rows, labels);
        }
        Ok((config, inputs))
    }

    /// From a checkpoint's text files (config.json, tokenizer files, template).
    pub fn from_checkpoint(text: &CheckpointText<'_>) -> Result<(ModelConfig, Self)> {
        let config = ModelConfig::from_json(text.config_json)?;
        let template = ChatTemplate::from_tokenizer_config(text.tokenizer_config_json, text.chat_template_jinja)?;
        let encoder = TextEncoder::from_bytes(text.tokenizer_json)?;
        Self::finish(encoder, template, text.tokenizer_config_json, config)
    }

    /// From a GGUF file's metadata; `tokenizer` as in [`RewardModel::from_gguf`].
    pub fn from_gguf(file: &GgufFile, tokenizer: Option<(Vec<u8>, String)>) -> Result<(ModelConfig, Self)> {
        let config = quantized::gguf_config(file)?;
        let (tokenizer_json, tokenizer_config) = match tokenizer {
            Some(t) => t,
            None => {
                let (t, c) = quantized::gguf_tokenizer(file)?;
                (t.into_bytes(), c)
            }
        };
        let template = ChatTemplate::from_tokenizer_config(&tokenizer_config, None)?;
        let encoder = TextEncoder::from_bytes(&tokenizer_json)?;
        Self::finish(encoder, template, &tokenizer_config, config)
    }

    /// The conversation as the chat template writes it.
    pub fn render(&self, conversation: &[Message]) -> Result<String> {
        Ok(self.template.render(conversation, false)?)
    }

    /// The longest input this model accepts under `policy`.
    pub fn token_limit(&self, policy: &LengthPolicy) -> usize {
        policy.max_tokens.map_or(self.max_positions, |m| m.min(self.max_positions))
    }

    /// Renders and tokenizes a conversation, applying the length policy.
    pub fn encode(&self, conversation: &[Message], policy: &LengthPolicy) -> Result<EncodedInput> {
        self.encode_text(&self.render(conversation)?, policy)
    }

    /// Tokenizes text already rendered with the chat template (what OpenRLHF-style servers and
    /// vLLM's `input` form receive), applying the length policy.
    pub fn encode_text(&self, text: &str, policy: &LengthPolicy) -> Result<EncodedInput> {
        let mut ids = self.encoder.encode(text)?;
        if ids.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let limit = self.token_limit(policy);
        let mut truncated_tokens = 0;
        if ids.len() > limit {
            if !policy.truncate {
                return Err(ModelError::InputTooLong { tokens: ids.len(), limit });
            }
            truncated_tokens = ids.len() - limit;
            ids.truncate(limit);
        }
        Ok(EncodedInput { ids, truncated_tokens })
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
        convention: &crate::prm::StepConvention,
        conversation: &[Message],
        steps: Vec<rewardlens_core::Step>,
        policy: &LengthPolicy,
    ) -> Result<crate::prm::StepScores> {
        convention.check(self.config())?;
        let input = self.inputs.encode_steps(convention, conversation, &steps, policy)?;
        let rows = self.model.forward_positions(&input.ids)?;
        let scores = convention.rewards(&rows, &input.positions);
        Ok(crate::prm::StepScores { convention: convention.name(), steps, scores })
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

/// How to batch `rows`, `batch_size` at most each: by length, longest first, so that batches
/// carry little padding. With prefix reuse (`min_shared` tokens), rows sharing that many leading
/// tokens (sorting the ids puts them side by side, where [`shared_prompt_runs`] finds them) are
/// batched together, so each batch computes its prompt once; the remaining
/// rows are batched by length.
fn batches(rows: &[&[u32]], batch_size: usize, min_shared: Option<usize>) -> Vec<Vec<usize>> {
    let by_length = |mut v: Vec<usize>| {
        v.sort_by_key(|&i| std::cmp::Reverse(rows[i].len()));
        v
    };
    let chunked = |v: Vec<usize>| v.chunks(batch_size).map(<[usize]>::to_vec).collect::<Vec<_>>();
    let all: Vec<usize> = (0..rows.len()).collect();
    let Some(min) = min_shared else { return chunked(by_length(all)) };
    let mut sorted = all;
    sorted.sort_by(|&a, &b| rows[a].cmp(rows[b]));
    let sorted_rows: Vec<&[u32]> = sorted.iter().map(|&i| rows[i]).collect();
    let runs: Vec<Vec<usize>> =
        shared_prompt_runs(&sorted_rows, Some(min), usize::MAX).into_iter().map(|r| sorted[r].to_vec()).collect();
    let (shared, single): (Vec<_>, Vec<_>) = runs.into_iter().partition(|r| r.len() > 1);
    let mut out: Vec<Vec<usize>> = shared.into_iter().flat_map(|r| chunked(by_length(r))).collect();
    out.extend(chunked(by_length(single.concat())));
    out
}

/// Consecutive rows that share at least `min_shared` leading tokens (responses to one prompt,
/// in input order), `max` rows at most per run; every other row alone, and every row alone
/// without prefix reuse. For front ends that score a few rows at a time (the browser).
pub fn shared_prompt_runs(rows: &[&[u32]], min_shared: Option<usize>, max: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for i in 0..rows.len() {
        match (runs.last_mut(), min_shared) {
            (Some(r), Some(min))
                if r.len() < max && crate::decoder::shared_prefix_len(&[rows[r.start], rows[i]]) >= min =>
            {
                r.end = i + 1
            }
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

#[cfg(test)]
mod batching_tests {
    use super::{batches, shared_prompt_runs};

    #[test]
    fn runs_of_answers_to_one_prompt_in_input_order() {
        let p: Vec<u32> = (0..40).collect();
        let with = |t: u32| p.iter().copied().chain([t]).collect::<Vec<u32>>();
        let rows = [with(1), with(2), vec![5; 50], with(3), with(4), with(5), with(6)];
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        assert_eq!(shared_prompt_runs(&refs, Some(32), 3), vec![0..2, 2..3, 3..6, 6..7]);
        assert_eq!(shared_prompt_runs(&refs, None, 3).len(), rows.len());
        assert_eq!(shared_prompt_runs(&refs, Some(41), 3).len(), rows.len());
    }

    #[test]
    fn answers_to_one_prompt_share_batches_and_the_rest_go_by_length() {
        let p: Vec<u32> = (0..40).collect();
        let q: Vec<u32> = (100..140).collect();
        let row = |prefix: &[u32], tail: &[u32]| prefix.iter().chain(tail).copied().collect::<Vec<u32>>();
        let rows = [
            row(&p, &[1]),
            vec![7, 8],
            row(&q, &[1, 2, 3]),
            row(&p, &[2, 2]),
            vec![9; 50],
            row(&q, &[4]),
            row(&p, &[3, 3, 3]),
        ];
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let got = batches(&refs, 2, Some(32));
        // p's three answers (longest first, in batches of 2), q's two, then the others by length.
        assert_eq!(got, vec![vec![6, 3], vec![0], vec![2, 5], vec![4, 1]]);
        let off = batches(&refs, 3, None);
        assert_eq!(off, vec![vec![4, 2, 6], vec![3, 0, 5], vec![1]]);
        let mut all: Vec<usize> = got.concat();
        all.sort();
        assert_eq!(all, (0..rows.len()).collect::<Vec<_>>());
    }
}
