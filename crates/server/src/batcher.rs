//! Dynamic batching with bounded work and fair turns. Requests queue per model, bounded in
//! requests and in tokens (a full queue is refused, never grown). One thread per model scores
//! in rounds: each round takes up to `forward_batch` sequences from every request in flight in
//! turn, until the round holds `max_sequences` sequences or `batch_tokens` tokens, so a large
//! request is split over many rounds and a small one that arrives meanwhile is scored in the
//! next round, not after it. Requests whose client has gone are dropped between rounds. A round
//! that fails is retried request by request, so only the request that caused it fails.

use rewardlens_models::EncodedInput;
use rewardlens_models::{ConversationScore, ModelError, RewardModel};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub type Reply = Result<Vec<ConversationScore>, ModelError>;

/// One request's sequences and where to send their scores.
pub struct Job {
    pub inputs: Vec<EncodedInput>,
    pub reply: oneshot::Sender<Reply>,
    tokens: usize,
}

/// A model and its queue.
pub struct Batcher {
    pub model: Arc<RewardModel>,
    queue: mpsc::Sender<Job>,
    load: Arc<Load>,
    policy: BatchPolicy,
}

/// Requests and tokens queued or being scored: what admission counts (the scoring thread
/// takes requests off the channel as it starts them, so the channel's bound alone is not one).
#[derive(Default)]
struct Load {
    jobs: AtomicUsize,
    tokens: AtomicUsize,
}

impl Load {
    fn release(&self, tokens: usize) {
        self.jobs.fetch_sub(1, Ordering::AcqRel);
        self.tokens.fetch_sub(tokens, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Requests waiting at most besides one being scored (beyond this: 503).
    pub queue: usize,
    /// Tokens of the requests waiting or in flight at most (beyond this: 503).
    pub queue_tokens: usize,
    /// Sequences per scoring round at most.
    pub max_sequences: usize,
    /// Tokens per scoring round at most (a longer single sequence runs alone), and padded
    /// tokens per forward pass: this bounds the activations one pass holds.
    pub batch_tokens: usize,
    /// How long the first request of a batch waits for company.
    pub wait: Duration,
    /// Sequences per forward pass at most.
    pub forward_batch: usize,
}

/// Why a job was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    QueueFull,
    Stopped,
}

/// A request being scored: the next sequence to score and the scores so far.
struct Active {
    job: Job,
    next: usize,
    scores: Vec<ConversationScore>,
}

impl Batcher {
    pub fn start(model: RewardModel, policy: BatchPolicy) -> Self {
        let model = Arc::new(model);
        let (tx, rx) = mpsc::channel::<Job>(policy.queue.saturating_add(1));
        let load = Arc::new(Load::default());
        let (m, l) = (model.clone(), load.clone());
        std::thread::Builder::new()
            .name("rewardlens-batcher".into())
            .spawn(move || schedule(&m, rx, policy, &l))
            .expect("spawning the batcher thread");
        Self { model, queue: tx, load, policy }
    }

    /// Queues a job; its scores arrive on the returned channel.
    pub fn submit(&self, inputs: Vec<EncodedInput>) -> Result<oneshot::Receiver<Reply>, Refused> {
        let tokens: usize = inputs.iter().map(|i| i.ids.len()).sum();
        // Reserve the tokens first; a request alone is always let in (its size is capped
        // by the request limits).
        let jobs = self.policy.queue.saturating_add(1);
        self.load
            .jobs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < jobs).then_some(n + 1))
            .map_err(|_| Refused::QueueFull)?;
        let cap = self.policy.queue_tokens;
        if self
            .load
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| (q == 0 || q + tokens <= cap).then_some(q + tokens))
            .is_err()
        {
            self.load.jobs.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::QueueFull);
        }
        let (reply, rx) = oneshot::channel();
        match self.queue.try_send(Job { inputs, reply, tokens }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.load.release(tokens);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => Refused::QueueFull,
                    mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
                })
            }
        }
    }
}

