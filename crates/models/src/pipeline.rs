//! A decoder split into pipeline stages, for running one model across several workers that
//! share no memory (the browser's Web Workers without `SharedArrayBuffer`).
//!
//! Each [`DecoderStage`] holds a contiguous slice of the decoder layers ([`stage_layers`]), the
//! embedding table if it is first and the final norm and score head if it is last, and loads
//! only those tensors; [`stage_byte_ranges_gguf`] and [`stage_byte_ranges_safetensors`] say which
//! bytes of the checkpoint files that takes, so a worker can be handed only those pieces
//! ([`SparseBytes`]). A sequence goes through in chunks: chunk n is positions
//! `offset..offset + t`, attending causally to the keys and values its stage kept for the
//! earlier chunks ([`StageKv`]), so stage k works on chunk n while stage k + 1 works on chunk
//! n - 1. Cloning a `StageKv` forks it: N responses to one prompt continue one prompt pass.
//!
//! The layer math is the decoder's own (`decoder::layers_forward`), so chunked scoring equals
//! [`crate::DecoderRewardModel::forward`] up to float rounding.

use crate::config::{HeadKind, ModelConfig};
use crate::decoder::{self, HeadOutput, KvStore, Layer, LayerKv, Masks, RmsNorm, Rope, DTYPE, QUERY_BLOCK};
use crate::gguf::{ByteSource, GgufFile, HEADER_READ_AHEAD};
use crate::linear::Linear;
use crate::plan;
use crate::profile::{self, Op};
use crate::quantized::gguf_name;
use crate::weights::WeightSource;
use crate::{st_header, ModelError, Result};
use candle_core::quantized::QMatMul;
use candle_core::{Device, Tensor};
use std::ops::Range;

/// `num_layers` layers split into at most `stages` contiguous, non-empty ranges whose sizes
/// differ by at most one (the earlier stages take the extra layers), covering every layer once.
/// Fewer ranges than `stages` when there are fewer layers; one empty range for a model of none.
pub fn stage_layers(num_layers: usize, stages: usize) -> Vec<Range<usize>> {
    let stages = stages.clamp(1, num_layers.max(1));
    let (base, extra) = (num_layers / stages, num_layers % stages);
    let mut start = 0;
    (0..stages)
        .map(|i| {
            let end = start + base + usize::from(i < extra);
            let r = start..end;
            start = end;
            r
        })
        .collect()
}

/// One sequence's new tokens for a stage (batch 1).
#[derive(Debug, Clone, Copy)]
pub enum StageInput<'a> {
    /// Token ids: the first stage's input.
    Ids(&'a [u32]),
    /// The previous stage's hidden states, `tokens × hidden_size` row-major.
    Hidden { data: &'a [f32], tokens: usize },
}

/// What a stage hands on for one chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum StageOutput {
    /// Hidden states after this stage's last layer, `tokens × hidden_size` row-major.
    Hidden(Vec<f32>),
    /// The last stage's head logits (`num_labels`) at every position of the chunk; pool a whole
    /// sequence's with [`head_output`].
    Logits(Vec<Vec<f32>>),
}

/// Keys and values of one stage's layers for the tokens it has seen, chunk by chunk. Cloning is
/// cheap (tensors are shared, never written in place) and forks the sequence: a prompt's
/// `StageKv` cloned once per response lets each response continue from the prompt without
/// recomputing it.
///
/// Each chunk's keys and values are kept as their own piece, joined only for the layer being
/// run: keeping one growing tensor per layer would hold every layer's old and new copies at once
/// while a chunk runs (about twice the keys and values at the end of a long sequence, and a
/// wasm heap never shrinks back).
#[derive(Clone, Default)]
pub struct StageKv {
    /// Per layer of the stage, per chunk, (1, kv_heads, chunk tokens, head_dim); empty before
    /// the first chunk.
    layers: Vec<Vec<LayerKv>>,
    tokens: usize,
}

impl StageKv {
    /// Tokens seen so far: the position of the next chunk's first token.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Bytes the keys and values hold.
    pub fn size_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.layers.iter().flatten().map(|(k, v)| bytes(k) + bytes(v)).sum()
    }

    /// Drops what a failed chunk kept in some layers, so the next try starts from the same state.
    fn truncate(&mut self, chunks: usize) {
        if chunks == 0 {
            self.layers.clear();
        }
        for pieces in &mut self.layers {
            pieces.truncate(chunks);
        }
    }
}

