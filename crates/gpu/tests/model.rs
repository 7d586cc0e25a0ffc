//! The GPU forward pass against the CPU engine (itself held to transformers' goldens) on every
//! fixture model, in every weight format, within 1e-3 relative: for f16, Q8_0 and Q4_0 the CPU
//! engine runs on the same rounded weights. Packed batches and buffers split over small
//! bindings give the same outputs, pooled where the CPU engine (and transformers) pools.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use rewardlens_gpu::kernels::decoded_weights;
use rewardlens_gpu::{Gpu, GpuOptions, GpuRewardModel, WeightFormat};
use rewardlens_models::weights::WeightSource;
use rewardlens_models::{CheckpointFiles, HeadKind, HeadOutput, ModelConfig, Padding, RewardModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

const MODELS: [&str; 7] =
    ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token", "llama-eot-seq"];

/// A Llama-3 reward model whose pad token is `<|eot_id|>`: every rendered conversation ends with
/// it, so transformers pools the token before the last.
const EOT_PAD: &str = "llama-eot-seq";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let g: Value = serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap();
    g["conversations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.clone(), serde_json::from_value(c["input_ids"].clone()).unwrap()))
        .collect()
}

fn gpu_model(name: &str, format: WeightFormat, options: GpuOptions) -> GpuRewardModel {
    let files = CheckpointFiles::from_dir(&fixture(name)).unwrap();
    let config = ModelConfig::from_json(&files.config_json).unwrap();
    let rewardlens_models::WeightFiles::Paths(paths) = &files.weights else { unreachable!("from_dir gives paths") };
    let weights = rewardlens_models::weights::SafetensorsWeights::mmap(paths).unwrap();
    let gpu = Gpu::with_options_blocking(options).unwrap_or_else(|e| panic!("{e}"));
    GpuRewardModel::load(gpu, config, &weights, format).unwrap()
}

fn rows(o: HeadOutput) -> Vec<Vec<f32>> {
    match o {
        HeadOutput::Sequence { logits, .. } => vec![logits],
        HeadOutput::Token(rows) => rows,
    }
}

fn cpu_rows(m: &RewardModel, ids: &[u32]) -> Vec<Vec<f32>> {
    rows(m.forward_padded(&[ids], Padding::Right).unwrap().remove(0))
}

fn gpu_rows(m: &GpuRewardModel, ids: &[u32]) -> Vec<Vec<f32>> {
    rows(m.forward_blocking(&[ids]).unwrap().remove(0))
}

/// Where the plan every backend follows pools `ids` (`None` for token heads).
fn plan_pooled(m: &RewardModel, ids: &[u32]) -> Option<usize> {
    let c = m.config();
    (c.architecture.head == HeadKind::Sequence).then(|| rewardlens_models::plan::pooled_index(ids, c.pad_token_id))
}

fn gpu_pooled(o: &HeadOutput) -> Option<usize> {
    match o {
        HeadOutput::Sequence { pooled_index, .. } => Some(*pooled_index),
        HeadOutput::Token(_) => None,
    }
}

fn worst_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs() / q.abs().max(1.0)))
        .fold(0f32, f32::max)
}

/// The checkpoint with every layer matrix and the embedding table replaced by what `format`
/// stores (decoded back to f32): the CPU engine on it computes exactly what the GPU kernels should, so quantized
/// formats are held to the same 1e-3 as f32 (only summation order differs).
struct DecodedWeights<'a> {
    inner: &'a dyn WeightSource,
    format: WeightFormat,
}

