//! Step rewards and the answer's token scores, added to each scored sequence; a sequence whose
//! steps cannot be scored keeps its score and says why.

use super::error::{Res, WorkerError};
use super::queue::{Engine, Loaded};
use crate::protocol::{FromWorker, SequenceResult, StepRequest, StepView, TokenScore};
use rewardlens_core::Message;
use rewardlens_models::prm::{problem_and_answer, token_rewards, StepConvention};
use rewardlens_models::{InputEncoder, LengthPolicy};

fn steps_error(e: rewardlens_core::CoreError) -> WorkerError {
    WorkerError::Steps(e.to_string())
}

impl Engine {
    /// Adds step rewards and token scores to each result; a sequence whose steps cannot be
    /// scored gets `step_error` instead (its score stays).
    pub(super) async fn add_step_details(
        &self,
        id: u64,
        loaded: &Loaded,
        convs: &[Vec<Message>],
        results: &mut [SequenceResult],
        req: &StepRequest,
        policy: &LengthPolicy,
    ) -> Res<()> {
        for (i, (conv, r)) in convs.iter().zip(results.iter_mut()).enumerate() {
            self.post(&FromWorker::Progress {
                id,
                stage: "step rewards".into(),
                done: i as u64,
                total: Some(convs.len() as u64),
                rate: 0.0,
            });
            match self.step_details(loaded, conv, req, policy).await {
                Ok((steps, tokens, token_error)) => {
                    r.steps = steps;
                    r.token_scores = tokens;
                    r.step_error = token_error;
                }
                // A remote endpoint cannot score steps at all: the job fails, not each sequence.
                Err(e @ WorkerError::Remote(_)) => return Err(e),
                Err(e) => r.step_error = Some(e.to_string()),
            }
            self.yield_now().await;
            self.check_cancel(id)?;
        }
        Ok(())
    }

    /// Step rewards of `conv`'s answer, and with `req.tokens` the answer's token scores; a
    /// failure of the token heatmap alone keeps the steps (and says why in the third value).
    async fn step_details(
        &self,
        loaded: &Loaded,
        conv: &[Message],
        req: &StepRequest,
        policy: &LengthPolicy,
    ) -> Res<(Option<StepView>, Option<Vec<TokenScore>>, Option<String>)> {
        let (inputs, config) = loaded.scorer.local().ok_or_else(|| {
            WorkerError::Remote("step rewards need the model in this browser, not a remote endpoint".into())
        })?;
        let convention = match &req.convention {
            Some(name) => StepConvention::parse(name)?,
            None => StepConvention::of_architecture(config).unwrap_or(StepConvention::Prefix),
        };
        convention.check(config)?;
        let (_, answer) = problem_and_answer(conv)?;
        let steps = req.split.split(&answer).map_err(steps_error)?;
        let input = inputs.encode_steps(&convention, conv, &steps, policy)?;
        let rows = loaded.scorer.positions(&input.ids).await?;
        let view = StepView {
            convention: convention.name().into(),
            scores: convention.rewards(&rows, &input.positions),
            steps,
        };
        if !req.tokens {
            return Ok((Some(view), None, None));
        }
        // Token scores read the head the way the model's convention does (raw for prefix).
        let declared = StepConvention::of_architecture(config).or(req.convention.as_ref().map(|_| convention.clone()));
        let reading = declared.filter(|c| *c != StepConvention::Prefix);
        match self.token_details(loaded, inputs, conv, &answer, reading.as_ref()).await {
            Ok(tokens) => Ok((Some(view), Some(tokens), None)),
            Err(e) => Ok((Some(view), None, Some(format!("no token heatmap: {e}")))),
        }
    }

    /// The answer's tokens in the conversation as scored, found by their offsets, each with the
    /// head's reward there.
    async fn token_details(
        &self,
        loaded: &Loaded,
        inputs: &InputEncoder,
        conv: &[Message],
        answer: &str,
        reading: Option<&StepConvention>,
    ) -> Res<Vec<TokenScore>> {
        let text = inputs.render(conv)?;
        let start = text.rfind(answer).filter(|_| !answer.is_empty()).ok_or_else(|| {
            WorkerError::Steps("the chat template rewrites the answer, so its tokens cannot be located".into())
        })?;
        let (ids, offsets) = inputs.text_encoder().encode_with_offsets(&text).map_err(steps_error)?;
        let rows = loaded.scorer.positions(&ids).await?;
        let values = token_rewards(reading, &rows);
        let texts = inputs.text_encoder().token_texts(&ids);
        Ok(offsets
            .iter()
            .zip(texts.into_iter().zip(values))
            .filter(|(o, _)| o.0 >= start && o.0 < start + answer.len())
            .map(|(_, (text, score))| TokenScore { text, score })
            .collect())
    }
}
