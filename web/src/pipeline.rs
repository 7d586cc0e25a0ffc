//! The multi-worker CPU pipeline's plain-Rust half: how many stage workers to run, how each
//! sequence is cut into chunks and in what order they enter the pipeline, the messages between
//! the coordinator (the engine worker the page talks to) and its stage workers, and a byte
//! source over the pieces of a model file a stage was sent. Everything here is tested natively;
//! the browser calls (spawning workers, MessageChannel ports, transfers) sit in the worker.
//!
//! How the pipeline works: stage `i` holds a contiguous slice of the decoder's layers (the first
//! also the embedding, the last the final norm and score head), so the weights are split, never
//! copied. The coordinator sends token ids of each chunk to stage 0; each stage runs its layers
//! on the chunk, keeping its own layers' keys/values per sequence for the chunks after it, and
//! passes the hidden states (f32, a transferred `ArrayBuffer`) to the next stage through a
//! `MessagePort`; the last stage returns the head's logits at every position of the chunk.
//! Invariants: every port is FIFO and each stage handles its messages in arrival order, so the
//! chunks of one sequence reach every stage in order, a fork (a response continuing a shared
//! prompt) arrives after the prompt's last chunk, and a `Free`/`Reset` after everything sent
//! before it. Sequence ids are never reused, so the outputs of an abandoned job are recognised
//! and dropped.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Most stage workers chosen automatically: beyond this, the per-worker overhead and the
/// hand-offs grow while few machines give each worker a free core.
pub const MAX_AUTO_WORKERS: usize = 4;
/// Most workers a setting (or `?workers=N`) may ask for.
pub const MAX_WORKERS: usize = 16;
/// Most tokens per chunk: each stage's keys/values grow by one concatenation per chunk, so a
/// long answer should not be cut finer than this.
pub const DEFAULT_CHUNK_TOKENS: usize = 128;
/// Fewest tokens per chunk (unless the most is lower): the int8 kernels' 4-row tiles still
/// reuse each weight load across 16 rows, and a message per chunk costs far less than its work.
pub const MIN_CHUNK_TOKENS: usize = 16;
/// Chunks per stage a sequence is cut into, where the bounds allow: with `c` chunks over `n`
/// stages one sequence takes `(c + n − 1) / c` of the time of one stage's share, so 4 per stage
/// keeps the fill and drain of the pipeline under a fifth of a pass.
pub const CHUNKS_PER_STAGE: usize = 4;

/// Tokens per chunk for a sequence of `len` tokens on `stages` stages, at most `max`: short
/// sequences are cut finer so that even one answer keeps every stage busy. Depends only on the
/// sequence itself, never on what else is in the batch.
pub fn chunk_len(len: usize, stages: usize, max: usize) -> usize {
    let max = max.max(1);
    if stages <= 1 {
        return max;
    }
    len.div_ceil(CHUNKS_PER_STAGE * stages).clamp(MIN_CHUNK_TOKENS.min(max), max)
}
/// What one more worker costs beyond its share of the weights: a wasm instance, its code, and
/// activation buffers for one chunk.
pub const PER_WORKER_OVERHEAD: u64 = 96 << 20;

/// How many stage workers to run. `setting`: the user's choice (None: auto). `cores`:
/// `navigator.hardwareConcurrency`; `device_memory`: `navigator.deviceMemory` in bytes where
/// the browser tells it; `model_bytes`: the weights in memory. Never more workers than layers,
/// and auto never more than [`MAX_AUTO_WORKERS`] nor more than memory allows beyond the model.
pub fn worker_count(
    setting: Option<usize>,
    cores: usize,
    device_memory: Option<u64>,
    model_bytes: u64,
    layers: usize,
) -> usize {
    let layers = layers.max(1);
    match setting {
        Some(n) => n.clamp(1, MAX_WORKERS).min(layers),
        None => {
            // Half the device's memory for this tab; what is left after the model pays for
            // the extra workers.
            let by_memory = device_memory.map_or(usize::MAX, |m| {
                let spare = (m / 2).saturating_sub(model_bytes);
                1 + (spare / PER_WORKER_OVERHEAD) as usize
            });
            cores.clamp(1, MAX_AUTO_WORKERS).min(by_memory).min(layers)
        }
    }
}

/// `0..len` in consecutive chunks of at most `size` tokens.
pub fn chunks(len: usize, size: usize) -> Vec<Range<usize>> {
    let size = size.max(1);
    (0..len).step_by(size).map(|s| s..(s + size).min(len)).collect()
}