impl KvStore for StageKv {
    fn past(&self, layer: usize) -> Result<Option<LayerKv>> {
        let Some(pieces) = self.layers.get(layer).filter(|p| !p.is_empty()) else { return Ok(None) };
        let _p = profile::span(Op::Copy);
        let join = |part: fn(&LayerKv) -> &Tensor| -> Result<Tensor> {
            let parts: Vec<&Tensor> = pieces.iter().map(part).collect();
            Ok(Tensor::cat(&parts, 2)?)
        };
        Ok(Some((join(|kv| &kv.0)?, join(|kv| &kv.1)?)))
    }

    fn keep(&mut self, layer: usize, (k, v): LayerKv) -> Result<()> {
        let _p = profile::span(Op::Copy);
        let new = k.dim(2)? - self.tokens;
        // A copy of the chunk's part alone: a narrowed view would keep the joined tensor alive.
        let chunk = |t: Tensor| -> Result<Tensor> { Ok(t.narrow(2, self.tokens, new)?.force_contiguous()?) };
        let piece = (chunk(k)?, chunk(v)?);
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, Vec::new);
        }
        self.layers[layer].push(piece);
        Ok(())
    }
}

impl std::fmt::Debug for StageKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageKv").field("layers", &self.layers.len()).field("tokens", &self.tokens).finish()
    }
}

/// The final norm and score head, held by the last stage.
struct Tail {
    norm: RmsNorm,
    score: Vec<Linear>,
}

/// A contiguous slice of a decoder's layers, with the embedding table if it starts at layer 0
/// and the final norm and score head if it ends at the last layer.
pub struct DecoderStage {
    config: ModelConfig,
    range: Range<usize>,
    embed: Option<QMatMul>,
    layers: Vec<Layer>,
    tail: Option<Tail>,
    inv_freq: Vec<f32>,
    device: Device,
}

impl DecoderStage {
    /// Loads layers `layers` (and the embedding / final norm and head where the range touches
    /// the model's ends) from `w`, reading no other tensor: the tensors read are exactly
    /// [`stage_tensor_names`]'s.
    pub fn load(config: ModelConfig, w: &dyn WeightSource, device: &Device, layers: Range<usize>) -> Result<Self> {
        let n = config.num_hidden_layers;
        if layers.start >= layers.end && n > 0 || layers.end > n {
            return Err(ModelError::Stage(format!("layers {layers:?} are not a non-empty slice of the model's {n}")));
        }
        let c = &config;
        let embed = if layers.start == 0 {
            Some(w.embedding_weight(plan::EMBEDDING, c.vocab_size, c.hidden_size, DTYPE, device)?)
        } else {
            None
        };
        let stage_layers = layers.clone().map(|i| Layer::load(w, c, i, device)).collect::<Result<Vec<_>>>()?;
        let tail = if layers.end == n {
            Some(Tail {
                norm: RmsNorm::load(w, &plan::final_norm(c), c.rms_norm_eps, device)?,
                score: decoder::load_score(w, c, device)?,
            })
        } else {
            None
        };
        let inv_freq = c.rope_inv_freq();
        Ok(Self { config, range: layers, embed, layers: stage_layers, tail, inv_freq, device: device.clone() })
    }

    pub fn is_first(&self) -> bool {
        self.range.start == 0
    }

    pub fn is_last(&self) -> bool {
        self.range.end == self.config.num_hidden_layers
    }

    pub fn layers(&self) -> Range<usize> {
        self.range.clone()
    }