impl WeightSource for DecodedWeights<'_> {
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> rewardlens_models::Result<Tensor> {
        self.inner.tensor(name, shape, dtype, device)
    }
    fn linear_weight(
        &self,
        name: &str,
        out: usize,
        inp: usize,
        dtype: DType,
        device: &Device,
    ) -> rewardlens_models::Result<QMatMul> {
        let w: Vec<f32> = self.inner.tensor(name, &[out, inp], DType::F32, device)?.flatten_all()?.to_vec1()?;
        let w = if self.format.fits_rows(inp) { decoded_weights(self.format, &w, out, inp).unwrap() } else { w };
        Ok(QMatMul::Tensor(Tensor::from_vec(w, (out, inp), device)?.to_dtype(dtype)?))
    }
    /// The GPU holds the table in f16 unless the matrices are f32.
    fn embedding_weight(
        &self,
        name: &str,
        vocab: usize,
        hidden: usize,
        dtype: DType,
        device: &Device,
    ) -> rewardlens_models::Result<QMatMul> {
        let t = self.inner.tensor(name, &[vocab, hidden], DType::F32, device)?;
        let t = if self.format == WeightFormat::F32 { t } else { t.to_dtype(DType::F16)?.to_dtype(DType::F32)? };
        Ok(QMatMul::Tensor(t.to_dtype(dtype)?))
    }
}

fn cpu_model(name: &str, format: WeightFormat) -> RewardModel {
    let files = CheckpointFiles::from_dir(&fixture(name)).unwrap();
    let rewardlens_models::WeightFiles::Paths(paths) = &files.weights else { unreachable!("from_dir gives paths") };
    let weights = rewardlens_models::weights::SafetensorsWeights::mmap(paths).unwrap();
    let text = rewardlens_models::CheckpointText {
        config_json: &files.config_json,
        tokenizer_json: &files.tokenizer_json,
        tokenizer_config_json: &files.tokenizer_config_json,
        chat_template_jinja: files.chat_template_jinja.as_deref(),
    };
    let decoded = DecodedWeights { inner: &weights, format };
    RewardModel::from_checkpoint(&text, &decoded, None, &Device::Cpu).unwrap()
}

const FORMATS: [WeightFormat; 4] = [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0];

#[test]
fn gpu_forward_matches_the_cpu_engine_on_every_fixture_in_every_format() {
    for name in MODELS {
        let exact = cpu_model(name, WeightFormat::F32);
        let cases = cases(name);
        for format in FORMATS {
            let cpu = cpu_model(name, format);
            let model = gpu_model(name, format, GpuOptions::default());
            let (mut worst, mut drift) = (0f32, 0f32);
            // The ~2,000-token case in f32 only: attention is the same kernel in every format,
            // and on lavapipe (CI) each long pass costs tens of seconds.
            for (case, ids) in cases.iter().filter(|(case, _)| format == WeightFormat::F32 || case != "long") {
                let got = gpu_rows(&model, ids);
                let d = worst_diff(&got, &cpu_rows(&cpu, ids));
                assert!(d <= 1e-3, "{name}/{case}: {} GPU differs from the CPU engine by {d}", format.name());
                worst = worst.max(d);
                drift = drift.max(worst_diff(&got, &cpu_rows(&exact, ids)));
            }
            // f16 against the unrounded weights: measured at most 2.3e-6 on these fixtures.
            if format == WeightFormat::F16 {
                assert!(drift <= 1e-3, "{name}: f16 weights move the outputs by {drift}");
            }
            eprintln!(
                "{name} {} on {}: worst relative diff {worst:.2e} (against f32 weights: {drift:.2e})",
                format.name(),
                model.adapter()
            );
        }
    }
}