/// One chunk as the coordinator sends it to stage 0.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPlan {
    /// The pipeline sequence: an input, or a shared prompt.
    pub seq: u64,
    pub chunk: u32,
    /// First chunk of a response: start from a copy of this sequence's keys/values.
    pub fork_from: Option<u64>,
    /// Token ids of this chunk.
    pub ids: Range<usize>,
    /// Which input's ids `ids` index (`prompt` chunks index the group's first input).
    pub input: usize,
    /// The sequence's last chunk: stages free its keys/values once it has passed.
    pub end: bool,
}

/// Work sent down the pipeline, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Chunk(ChunkPlan),
    /// Frees a shared prompt's keys/values once every response has forked from it.
    Free(u64),
}

/// For input `i`: the sequence whose logits come first (a shared prompt), if any, and its own
/// sequence id.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSeqs {
    pub prompt: Option<u64>,
    pub own: u64,
}

/// Plans the chunks of `rows` (token ids per input). `groups`: consecutive inputs that share a
/// prompt (as `shared_prompt_runs` finds them); a group of two or more runs its prompt
/// (`plan::shared_prompt_tokens`, under the model's `pad_token_id`) once as a prompt sequence and
/// each input continues from a fork of it. Each sequence is cut
/// into chunks of [`chunk_len`] tokens. Sequence ids start at `next_seq`, which is advanced.
pub fn plan(
    rows: &[&[u32]],
    groups: &[Range<usize>],
    pad_token_id: Option<u32>,
    chunk_tokens: usize,
    stages: usize,
    next_seq: &mut u64,
) -> (Vec<Step>, Vec<InputSeqs>) {
    let mut steps = Vec::new();
    let mut seqs = Vec::with_capacity(rows.len());
    let mut new_seq = || {
        let s = *next_seq;
        *next_seq += 1;
        s
    };
    let push_seq = |steps: &mut Vec<Step>, seq: u64, input: usize, span: Range<usize>, fork_from: Option<u64>| {
        let parts = chunks(span.len(), chunk_len(span.len(), stages, chunk_tokens));
        let last = parts.len().saturating_sub(1);
        for (c, part) in parts.into_iter().enumerate() {
            steps.push(Step::Chunk(ChunkPlan {
                seq,
                chunk: c as u32,
                fork_from: fork_from.filter(|_| c == 0),
                ids: span.start + part.start..span.start + part.end,
                input,
                end: c == last,
            }));
        }
    };
    for g in groups {
        let members = &rows[g.clone()];
        let shared =
            if members.len() > 1 { rewardlens_models::plan::shared_prompt_tokens(members, pad_token_id) } else { 0 };
        let prompt = if shared > 0 {
            let p = new_seq();
            push_seq(&mut steps, p, g.start, 0..shared, None);
            Some(p)
        } else {
            None
        };
        for i in g.clone() {
            let own = new_seq();
            let start = if prompt.is_some() { shared } else { 0 };
            push_seq(&mut steps, own, i, start..rows[i].len(), prompt);
            seqs.push(InputSeqs { prompt, own });
        }
        if let Some(p) = prompt {
            steps.push(Step::Free(p));
        }
    }
    (steps, seqs)
}

/// Coordinator -> stage, as JSON text (`msg`); hidden states and weight pieces travel beside it
/// as transferred `ArrayBuffer`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageMsg {
    /// Loads the stage. The pieces (buffers, in order) are the byte ranges `pieces` names of
    /// file `file` (0 for a GGUF, else the shard index in `shards`). `config_json`: a
    /// safetensors checkpoint's config.json (a GGUF carries its own). `next` (a port) is where
    /// outputs go.
    Init {
        index: usize,
        stages: usize,
        layers: Range<usize>,
        gguf: bool,
        shards: Vec<(String, u64)>,
        pieces: Vec<Piece>,
        config_json: Option<String>,
        /// `q8_0` / `q4_k`: quantize a float checkpoint while loading.
        quantize: Option<String>,
        /// Test hook (`?crash_stage=K`, browser tests only): trap on the first chunk.
        #[serde(default)]
        trap: bool,
    },
    /// A chunk: `ids` for stage 0, else the hidden states in the buffer (`tokens` rows).
    Chunk {
        seq: u64,
        chunk: u32,
        fork_from: Option<u64>,
        ids: Option<Vec<u32>>,
        tokens: usize,
        end: bool,
    },
    Free {
        seq: u64,
    },
    /// Drops every sequence's keys/values (after a failed or cancelled job).
    Reset,
}

/// A byte range of one file, sent to a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub file: usize,
    pub offset: u64,
    pub len: u64,
}

