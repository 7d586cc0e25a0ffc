//! Dynamic batching: requests queue per model (bounded: a full queue is refused, never grown);
//! one thread per model takes whatever has arrived within a short window and scores it as one
//! set of length-grouped batches.

use rewardlens_models::reward_model::EncodedInput;
use rewardlens_models::{ConversationScore, RewardModel};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One request's sequences and where to send their scores.
pub struct Job {
    pub inputs: Vec<EncodedInput>,
    pub reply: oneshot::Sender<Result<Vec<ConversationScore>, String>>,
}

/// A model and its queue.
pub struct Batcher {
    pub model: Arc<RewardModel>,
    queue: mpsc::Sender<Job>,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Requests waiting at most (beyond this a request is answered 503).
    pub queue: usize,
    /// Sequences scored together at most.
    pub max_sequences: usize,
    /// How long the first request of a batch waits for company.
    pub wait: Duration,
    /// Sequences per forward pass.
    pub forward_batch: usize,
}

/// Why a job was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    QueueFull,
    Stopped,
}

impl Batcher {
    pub fn start(model: RewardModel, policy: BatchPolicy) -> Self {
        let model = Arc::new(model);
        let (tx, mut rx) = mpsc::channel::<Job>(policy.queue.max(1));
        let m = model.clone();
        std::thread::Builder::new()
            .name("rewardlens-batcher".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    let mut n: usize = jobs[0].inputs.len();
                    let deadline = Instant::now() + policy.wait;
                    while n < policy.max_sequences && Instant::now() < deadline {
                        match rx.try_recv() {
                            Ok(j) => {
                                n += j.inputs.len();
                                jobs.push(j);
                            }
                            Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_micros(500)),
                            Err(mpsc::error::TryRecvError::Disconnected) => break,
                        }
                    }
                    run_jobs(&m, jobs, policy.forward_batch);
                }
            })
            .expect("spawning the batcher thread");
        Self { model, queue: tx }
    }

    /// Queues a job; its scores arrive on the returned channel.
    pub fn submit(
        &self,
        inputs: Vec<EncodedInput>,
    ) -> Result<oneshot::Receiver<Result<Vec<ConversationScore>, String>>, Refused> {
        let (reply, rx) = oneshot::channel();
        match self.queue.try_send(Job { inputs, reply }) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Refused::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused::Stopped),
        }
    }
}

fn run_jobs(model: &RewardModel, jobs: Vec<Job>, forward_batch: usize) {
    let all: Vec<EncodedInput> = jobs.iter().flat_map(|j| j.inputs.iter().cloned()).collect();
    match model.score_encoded(&all, forward_batch) {
        Ok(scores) => {
            let mut it = scores.into_iter();
            for j in jobs {
                let mine: Vec<ConversationScore> = it.by_ref().take(j.inputs.len()).collect();
                let _ = j.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for j in jobs {
                let _ = j.reply.send(Err(e.to_string()));
            }
        }
    }
}
