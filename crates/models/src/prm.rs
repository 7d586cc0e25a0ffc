//! Step rewards: how each process-reward-model (PRM) convention lays out a problem and its
//! steps as tokens, where it reads a reward, and how it turns the head's logits there into one.
//! Every convention is one forward pass whose head is read at several positions
//! (`ForwardPass::forward_positions`).
//!
//! - [`StepConvention::Qwen`] (Qwen2.5-Math-PRM): the chat template over a fixed system prompt,
//!   the problem, and the steps joined and ended by `<extra_0>`; reward = softmax(logits)[1] at
//!   each separator.
//! - [`StepConvention::Shepherd`] (math-shepherd): `"{problem} {step_1} ки\n{step_2} ки…"` (with
//!   the tokenizer's own special tokens) into a causal LM; reward = softmax over the logits of
//!   the `+` and `-` tokens at each tag, first entry.
//! - [`StepConvention::Value`] (Skywork-o1-Open-PRM): BOS + problem + `\n`, then each step + `\n`
//!   tokenized on its own; reward = sigmoid(value) at each step's last token.
//! - [`StepConvention::Prefix`] (any outcome RM): the conversation as scored normally, the head
//!   read at the last token of each step: the score of the answer cut there. An approximation —
//!   the template's closing tokens after a cut are missing.

use crate::config::{ModelConfig, ScoreHead};
use crate::encoder::{InputEncoder, LengthPolicy};
use crate::{ModelError, Result};
use rewardlens_core::{sigmoid, softmax, Message, Step};
use serde::Serialize;

/// Qwen2.5-Math-PRM's system prompt, from its model card.
pub const QWEN_PRM_SYSTEM: &str = "Please reason step by step, and put your final answer within \\boxed{}.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepConvention {
    Qwen { separator: String },
    Shepherd { tag: String, good: String, bad: String },
    Value,
    Prefix,
}

/// A problem and its steps as one token sequence, with the positions whose head output gives
/// each step's reward.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInput {
    pub ids: Vec<u32>,
    pub positions: Vec<usize>,
}

/// Rewards of an answer's steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepScores {
    /// Which convention produced them (`qwen`, `shepherd`, `value`, `prefix`).
    pub convention: &'static str,
    pub steps: Vec<Step>,
    pub scores: Vec<f32>,
}

impl StepScores {
    /// The first step whose reward is below `threshold`.
    pub fn first_below(&self, threshold: f32) -> Option<usize> {
        self.scores.iter().position(|&s| s < threshold)
    }
}