/// Stage -> coordinator (its own `postMessage` for `Ready`/`LoadFailed`; the last stage's port
/// for `Logits`; `Failed` travels down the ports so it stays in order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StageReply {
    /// `kernel`: what multiplies the stage's linear layers (the page's kernel line).
    Ready {
        index: usize,
        #[serde(default)]
        kernel: String,
    },
    LoadFailed {
        index: usize,
        code: String,
        message: String,
    },
    Logits {
        seq: u64,
        chunk: u32,
        logits: Vec<Vec<f32>>,
    },
    Failed {
        seq: u64,
        index: usize,
        message: String,
    },
}

/// What the coordinator collects: logits per position of each sequence, in chunk order.
#[derive(Debug, Default)]
pub struct Collector {
    got: std::collections::HashMap<u64, (u32, Vec<Vec<f32>>)>,
    done: std::collections::HashSet<u64>,
}

impl Collector {
    /// Adds a chunk's logits; an out-of-order chunk is an error (a broken invariant, never
    /// silently wrong scores).
    pub fn add(&mut self, seq: u64, chunk: u32, logits: Vec<Vec<f32>>, end: bool) -> Result<(), String> {
        let entry = self.got.entry(seq).or_insert((0, Vec::new()));
        if entry.0 != chunk {
            return Err(format!("sequence {seq}: chunk {chunk} arrived, chunk {} was expected", entry.0));
        }
        entry.0 += 1;
        entry.1.extend(logits);
        if end {
            self.done.insert(seq);
        }
        Ok(())
    }

    pub fn is_done(&self, seq: u64) -> bool {
        self.done.contains(&seq)
    }

    /// An input's logits at every position: its shared prompt's, then its own.
    pub fn positions(&self, s: &InputSeqs) -> Option<Vec<Vec<f32>>> {
        let mut out = match s.prompt {
            Some(p) if self.is_done(p) => self.got.get(&p)?.1.clone(),
            Some(_) => return None,
            None => Vec::new(),
        };
        if !self.is_done(s.own) {
            return None;
        }
        out.extend(self.got.get(&s.own)?.1.iter().cloned());
        Some(out)
    }
}

/// Bytes of a file a stage holds only some ranges of (`B`: a JS array in the browser, a
/// `Vec<u8>` in tests). A read outside them is an error, never a panic.
pub struct Pieces<B> {
    len: u64,
    /// Sorted by offset.
    parts: Vec<(u64, B)>,
}

/// Bytes one piece holds.
pub trait PieceBytes {
    fn piece_len(&self) -> u64;
    fn copy_to(&self, start: u64, buf: &mut [u8]);
}

impl PieceBytes for Vec<u8> {
    fn piece_len(&self) -> u64 {
        self.len() as u64
    }
    fn copy_to(&self, start: u64, buf: &mut [u8]) {
        buf.copy_from_slice(&self[start as usize..start as usize + buf.len()]);
    }
}

impl<B: PieceBytes> Pieces<B> {
    pub fn new(len: u64, mut parts: Vec<(u64, B)>) -> Self {
        parts.sort_by_key(|p| p.0);
        Self { len, parts }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let i = self.parts.partition_point(|p| p.0 <= offset);
        let found = i.checked_sub(1).map(|i| &self.parts[i]).filter(|(o, b)| end <= o + b.piece_len());
        match found {
            Some((o, b)) => {
                b.copy_to(offset - o, buf);
                Ok(())
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bytes {offset}..{end} are not among the ranges this pipeline stage was sent"),
            )),
        }
    }
}