    /// Which kernel multiplies this stage's linear layers (as [`crate::Linear::kernel_name`]).
    pub fn linear_kernel(&self) -> String {
        self.layers.first().map_or_else(|| "none".into(), crate::decoder::Layer::kernel_name)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Runs one chunk of a sequence through this stage: positions `kv.tokens()..` onward,
    /// attending to `kv`'s earlier tokens and its own (causal). `kv` gains the chunk's keys and
    /// values. The first stage takes [`StageInput::Ids`], the others the previous stage's
    /// [`StageOutput::Hidden`]; the last stage returns logits at every position of the chunk.
    pub fn forward_chunk(&self, kv: &mut StageKv, input: StageInput<'_>) -> Result<StageOutput> {
        if !(kv.layers.is_empty() && kv.tokens == 0 || kv.layers.len() == self.layers.len()) {
            return Err(ModelError::Stage(format!(
                "the keys and values passed hold {} layers, this stage (layers {:?}) has {}",
                kv.layers.len(),
                self.range,
                self.layers.len()
            )));
        }
        let hidden = self.config.hidden_size;
        let (x, t) = match (input, &self.embed) {
            (StageInput::Ids(ids), Some(table)) => {
                plan::check_rows(&self.config, &[ids])?;
                let ids_t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &self.device)?;
                (decoder::embed(table, &ids_t)?, ids.len())
            }
            (StageInput::Hidden { data, tokens }, None) => {
                if tokens == 0 {
                    return Err(ModelError::EmptyInput);
                }
                if Some(data.len()) != tokens.checked_mul(hidden) {
                    return Err(ModelError::Stage(format!(
                        "{} hidden values for {tokens} tokens of width {hidden}",
                        data.len()
                    )));
                }
                let _p = profile::span(Op::Copy);
                (Tensor::from_slice(data, (1, tokens, hidden), &self.device)?, tokens)
            }
            (StageInput::Ids(_), None) => {
                return Err(ModelError::Stage(format!(
                    "layers {:?} start after the embedding: pass the previous stage's hidden states, not token ids",
                    self.range
                )))
            }
            (StageInput::Hidden { .. }, Some(_)) => {
                return Err(ModelError::Stage("the first stage embeds token ids: pass ids, not hidden states".into()))
            }
        };
        let offset = kv.tokens;
        let rope = Rope::new(&self.inv_freq, offset, t, &self.device)?;
        let mask = Masks::single(t, offset, QUERY_BLOCK, &self.device);
        let chunks = kv.layers.first().map_or(0, Vec::len);
        let x = decoder::layers_forward(&self.layers, x, &rope, &mask, kv).inspect_err(|_| kv.truncate(chunks))?;
        kv.tokens = offset + t;
        match &self.tail {
            Some(tail) => {
                let logits = decoder::score_head(&tail.score, &tail.norm.forward(&x)?)?;
                let _p = profile::span(Op::Copy);
                Ok(StageOutput::Logits(logits.get(0)?.to_vec2()?))
            }
            None => {
                let _p = profile::span(Op::Copy);
                Ok(StageOutput::Hidden(x.flatten_all()?.to_vec1()?))
            }
        }
    }
}

/// The head output of one whole sequence `ids` from the last stage's logits at each of its
/// positions (every chunk's [`StageOutput::Logits`] in order): a sequence classifier's logits at
/// `plan::pooled_index` (the one pooling rule every backend uses), a token classifier's all.
pub fn head_output(config: &ModelConfig, ids: &[u32], logits_per_position: Vec<Vec<f32>>) -> Result<HeadOutput> {
    if ids.is_empty() {
        return Err(ModelError::EmptyInput);
    }
    if logits_per_position.len() != ids.len() {
        return Err(ModelError::Stage(format!(
            "{} positions of logits for a sequence of {} tokens",
            logits_per_position.len(),
            ids.len()
        )));
    }
    Ok(match config.architecture.head {
        HeadKind::Sequence => {
            let p = plan::pooled_index(ids, config.pad_token_id);
            let logits = logits_per_position.into_iter().nth(p).unwrap_or_default();
            HeadOutput::Sequence { logits, pooled_index: p }
        }
        HeadKind::Token => HeadOutput::Token(logits_per_position),
    })
}

/// The transformers names of every tensor [`DecoderStage::load`] reads for `layers`.
pub fn stage_tensor_names(c: &ModelConfig, layers: Range<usize>) -> Vec<String> {
    plan::tensors(c, layers).into_iter().map(|(name, _)| name).collect()
}