impl StepConvention {
    pub const NAMES: [&'static str; 4] = ["qwen", "shepherd", "value", "prefix"];

    /// `qwen`, `shepherd`, `value` or `prefix`, with each convention's published tokens.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "qwen" => Self::Qwen { separator: "<extra_0>".into() },
            "shepherd" => Self::Shepherd { tag: "ки".into(), good: "+".into(), bad: "-".into() },
            "value" => Self::Value,
            "prefix" => Self::Prefix,
            other => {
                return Err(ModelError::Config(format!(
                    "unknown step convention `{other}` ({})",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Qwen { .. } => "qwen",
            Self::Shepherd { .. } => "shepherd",
            Self::Value => "value",
            Self::Prefix => "prefix",
        }
    }

    /// The convention an architecture implies: Qwen2ForProcessRewardModel, a causal LM
    /// (math-shepherd) and Qwen2ForPrmModel (Skywork-o1) are PRMs; other models are not (a
    /// token classifier may be one, which the user says).
    pub fn of_architecture(c: &ModelConfig) -> Option<Self> {
        match c.architecture.score {
            ScoreHead::Mlp => Some(Self::Qwen { separator: "<extra_0>".into() }),
            ScoreHead::LmHeadRows => Some(Self::Shepherd { tag: "ки".into(), good: "+".into(), bad: "-".into() }),
            ScoreHead::Linear("v_head.summary") => Some(Self::Value),
            ScoreHead::Linear(_) => None,
        }
    }

    /// Whether a model's head fits the convention.
    pub fn check(&self, c: &ModelConfig) -> Result<()> {
        let labels = c.num_labels();
        let bad = |want: &str| {
            Err(ModelError::Config(format!(
                "the {} step convention needs {want}; {} has {labels} label(s)",
                self.name(),
                c.architecture.name()
            )))
        };
        let token_head = c.architecture.head == crate::HeadKind::Token;
        match self {
            Self::Qwen { .. } if labels != 2 || !token_head => bad("a 2-label token head (P(correct) is label 1)"),
            Self::Shepherd { .. } if c.architecture.score != ScoreHead::LmHeadRows => {
                bad("a causal language model (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)")
            }
            Self::Value if labels != 1 || !token_head => bad("a 1-label value head at every token"),
            _ => Ok(()),
        }
    }

    /// Each step's reward from the head outputs at every position.
    pub fn rewards(&self, rows: &[Vec<f32>], positions: &[usize]) -> Vec<f32> {
        positions
            .iter()
            .map(|&p| {
                let r = &rows[p];
                match self {
                    // Both read a softmax over two logits: label 1 for Qwen (P(correct)), the
                    // `+` token (first row kept) for math-shepherd.
                    Self::Qwen { .. } => softmax(&r[..2])[1],
                    Self::Shepherd { .. } => softmax(&r[..2])[0],
                    Self::Value => sigmoid(r[0]),
                    Self::Prefix => r[0],
                }
            })
            .collect()
    }
}

impl InputEncoder {
    /// Lays out the steps (their texts) of a conversation's answer the way `convention` does:
    /// the PRM conventions take the problem (the last user message) and the steps; the prefix
    /// convention renders the whole conversation and finds the steps by their offsets in the
    /// answer (the last assistant message).
    pub fn encode_steps(
        &self,
        convention: &StepConvention,
        conversation: &[Message],
        steps: &[Step],
        policy: &LengthPolicy,
    ) -> Result<StepInput> {
        let (problem, answer) = problem_and_answer(conversation)?;
        let (problem, answer) = (problem.as_str(), answer.as_str());
        if steps.is_empty() {
            return Err(ModelError::Config("the answer has no steps to score".into()));
        }
        let enc = self.text_encoder();
        let texts: Vec<&str> = steps.iter().map(|s| s.text.as_str()).collect();
        let count = |ids: &[u32], id: u32, what: &str| -> Result<Vec<usize>> {
            let positions: Vec<usize> = ids.iter().enumerate().filter(|(_, &t)| t == id).map(|(i, _)| i).collect();
            if positions.len() != steps.len() {
                return Err(ModelError::Config(format!(
                    "{what} occurs {} times in the input for {} steps: a step or the problem contains it",
                    positions.len(),
                    steps.len()
                )));
            }
            Ok(positions)
        };
        let input = match convention {
            StepConvention::Qwen { separator } => {
                let sep = enc.encode(separator)?;
                let [sep_id] = sep[..] else {
                    return Err(ModelError::Config(format!(
                        "the tokenizer has no single token for the step separator {separator}"
                    )));
                };
                let mut content = texts.join(separator);
                content.push_str(separator);
                let messages = [Message::system(QWEN_PRM_SYSTEM), Message::user(problem), Message::assistant(content)];
                let ids = enc.encode(&self.render(&messages)?)?;
                let positions = count(&ids, sep_id, separator)?;
                StepInput { ids, positions }
            }
            StepConvention::Shepherd { tag, .. } => {
                let tag_id = *enc
                    .encode(&format!(" {tag}"))?
                    .last()
                    .ok_or_else(|| ModelError::Config(format!("the tokenizer gives the step tag {tag:?} no tokens")))?;
                let body: Vec<String> = texts.iter().map(|s| format!("{s} {tag}")).collect();
                let ids = enc.encode_with_special_tokens(&format!("{problem} {}", body.join("\n")))?;
                let positions = count(&ids, tag_id, tag)?;
                StepInput { ids, positions }
            }
            StepConvention::Value => {
                // As Skywork's prepare_input: each step tokenized alone, the newline's own token
                // appended after every step but the last, the reward at each step's last token.
                let newline = *enc
                    .encode("\n")?
                    .last()
                    .ok_or_else(|| ModelError::Config("the tokenizer gives a newline no token".into()))?;
                let mut ids = enc.encode(&format!("{}{problem}\n", self.bos_token().unwrap_or("")))?;
                let mut positions = Vec::with_capacity(steps.len());
                for (i, s) in texts.iter().enumerate() {
                    ids.extend(enc.encode(s)?);
                    if i + 1 < texts.len() {
                        ids.push(newline);
                    }
                    positions.push(ids.len() - 1);
                }
                StepInput { ids, positions }
            }
            StepConvention::Prefix => {
                let rendered = self.render(conversation)?;
                let at = rendered.rfind(answer).filter(|_| !answer.is_empty()).ok_or_else(|| {
                    ModelError::Config(
                        "the chat template rewrites the answer (it is not in the rendered text verbatim), so its steps cannot be located".into(),
                    )
                })?;
                let (ids, offsets) = enc.encode_with_offsets(&rendered)?;
                let positions = steps
                    .iter()
                    .map(|s| {
                        let end = at + s.end;
                        offsets.iter().rposition(|&(start, _)| start < end).unwrap_or(0)
                    })
                    .collect();
                StepInput { ids, positions }
            }
        };
        let limit = self.token_limit(policy);
        if input.ids.len() > limit {
            // Cutting would drop steps silently: refuse instead.
            return Err(ModelError::InputTooLong { tokens: input.ids.len(), limit });
        }
        Ok(input)
    }
}

/// The problem and the answer a step scorer reads from a conversation: the last assistant
/// message, and the last user message before it.
pub fn problem_and_answer(conversation: &[Message]) -> Result<(String, String)> {
    use rewardlens_core::Role;
    let a = conversation
        .iter()
        .rposition(|m| m.role == Role::Assistant)
        .ok_or_else(|| ModelError::Config("step rewards need an assistant answer in the conversation".into()))?;
    let problem =
        conversation[..a].iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone()).unwrap_or_default();
    Ok((problem, conversation[a].content.clone()))
}

/// The per-token reward of a model's head row: what the convention reads at a step, or the
/// first label's raw value when no convention applies.
pub fn token_rewards(convention: Option<&StepConvention>, rows: &[Vec<f32>]) -> Vec<f32> {
    match convention {
        Some(c) => c.rewards(rows, &(0..rows.len()).collect::<Vec<_>>()),
        None => rows.iter().map(|r| r[0]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CheckpointText;

    #[test]
    fn a_tokenizer_that_drops_newlines_is_an_error_not_a_panic() {
        // Whitespace pre-tokenization gives "\n" (the value convention's step separator) no token.
        let config = r#"{"architectures":["Qwen2ForPrmModel"],"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":8,"rms_norm_eps":1e-6,
            "max_position_embeddings":64,"num_labels":1}"#;
        let tokenizer = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"a":0,"b":1,"<unk>":2},"unk_token":"<unk>"}}"#;
        let text = CheckpointText {
            config_json: config,
            tokenizer_json: tokenizer.as_bytes(),
            tokenizer_config_json: r#"{"chat_template": "{{ messages[0].content }}"}"#,
            chat_template_jinja: None,
        };
        let (_, inputs) = InputEncoder::from_checkpoint(&text).unwrap();
        let conversation = [Message::user("a"), Message::assistant("a b")];
        let steps = [Step { text: "a".into(), start: 0, end: 1 }, Step { text: "b".into(), start: 2, end: 3 }];
        let err =
            inputs.encode_steps(&StepConvention::Value, &conversation, &steps, &LengthPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("newline"), "{err}");
    }
}