fn schedule(model: &RewardModel, mut rx: mpsc::Receiver<Job>, policy: BatchPolicy, load: &Load) {
    let mut active: VecDeque<Active> = VecDeque::new();
    let activate = |j: Job| Active { next: 0, scores: Vec::with_capacity(j.inputs.len()), job: j };
    let finish = |a: Active, r: Reply| {
        load.release(a.job.tokens);
        let _ = a.job.reply.send(r);
    };
    loop {
        if active.is_empty() {
            let Some(first) = rx.blocking_recv() else { return };
            active.push_back(activate(first));
            let deadline = Instant::now() + policy.wait;
            let mut n = active[0].job.inputs.len();
            while n < policy.max_sequences && Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.inputs.len();
                        active.push_back(activate(j));
                    }
                    Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_micros(500)),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            }
        }
        while let Ok(j) = rx.try_recv() {
            active.push_back(activate(j));
        }
        // The handler of a request whose client disconnected has been dropped with its receiver.
        for a in std::mem::take(&mut active) {
            if a.job.reply.is_closed() {
                eprintln!(
                    "dropped a request whose client went away ({} of {} sequences unscored)",
                    a.job.inputs.len() - a.next,
                    a.job.inputs.len()
                );
                load.release(a.job.tokens);
            } else {
                active.push_back(a);
            }
        }
        if active.is_empty() {
            continue;
        }
        let round = plan_round(&active, &policy);
        let served = round.iter().map(|(ai, _)| *ai).max().map_or(0, |m| m + 1);
        let mut failed: Vec<(usize, ModelError)> = Vec::new();
        match score(model, &active, &round, &policy) {
            Ok(scores) => {
                let mut it = scores.into_iter();
                for (ai, r) in &round {
                    active[*ai].scores.extend(it.by_ref().take(r.len()));
                    active[*ai].next = r.end;
                }
            }
            Err(e) if round.len() == 1 => failed.push((round[0].0, e)),
            Err(_) => {
                // One bad request must not fail the others batched with it: score each piece
                // alone and fail only the requests whose own piece fails.
                for (ai, r) in &round {
                    if failed.iter().any(|(f, _)| f == ai) {
                        continue;
                    }
                    match score(model, &active, &[(*ai, r.clone())], &policy) {
                        Ok(s) => {
                            active[*ai].scores.extend(s);
                            active[*ai].next = r.end;
                        }
                        Err(e) => failed.push((*ai, e)),
                    }
                }
            }
        }
        let mut rest = VecDeque::with_capacity(active.len());
        // Of the requests that stay, how many had a turn (they lead `active`).
        let mut served_left = 0;
        for (ai, a) in std::mem::take(&mut active).into_iter().enumerate() {
            if let Some(i) = failed.iter().position(|(f, _)| *f == ai) {
                let (_, e) = failed.swap_remove(i);
                finish(a, Err(e));
            } else if a.next == a.job.inputs.len() {
                let mut a = a;
                let scores = std::mem::take(&mut a.scores);
                finish(a, Ok(scores));
            } else {
                served_left += usize::from(ai < served);
                rest.push_back(a);
            }
        }
        // Requests that had a turn go behind those that did not.
        rest.rotate_left(served_left);
        active = rest;
    }
}

/// The pieces of a round: (request, its sequences), taking up to `forward_batch` consecutive
/// sequences (answers to one prompt stay together) from each request in turn.
fn plan_round(active: &VecDeque<Active>, p: &BatchPolicy) -> Vec<(usize, Range<usize>)> {
    let mut cursor: Vec<usize> = active.iter().map(|a| a.next).collect();
    let mut pieces: Vec<(usize, Range<usize>)> = Vec::new();
    let (mut seqs, mut tokens) = (0usize, 0usize);
    let step = p.forward_batch.max(1);
    loop {
        let mut progressed = false;
        for (ai, a) in active.iter().enumerate() {
            let start = cursor[ai];
            let mut end = start;
            while end < a.job.inputs.len() && end - start < step && seqs < p.max_sequences.max(1) {
                let len = a.job.inputs[end].ids.len();
                if seqs > 0 && tokens + len > p.batch_tokens {
                    break;
                }
                seqs += 1;
                tokens += len;
                end += 1;
            }
            if end > start {
                progressed = true;
                cursor[ai] = end;
                match pieces.last_mut() {
                    Some((last, r)) if *last == ai && r.end == start => r.end = end,
                    _ => pieces.push((ai, start..end)),
                }
            }
        }
        if !progressed {
            break;
        }
    }
    pieces.sort_by_key(|(ai, r)| (*ai, r.start));
    // Merge each request's consecutive pieces so its sequences stay in order.
    let mut merged: Vec<(usize, Range<usize>)> = Vec::new();
    for (ai, r) in pieces {
        match merged.last_mut() {
            Some((last, m)) if *last == ai && m.end == r.start => m.end = r.end,
            _ => merged.push((ai, r)),
        }
    }
    merged
}