/// Sorts and merges byte ranges (touching or overlapping ones become one).
fn merged(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.into_iter().filter(|r| r.start < r.end) {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The byte ranges of a GGUF file a stage of `layers` reads: the header (metadata and tensor
/// directory, with the parser's read-ahead) and its tensors'. `file` is the whole file, parsed
/// by whoever hands the pieces out. Sorted and merged.
pub fn stage_byte_ranges_gguf(file: &GgufFile, config: &ModelConfig, layers: Range<usize>) -> Result<Vec<Range<u64>>> {
    let len = file.tensors.values().map(|t| t.offset + t.size).max().unwrap_or(0);
    // The header ends before the first tensor's data; its parser reads up to
    // HEADER_READ_AHEAD bytes past where it stands, capped at the file's end.
    let header_end = file.tensors.values().map(|t| t.offset).min().unwrap_or(0);
    let file_len = file.file_len().max(len);
    let header = 0..(header_end.saturating_add(HEADER_READ_AHEAD)).min(file_len);
    let mut ranges = Vec::from([header]);
    for hf in stage_tensor_names(config, layers) {
        let info = gguf_name(&hf)
            .and_then(|g| file.tensors.get(&g))
            .ok_or_else(|| ModelError::MissingTensor { name: hf.clone() })?;
        ranges.push(info.offset..info.offset + info.size);
    }
    Ok(merged(ranges))
}

/// The byte ranges of each safetensors shard (in `shards`' order) a stage of `layers` reads:
/// every shard's header (the loader reads each directory) and the stage's tensors wherever they
/// are. Every tensor must be in some shard. Sorted and merged per shard.
pub fn stage_byte_ranges_safetensors(
    shards: &[&dyn ByteSource],
    config: &ModelConfig,
    layers: Range<usize>,
) -> Result<Vec<Vec<Range<u64>>>> {
    let dirs = shards.iter().map(|s| Ok((st_header::read_directory(*s)?, *s))).collect::<Result<Vec<_>>>()?;
    let mut out: Vec<Vec<Range<u64>>> = Vec::with_capacity(dirs.len());
    for (_, src) in &dirs {
        let mut first = [0u8; 8];
        src.read_at(0, &mut first).map_err(|e| ModelError::Io(e.to_string()))?;
        let header = 0..st_header::header_len(&first, src.len())?;
        out.push(Vec::from([header]));
    }
    for name in stage_tensor_names(config, layers) {
        // The first shard holding it, as `StreamedSafetensors` reads it.
        let (shard, t) = dirs
            .iter()
            .enumerate()
            .find_map(|(i, (dir, _))| dir.iter().find(|t| t.name == name).map(|t| (i, t)))
            .ok_or_else(|| ModelError::MissingTensor { name: name.clone() })?;
        out[shard].push(t.start..t.end);
    }
    Ok(out.into_iter().map(merged).collect())
}

/// A file of which only some byte ranges are present (a pipeline stage's share of a
/// checkpoint): reads inside the pieces succeed, any read touching a missing byte is an io error
/// naming the range, so loading a tensor the stage was not given fails with that tensor's name.
#[derive(Debug, Clone, Default)]
pub struct SparseBytes {
    /// Sorted, non-overlapping (offset, bytes).
    pieces: Vec<(u64, Vec<u8>)>,
    len: u64,
}

impl SparseBytes {
    /// `pieces` of a file of `len` bytes, in any order; overlapping or out-of-file pieces are
    /// refused.
    pub fn new(len: u64, mut pieces: Vec<(u64, Vec<u8>)>) -> Result<Self> {
        pieces.sort_by_key(|p| p.0);
        let mut end = 0u64;
        for (off, bytes) in &pieces {
            let piece_end = off.checked_add(bytes.len() as u64).filter(|&e| e <= len).ok_or_else(|| {
                ModelError::Io(format!("piece at {off} of {} bytes lies past the file's end ({len})", bytes.len()))
            })?;
            if *off < end {
                return Err(ModelError::Io(format!("piece at {off} overlaps the one before (ending at {end})")));
            }
            end = piece_end;
        }
        Ok(Self { pieces, len })
    }

    /// Copies `ranges` out of a whole file (the side that hands pieces out, and tests).
    pub fn from_source(src: &dyn ByteSource, ranges: &[Range<u64>]) -> Result<Self> {
        let pieces = merged(ranges.to_vec())
            .into_iter()
            .map(|r| {
                let mut buf = vec![0u8; (r.end - r.start) as usize];
                src.read_at(r.start, &mut buf).map_err(|e| ModelError::Io(format!("bytes {r:?}: {e}")))?;
                Ok((r.start, buf))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(src.len(), pieces)
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> u64 {
        self.pieces.iter().map(|p| p.1.len() as u64).sum()
    }
}

impl ByteSource for SparseBytes {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        let missing = || {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("bytes {offset}..{end} were not given to this stage"),
            )
        };
        if buf.is_empty() && offset <= self.len {
            return Ok(());
        }
        // The piece starting at or before `offset`.
        let i = self.pieces.partition_point(|p| p.0 <= offset);
        let (start, bytes) = i.checked_sub(1).map(|i| &self.pieces[i]).ok_or_else(missing)?;
        let from = (offset - start) as usize;
        let src = bytes.get(from..from.checked_add(buf.len()).ok_or_else(missing)?).ok_or_else(missing)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}