#[test]
fn batches_packed_and_split_over_small_bindings_match_single_sequences() {
    // A 64 KiB binding cap: the embedding table is split into ~600 chunks and the ~250 tokens
    // of the short cases take two passes or more of at most 128 (the long case, ~2,000 tokens, is the
    // other test's: on lavapipe a pass that long costs tens of seconds); no shader-f16 or
    // subgroups (the fallbacks).
    let options = GpuOptions { shader_f16: false, subgroups: false, max_binding: Some(64 << 10) };
    for name in ["qwen3-seq", "llama-token", EOT_PAD] {
        let cpu = RewardModel::load(CheckpointFiles::from_dir(&fixture(name)).unwrap(), &Device::Cpu).unwrap();
        let model = gpu_model(name, WeightFormat::F32, options);
        assert_eq!(model.max_pass_tokens(), 128);
        let cases: Vec<(String, Vec<u32>)> = cases(name).into_iter().filter(|(case, _)| case != "long").collect();
        assert!(cases.iter().map(|(_, ids)| ids.len()).sum::<usize>() > 128, "{name}: two passes");
        let batch: Vec<&[u32]> = cases.iter().map(|(_, ids)| ids.as_slice()).collect();
        let out = model.forward_blocking(&batch).unwrap();
        assert_eq!(out.len(), cases.len());
        for ((case, ids), o) in cases.iter().zip(out) {
            assert_eq!(gpu_pooled(&o), plan_pooled(&cpu, ids), "{name}/{case}: pooled index");
            let d = worst_diff(&rows(o), &cpu_rows(&cpu, ids));
            assert!(d <= 1e-3, "{name}/{case}: batched GPU differs by {d}");
        }
    }
    let model = gpu_model("qwen3-seq", WeightFormat::F32, options);
    let long = cases("qwen3-seq").into_iter().map(|(_, ids)| ids).max_by_key(Vec::len).unwrap();
    let err = model.forward_blocking(&[&long]).unwrap_err().to_string();
    assert!(err.contains("does not fit") && err.contains("128 tokens"), "{err}");
    let err = model.forward_blocking(&[&[u32::MAX]]).unwrap_err().to_string();
    assert!(err.contains("outside the model's vocabulary"), "{err}");
}

/// Answers to one prompt: the prompt is packed once per pass and the answers attend to it;
/// the outputs equal the CPU engine's on each whole row, also when the answers take several
/// passes (256 KiB bindings: 512 tokens a pass, so lavapipe's slow attention stays quick), and
/// with reuse off. Answers end with one or two pad tokens where the model has one, as
/// `<|eot_id|>` ends each turn for the EOT_PAD model.
#[test]
fn answers_to_one_prompt_pack_it_once_and_match_whole_rows() {
    let options = GpuOptions { shader_f16: false, subgroups: false, max_binding: Some(256 << 10) };
    for name in ["qwen3-seq", "llama-token", EOT_PAD] {
        let mut cpu = RewardModel::load(CheckpointFiles::from_dir(&fixture(name)).unwrap(), &Device::Cpu).unwrap();
        cpu.set_prefix_reuse(None);
        let mut model = gpu_model(name, WeightFormat::F32, options);
        assert_eq!(model.max_pass_tokens(), 512);
        // The first 200 tokens of the long case: a prompt spanning several key blocks.
        let mut prompt = cases(name).into_iter().find(|(k, _)| k == "long").unwrap().1;
        prompt.truncate(200);
        let vocab = model.config().vocab_size as u32;
        // Answers from 3 tokens up to the room a pass leaves after the prompt: two passes.
        let room = (model.max_pass_tokens() - prompt.len()) as u32;
        let pad = model.config().pad_token_id;
        let answers: Vec<Vec<u32>> = (0..5u32)
            .map(|r| {
                let own = 3 + r * (room - 3) / 4;
                let tail = pad.into_iter().cycle().take(1 + r as usize % 2);
                let own = (0..own - 2).map(|i| (i * 31 + r * 7 + 5) % vocab).filter(|&i| Some(i) != pad);
                prompt.iter().copied().chain(own).chain(tail).collect()
            })
            .collect();
        let refs: Vec<&[u32]> = answers.iter().map(|a| a.as_slice()).collect();
        assert!(prompt.len() + answers.iter().map(|a| a.len() - prompt.len()).sum::<usize>() > model.max_pass_tokens());
        assert!(answers.iter().all(|a| a.len() <= model.max_pass_tokens()));
        for reuse in [Some(rewardlens_models::plan::MIN_SHARED_PREFIX), None] {
            model.set_prefix_reuse(reuse);
            let out = model.forward_blocking(&refs).unwrap();
            for (i, (ids, o)) in answers.iter().zip(out).enumerate() {
                assert_eq!(gpu_pooled(&o), plan_pooled(&cpu, ids), "{name} answer {i}: pooled index");
                let d = worst_diff(&rows(o), &cpu_rows(&cpu, ids));
                assert!(d <= 1e-3, "{name} answer {i} (reuse {reuse:?}): GPU differs by {d}");
            }
        }
    }
}