/// Scores the round's pieces in forward passes of at most `batch_tokens` padded tokens.
fn score(
    model: &RewardModel,
    active: &VecDeque<Active>,
    round: &[(usize, Range<usize>)],
    p: &BatchPolicy,
) -> Result<Vec<ConversationScore>, ModelError> {
    let inputs: Vec<EncodedInput> =
        round.iter().flat_map(|(ai, r)| active[*ai].job.inputs[r.clone()].iter().cloned()).collect();
    let longest = inputs.iter().map(|i| i.ids.len()).max().unwrap_or(1).max(1);
    let batch = (p.batch_tokens / longest).clamp(1, p.forward_batch.max(1));
    model.score_encoded(&inputs, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewardlens_models::{CheckpointText, ForwardPass, InputEncoder};
    use rewardlens_models::{HeadOutput, ModelConfig, Padding};
    use std::sync::Mutex;

    /// A backend that fails any pass holding token 7 and otherwise scores a row by its length;
    /// it records the first token of every row it is given, in order.
    struct Poisoned(ModelConfig, Arc<Mutex<Vec<u32>>>);

    impl ForwardPass for Poisoned {
        fn config(&self) -> &ModelConfig {
            &self.0
        }
        fn forward(&self, rows: &[&[u32]], _: Padding) -> rewardlens_models::Result<Vec<HeadOutput>> {
            self.1.lock().unwrap().extend(rows.iter().map(|r| r[0]));
            if rows.iter().any(|r| r.contains(&7)) {
                return Err(ModelError::Backend("token 7 does not fit".into()));
            }
            Ok(rows
                .iter()
                .map(|r| HeadOutput::Sequence { logits: vec![r.len() as f32], pooled_index: r.len() - 1 })
                .collect())
        }
        fn forward_positions(&self, _: &[u32]) -> rewardlens_models::Result<Vec<Vec<f32>>> {
            unimplemented!()
        }
        fn backend(&self) -> String {
            "poisoned".into()
        }
    }

    fn model() -> RewardModel {
        model_recording().0
    }

    fn model_recording() -> (RewardModel, Arc<Mutex<Vec<u32>>>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen3-seq");
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        let (config_json, tokenizer_config_json) = (read("config.json"), read("tokenizer_config.json"));
        let tokenizer_json = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let text = CheckpointText {
            config_json: &config_json,
            tokenizer_json: &tokenizer_json,
            tokenizer_config_json: &tokenizer_config_json,
            chat_template_jinja: None,
        };
        let (config, inputs) = InputEncoder::from_checkpoint(&text).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        (RewardModel::new(Box::new(Poisoned(config, seen.clone())), inputs), seen)
    }

    fn input(ids: &[u32]) -> Vec<EncodedInput> {
        vec![EncodedInput { ids: ids.to_vec(), truncated_tokens: 0 }]
    }

    /// Requests batched with a failing one still get their scores; only the failing one fails.
    #[test]
    fn a_failing_request_fails_alone() {
        let policy = BatchPolicy {
            queue: 8,
            queue_tokens: 1000,
            max_sequences: 64,
            batch_tokens: 1000,
            // Long enough that all three land in one round.
            wait: Duration::from_millis(300),
            forward_batch: 8,
        };
        let b = Batcher::start(model(), policy);
        let good = b.submit(input(&[1, 2, 3])).unwrap();
        let bad = b.submit(input(&[7, 7])).unwrap();
        let other = b.submit(input(&[4, 5])).unwrap();
        assert_eq!(good.blocking_recv().unwrap().unwrap()[0].logits, vec![3.0]);
        assert!(matches!(bad.blocking_recv().unwrap(), Err(ModelError::Backend(m)) if m.contains("token 7")));
        assert_eq!(other.blocking_recv().unwrap().unwrap()[0].logits, vec![2.0]);
        // Their tokens and places are released.
        assert_eq!(b.load.jobs.load(Ordering::Acquire), 0);
        assert_eq!(b.load.tokens.load(Ordering::Acquire), 0);
    }

    /// A large request is split into rounds: a small one queued after it is answered before
    /// the large one is done.
    #[test]
    fn a_small_request_is_not_stuck_behind_a_large_one() {
        let policy = BatchPolicy {
            queue: 8,
            queue_tokens: 100_000,
            max_sequences: 4,
            batch_tokens: 1000,
            // Both requests start together; the large one alone needs 100 rounds.
            wait: Duration::from_millis(100),
            forward_batch: 2,
        };
        let (m, seen) = model_recording();
        let b = Batcher::start(m, policy);
        let large: Vec<EncodedInput> = (0..400).flat_map(|i| input(&[1, 2, i % 5 + 1])).collect();
        let large = b.submit(large).unwrap();
        let small = b.submit(input(&[9])).unwrap();
        assert_eq!(small.blocking_recv().unwrap().unwrap()[0].logits, vec![1.0]);
        assert_eq!(large.blocking_recv().unwrap().unwrap().len(), 400);
        // The order rows were scored in, not the order replies were read (a fake backend is
        // fast enough to finish the large request before this thread looks).
        let seen = seen.lock().unwrap();
        let small_at = seen.iter().position(|&t| t == 9).unwrap();
        assert!(small_at < 4, "the small request waited {small_at} rows, not one round: {:?}", &seen[..8]);
    }

    /// Round pieces: every request gets a turn, in order, within the round's limits.
    #[test]
    fn rounds_take_turns_and_respect_limits() {
        let p = BatchPolicy {
            queue: 8,
            queue_tokens: 1000,
            max_sequences: 5,
            batch_tokens: 1000,
            wait: Duration::ZERO,
            forward_batch: 2,
        };
        let job = |n: usize| {
            let (reply, _rx) = oneshot::channel();
            Active {
                job: Job {
                    inputs: vec![EncodedInput { ids: vec![1; 10], truncated_tokens: 0 }; n],
                    reply,
                    tokens: 10 * n,
                },
                next: 0,
                scores: vec![],
            }
        };
        let active: VecDeque<Active> = [job(10), job(1), job(10)].into_iter().collect();
        assert_eq!(plan_round(&active, &p), vec![(0, 0..2), (1, 0..1), (2, 0..2)]);
        let p = BatchPolicy { batch_tokens: 25, ..p };
        assert_eq!(plan_round(&active, &p), vec![(0, 0..2)]);
    }

    /// After a round, the requests that had a turn go behind those that did not, counted among
    /// the requests still waiting: when one served request finishes, the next round starts with
    /// the first unserved one, not with a served one.
    #[test]
    fn requests_without_a_turn_go_first_after_one_finishes() {
        let policy = BatchPolicy {
            queue: 8,
            queue_tokens: 1000,
            max_sequences: 2,
            batch_tokens: 1000,
            // Long enough that all four are active before the first round.
            wait: Duration::from_millis(300),
            forward_batch: 1,
        };
        let (m, seen) = model_recording();
        let b = Batcher::start(m, policy);
        let many = |t: u32| (0..4).flat_map(|_| input(&[t])).collect::<Vec<_>>();
        // A (token 1) has one sequence and finishes in the first round, with B's first.
        let replies = [b.submit(input(&[1])), b.submit(many(2)), b.submit(input(&[3])), b.submit(many(4))];
        for r in replies {
            r.unwrap().blocking_recv().unwrap().unwrap();
        }
        let seen = seen.lock().unwrap().clone();
        let mut second: Vec<u32> = seen[2..4].to_vec();
        second.sort();
        assert_eq!(second, vec![3, 4], "rows scored, in order: {seen:?}");
    }
}