/// The ranges of a sorted, possibly overlapping list, merged (fewer, larger transfers).
pub fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges.into_iter().filter(|r| !r.is_empty()) {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_count_follows_setting_cores_memory_and_layers() {
        assert_eq!(worker_count(Some(3), 2, None, 0, 24), 3);
        assert_eq!(worker_count(Some(0), 2, None, 0, 24), 1);
        assert_eq!(worker_count(Some(8), 16, None, 0, 2), 2);
        assert_eq!(worker_count(None, 16, None, 0, 24), MAX_AUTO_WORKERS);
        assert_eq!(worker_count(None, 2, None, 0, 24), 2);
        // 8 GiB device, a 3.9 GiB model: 100 MiB spare, room for one extra worker.
        assert_eq!(worker_count(None, 8, Some(8 << 30), (4 << 30) - (100 << 20), 24), 2);
        assert_eq!(worker_count(None, 8, Some(2 << 30), 2 << 30, 24), 1);
    }

    #[test]
    fn chunks_cover_the_sequence() {
        assert_eq!(chunks(5, 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(chunks(4, 4), vec![0..4]);
        assert!(chunks(0, 4).is_empty());
    }

    #[test]
    fn shared_prompt_runs_once_and_each_response_forks() {
        let a = [1, 2, 3, 4, 5, 6];
        let b = [1, 2, 3, 4, 9];
        let c = [7, 8, 9];
        let rows: Vec<&[u32]> = vec![&a, &b, &c];
        let mut next = 10;
        let (steps, seqs) = plan(&rows, &[0..2, 2..3], None, 2, 1, &mut next);
        assert_eq!(next, 14);
        assert_eq!(
            seqs,
            vec![
                InputSeqs { prompt: Some(10), own: 11 },
                InputSeqs { prompt: Some(10), own: 12 },
                InputSeqs { prompt: None, own: 13 }
            ]
        );
        let chunk = |seq, chunk, fork_from, ids: Range<usize>, input, end| {
            Step::Chunk(ChunkPlan { seq, chunk, fork_from, ids, input, end })
        };
        assert_eq!(
            steps,
            vec![
                chunk(10, 0, None, 0..2, 0, false),
                chunk(10, 1, None, 2..4, 0, true),
                chunk(11, 0, Some(10), 4..6, 0, true),
                chunk(12, 0, Some(10), 4..5, 1, true),
                Step::Free(10),
                chunk(13, 0, None, 0..2, 2, false),
                chunk(13, 1, None, 2..3, 2, true),
            ]
        );
    }

    #[test]
    fn short_sequences_are_cut_finer_on_a_pipeline() {
        // One stage: the setting as it is.
        assert_eq!(chunk_len(64, 1, 128), 128);
        // 2 stages: 4 chunks each where the bounds allow.
        assert_eq!(chunk_len(64, 2, 128), 16);
        assert_eq!(chunk_len(512, 2, 128), 64);
        assert_eq!(chunk_len(2048, 2, 128), 128);
        assert_eq!(chunk_len(10, 2, 128), 16);
        // A smaller setting wins over the floor.
        assert_eq!(chunk_len(900, 2, 8), 8);
        let ids: Vec<u32> = (0..64).collect();
        let (steps, _) = plan(&[&ids], std::slice::from_ref(&(0..1)), None, 128, 2, &mut 0);
        assert_eq!(steps.len(), 4);
        assert!(matches!(&steps[3], Step::Chunk(c) if c.ids == (48..64) && c.end));
    }

    #[test]
    fn a_response_equal_to_the_prompt_keeps_one_token() {
        let a = [1, 2, 3];
        let b = [1, 2, 3, 4];
        let rows: Vec<&[u32]> = vec![&a, &b];
        let (steps, _) = plan(&rows, std::slice::from_ref(&(0..2)), None, 8, 1, &mut 0);
        assert_eq!(
            steps[0],
            Step::Chunk(ChunkPlan { seq: 0, chunk: 0, fork_from: None, ids: 0..2, input: 0, end: true })
        );
        assert!(matches!(&steps[1], Step::Chunk(c) if c.ids == (2..3) && c.fork_from == Some(0)));
    }

    #[test]
    fn collector_joins_prompt_and_response_in_order() {
        let mut c = Collector::default();
        c.add(1, 0, vec![vec![1.0]], false).unwrap();
        assert!(c.add(1, 2, vec![vec![9.0]], true).is_err());
        c.add(1, 1, vec![vec![2.0]], true).unwrap();
        let s = InputSeqs { prompt: Some(1), own: 2 };
        assert_eq!(c.positions(&s), None);
        c.add(2, 0, vec![vec![3.0]], true).unwrap();
        assert_eq!(c.positions(&s), Some(vec![vec![1.0], vec![2.0], vec![3.0]]));
    }

    #[test]
    fn pieces_read_inside_and_refuse_outside() {
        let p = Pieces::new(100, vec![(50, vec![5u8; 10]), (0, vec![1, 2, 3, 4])]);
        let mut buf = [0u8; 3];
        p.read_at(1, &mut buf).unwrap();
        assert_eq!(buf, [2, 3, 4]);
        p.read_at(57, &mut buf).unwrap();
        assert_eq!(buf, [5, 5, 5]);
        assert!(p.read_at(2, &mut buf).is_err()); // runs past the first piece
        assert!(p.read_at(20, &mut buf).is_err());
        assert!(p.read_at(u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn ranges_merge() {
        assert_eq!(merge_ranges(vec![10..20, 0..5, 5..8, 15..30, 40..40]), vec![0..8, 10..30]);
    }

    #[test]
    fn stage_messages_round_trip() {
        let m = StageMsg::Chunk { seq: 3, chunk: 1, fork_from: Some(2), ids: Some(vec![1, 2]), tokens: 2, end: true };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<StageMsg>(&text).unwrap(), m);
        let r = StageReply::Logits { seq: 3, chunk: 1, logits: vec![vec![0.5]] };
        assert_eq!(serde_json::from_str::<StageReply>(&serde_json::to_string(&r).unwrap()).unwrap(), r);
    }
}