/// The EOT_PAD model on the GPU against transformers itself: pooled at the token before the
/// trailing `<|eot_id|>` (as transformers does), which gives the golden logits, where the last
/// token's logits are measurably different. Alone and packed together, with prompt reuse.
#[test]
fn pad_token_ending_each_turn_is_pooled_before_it_like_transformers() {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(EOT_PAD).join("golden.json")).unwrap()).unwrap();
    let golden =
        |case: &str| -> Vec<f32> { serde_json::from_value(g["conversations"][case]["logits"].clone()).unwrap() };
    let mut model = gpu_model(EOT_PAD, WeightFormat::F32, GpuOptions::default());
    let eot = model.config().pad_token_id.expect("the fixture's pad token");
    // The short cases: the long one is held to the CPU engine by the first test.
    let cases: Vec<(String, Vec<u32>)> = cases(EOT_PAD).into_iter().filter(|(case, _)| case != "long").collect();
    let close = |a: &[f32], b: &[f32]| worst_diff(&[a.to_vec()], &[b.to_vec()]) <= 1e-3;
    for (case, ids) in &cases {
        assert_eq!(ids.last(), Some(&eot), "{case}: the rendered conversation ends with <|eot_id|>");
        let o = model.forward_blocking(&[ids]).unwrap().remove(0);
        assert_eq!(gpu_pooled(&o), Some(ids.len() - 2), "{case}: pooled index");
        assert!(close(&rows(o)[0], &golden(case)), "{case}: GPU score differs from transformers");
        let last = rewardlens_models::ForwardPass::forward_positions(&model, ids).unwrap().pop().unwrap();
        assert!(!close(&last, &golden(case)), "{case}: the last token scores like the pooled one");
    }
    let refs: Vec<&[u32]> = cases.iter().map(|(_, ids)| ids.as_slice()).collect();
    for reuse in [Some(1), None] {
        model.set_prefix_reuse(reuse);
        for ((case, ids), o) in cases.iter().zip(model.forward_blocking(&refs).unwrap()) {
            assert_eq!(gpu_pooled(&o), Some(ids.len() - 2), "{case} batched (reuse {reuse:?}): pooled index");
            assert!(close(&rows(o)[0], &golden(case)), "{case} batched (reuse {reuse:?}): differs from transformers");
        }
    }
}

/// The page's loading path: a checkpoint streamed from byte buffers, whose embedding table goes
/// up in pieces of rows (151,669 rows: 38 pieces, the last ragged), scores with the same bits
/// as the table read whole from the memory-mapped files.
#[test]
fn a_streamed_checkpoint_uploads_its_table_in_pieces_with_the_same_scores() {
    use rewardlens_models::gguf::ByteSource;
    use rewardlens_models::weights::{StreamedSafetensors, WeightSource};
    let name = "qwen3-seq";
    let files = CheckpointFiles::from_dir(&fixture(name)).unwrap();
    let config = ModelConfig::from_json(&files.config_json).unwrap();
    let rewardlens_models::WeightFiles::Paths(paths) = &files.weights else { unreachable!("from_dir gives paths") };
    let shards: Vec<(String, Box<dyn ByteSource>)> = paths
        .iter()
        .map(|p| (p.display().to_string(), Box::new(std::fs::read(p).unwrap()) as Box<dyn ByteSource>))
        .collect();
    let streamed = StreamedSafetensors::new(shards).unwrap();
    assert!(streamed.reads_rows());
    let gpu = Gpu::new_blocking().unwrap_or_else(|e| panic!("{e}"));
    let pieces = GpuRewardModel::load(gpu, config, &streamed, WeightFormat::F16).unwrap();
    let whole = gpu_model(name, WeightFormat::F16, GpuOptions::default());
    assert_eq!(pieces.weight_bytes(), whole.weight_bytes());
    for (case, ids) in cases(name) {
        let (a, b) = (gpu_rows(&pieces, &ids), gpu_rows(&whole, &ids));
        assert_eq!(a, b, "{name}/{case}: streamed and whole loads differ");
    }
}
