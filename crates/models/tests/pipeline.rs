//! Pipeline stages against the whole model and transformers' goldens: every fixture split into
//! 1, 2 and 3 stages and fed in chunks of 1, 5 and the whole sequence; forks; loading a stage
//! from only its byte ranges; profiling categories.

use candle_core::{DType, Device, Tensor};
use rewardlens_models::gguf::{ByteSource, GgufFile};
use rewardlens_models::pipeline::{
    head_output, stage_byte_ranges_gguf, stage_byte_ranges_safetensors, stage_layers, DecoderStage, SparseBytes,
    StageInput, StageKv, StageOutput,
};
use rewardlens_models::quantized::{self, GgufWeights, QuantType};
use rewardlens_models::weights::{SafetensorsWeights, StreamedSafetensors, WeightSource};
use rewardlens_models::{profile, DecoderRewardModel, HeadOutput, ModelConfig, ModelError, Padding};
use rewardlens_models::{CheckpointText, InputEncoder};
use serde_json::Value;
use std::ops::Range;
use std::path::{Path, PathBuf};

const GOLDEN: [&str; 7] =
    ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token", "llama-eot-seq"];
const PRM: [&str; 4] = ["prm-qwen", "prm-qwen-mlp", "prm-shepherd", "prm-value"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn shards(name: &str) -> Vec<Vec<u8>> {
    let dir = fixture(name);
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        rewardlens_models::files::shard_names(&read(&index))
            .unwrap()
            .iter()
            .map(|s| std::fs::read(dir.join(s)).unwrap())
            .collect()
    } else {
        vec![std::fs::read(dir.join("model.safetensors")).unwrap()]
    }
}

/// The config as the engine builds it (with a math-shepherd PRM's candidate rows).
fn config(name: &str) -> ModelConfig {
    let dir = fixture(name);
    let (cj, tj, tcj) = (
        read(&dir.join("config.json")),
        std::fs::read(dir.join("tokenizer.json")).unwrap(),
        read(&dir.join("tokenizer_config.json")),
    );
    let text = CheckpointText {
        config_json: &cj,
        tokenizer_json: &tj,
        tokenizer_config_json: &tcj,
        chat_template_jinja: None,
    };
    InputEncoder::from_checkpoint(&text).unwrap().0
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&read(&fixture(name).join("golden.json"))).unwrap()
}

/// Every conversation's ids of a golden fixture, or the PRM cases' ids.
fn cases(name: &str) -> Vec<(String, Vec<u32>, Option<Value>)> {
    let dir = fixture(name);
    if dir.join("golden.json").exists() {
        let g = golden(name);
        g["conversations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, c)| {
                (k.clone(), serde_json::from_value(c["input_ids"].clone()).unwrap(), Some(c["logits"].clone()))
            })
            .collect()
    } else {
        let g: Value = serde_json::from_str(&read(&dir.join("golden_steps.json"))).unwrap();
        g["cases"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, c)| (k.clone(), serde_json::from_value(c["input_ids"].clone()).unwrap(), None))
            .collect()
    }
}

fn flat(o: &HeadOutput) -> Vec<f32> {
    match o {
        HeadOutput::Sequence { logits, .. } => logits.clone(),
        HeadOutput::Token(t) => t.concat(),
    }
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{what}: {x} vs {y}");
    }
}

/// transformers' logits: pooled [labels] or per token [tokens][labels].
fn golden_flat(v: &Value) -> Vec<f32> {
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

/// Runs `ids` through `stages` in chunks of `chunk` tokens, starting from `kvs`; returns the
/// logits at every position.
fn run(stages: &[DecoderStage], kvs: &mut [StageKv], ids: &[u32], chunk: usize) -> Vec<Vec<f32>> {
    let mut logits = Vec::new();
    for piece in ids.chunks(chunk) {
        let mut hidden: Option<Vec<f32>> = None;
        for (stage, kv) in stages.iter().zip(kvs.iter_mut()) {
            let input = match &hidden {
                None => StageInput::Ids(piece),
                Some(h) => StageInput::Hidden { data: h, tokens: piece.len() },
            };
            match stage.forward_chunk(kv, input).unwrap() {
                StageOutput::Hidden(h) => hidden = Some(h),
                StageOutput::Logits(l) => {
                    assert_eq!(l.len(), piece.len());
                    logits.extend(l);
                }
            }
        }
    }
    logits
}

fn load_stages(c: &ModelConfig, w: &dyn WeightSource, n: usize) -> Vec<DecoderStage> {
    stage_layers(c.num_hidden_layers, n)
        .into_iter()
        .map(|r| DecoderStage::load(c.clone(), w, &Device::Cpu, r).unwrap())
        .collect()
}

/// A fixture's layers repeated to `layers` deep (layer i reads layer i % 2's tensors), so a
/// 3-stage split has a middle stage that neither embeds nor scores.
struct Deepened<'a>(&'a dyn WeightSource);

fn shallow(name: &str) -> String {
    match name.strip_prefix("model.layers.").and_then(|r| r.split_once('.')) {
        Some((i, rest)) => format!("model.layers.{}.{rest}", i.parse::<usize>().unwrap() % 2),
        None => name.to_owned(),
    }
}

impl WeightSource for Deepened<'_> {
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> rewardlens_models::Result<Tensor> {
        self.0.tensor(&shallow(name), shape, dtype, device)
    }
}

#[test]
fn stage_layers_cover_every_layer_once() {
    for layers in 0..12 {
        for stages in 1..6 {
            let r = stage_layers(layers, stages);
            assert_eq!(r.len(), stages.min(layers.max(1)), "{layers} layers / {stages}");
            assert_eq!(r[0].start, 0);
            assert_eq!(r.last().unwrap().end, layers);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let sizes: Vec<usize> = r.iter().map(|x| x.len()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
            if layers > 0 {
                assert!(sizes.iter().all(|&s| s > 0));
            }
        }
    }
}

/// Every fixture, 1/2/3 stages × chunks of 1/5/whole: equal to the whole model's forward within
/// 1e-4 and to transformers' logits within the golden tests' tolerance.
#[test]
fn chunked_stages_equal_the_whole_model_and_transformers() {
    for name in GOLDEN.iter().chain(&PRM) {
        let c = config(name);
        let w = SafetensorsWeights::from_buffers(shards(name)).unwrap();
        let model = DecoderRewardModel::load(c.clone(), &w, &Device::Cpu).unwrap();
        for n in [1, 2, 3] {
            let stages = load_stages(&c, &w, n);
            for (key, ids, gold) in cases(name) {
                let whole = model.forward(&[&ids], Padding::Right).unwrap().remove(0);
                for chunk in [1, 5, ids.len()] {
                    let what = format!("{name}/{key} {n} stages, chunks of {chunk}");
                    let mut kvs = vec![StageKv::default(); stages.len()];
                    let logits = run(&stages, &mut kvs, &ids, chunk);
                    assert!(kvs.iter().all(|kv| kv.tokens() == ids.len()));
                    // Every chunk's keys and values once, nothing more: 2 × kv heads × head dim
                    // f32 per token and layer.
                    let kv_dim = c.num_key_value_heads * c.head_dim;
                    let held: usize = kvs.iter().map(StageKv::size_bytes).sum();
                    assert_eq!(held, c.num_hidden_layers * ids.len() * 2 * kv_dim * 4, "{what}: bytes held");
                    let out = head_output(&c, &ids, logits).unwrap();
                    if let (
                        HeadOutput::Sequence { pooled_index: a, .. },
                        HeadOutput::Sequence { pooled_index: b, .. },
                    ) = (&out, &whole)
                    {
                        assert_eq!(a, b, "{what}: pooled index");
                    }
                    assert_close(&flat(&out), &flat(&whole), 1e-4, &what);
                    if let Some(g) = &gold {
                        assert_close(&flat(&out), &golden_flat(g), 1e-4, &format!("{what} vs transformers"));
                    }
                }
            }
        }
    }
}

/// A 4-layer model (two fixtures' layers twice) in 3 stages: the middle stage takes and gives
/// hidden states; chunked equals whole.
#[test]
fn a_middle_stage_passes_hidden_states_through() {
    for name in ["qwen3-seq", "llama-token"] {
        let mut c = config(name);
        c.num_hidden_layers = 4;
        let base = SafetensorsWeights::from_buffers(shards(name)).unwrap();
        let w = Deepened(&base);
        let model = DecoderRewardModel::load(c.clone(), &w, &Device::Cpu).unwrap();
        let stages = load_stages(&c, &w, 3);
        assert_eq!(stages.iter().map(|s| s.layers()).collect::<Vec<_>>(), vec![0..2, 2..3, 3..4]);
        assert!(!stages[1].is_first() && !stages[1].is_last());
        for (key, ids, _) in cases(name) {
            let whole = model.forward(&[&ids], Padding::Right).unwrap().remove(0);
            for chunk in [1, 5, ids.len()] {
                let mut kvs = vec![StageKv::default(); 3];
                let out = head_output(&c, &ids, run(&stages, &mut kvs, &ids, chunk)).unwrap();
                assert_close(&flat(&out), &flat(&whole), 1e-4, &format!("{name}/{key} deep, chunks of {chunk}"));
            }
        }
        // Wrong inputs are errors, not panics.
        let mut kv = StageKv::default();
        assert!(matches!(stages[1].forward_chunk(&mut kv, StageInput::Ids(&[1, 2])), Err(ModelError::Stage(_))));
        let bad = StageInput::Hidden { data: &[0.0; 3], tokens: 1 };
        assert!(matches!(stages[1].forward_chunk(&mut kv, bad), Err(ModelError::Stage(_))));
        let mut other = StageKv::default();
        run(&stages[..1], std::slice::from_mut(&mut other), &[5, 6], 2);
        let h = vec![0.0; c.hidden_size];
        let err = stages[1].forward_chunk(&mut other, StageInput::Hidden { data: &h, tokens: 1 });
        assert!(matches!(err, Err(ModelError::Stage(_))), "a 2-layer stage's keys handed to a 1-layer stage");
    }
}

/// The prompt runs once; its keys and values, cloned, continue into two responses: each equals
/// scoring its full row.
#[test]
fn a_forked_prompt_equals_scoring_each_full_row() {
    for name in ["qwen3-seq", "qwen2-token", "llama-eot-seq", "prm-qwen-mlp"] {
        let c = config(name);
        let w = SafetensorsWeights::from_buffers(shards(name)).unwrap();
        let model = DecoderRewardModel::load(c.clone(), &w, &Device::Cpu).unwrap();
        let all = cases(name);
        let (a, b) = (&all[0].1, &all[1].1);
        let shared = rewardlens_models::plan::shared_prompt_tokens(&[a, b], c.pad_token_id);
        assert!(shared > 0, "{name}: cases share a prompt");
        for n in [1, 2] {
            let stages = load_stages(&c, &w, n);
            let mut prompt = vec![StageKv::default(); stages.len()];
            let prompt_logits = run(&stages, &mut prompt, &a[..shared], 7);
            for row in [a, b] {
                let mut kvs = prompt.clone();
                let mut logits = prompt_logits.clone();
                logits.extend(run(&stages, &mut kvs, &row[shared..], 4));
                let out = head_output(&c, row, logits).unwrap();
                let whole = model.forward(&[row], Padding::Right).unwrap().remove(0);
                assert_close(&flat(&out), &flat(&whole), 1e-4, &format!("{name} fork, {n} stages"));
            }
            assert!(prompt.iter().all(|kv| kv.tokens() == shared), "forks leave the prompt's keys alone");
        }
    }
}

fn ranges_len(r: &[Range<u64>]) -> u64 {
    r.iter().map(|x| x.end - x.start).sum()
}

/// Stages load from only the bytes `stage_byte_ranges_*` name (safetensors shards and GGUF),
/// score like the whole model, and a stage asked for layers it was not given bytes for fails
/// naming the tensor.
#[test]
fn stages_load_from_only_their_byte_ranges() {
    // Safetensors, one and two shards.
    for name in ["qwen3-seq", "llama-seq"] {
        let c = config(name);
        let files = shards(name);
        let whole = SafetensorsWeights::from_buffers(files.clone()).unwrap();
        let model = DecoderRewardModel::load(c.clone(), &whole, &Device::Cpu).unwrap();
        let srcs: Vec<&dyn ByteSource> = files.iter().map(|f| f as &dyn ByteSource).collect();
        let mut stages = Vec::new();
        let parts = stage_layers(c.num_hidden_layers, 2);
        for r in &parts {
            let ranges = stage_byte_ranges_safetensors(&srcs, &c, r.clone()).unwrap();
            let total: u64 = ranges.iter().map(|x| ranges_len(x)).sum();
            let file_total: u64 = files.iter().map(|f| f.len() as u64).sum();
            assert!(total < file_total, "{name} {r:?}: {total} of {file_total} bytes");
            let sparse = |ranges: &[Vec<Range<u64>>]| {
                StreamedSafetensors::new(
                    files
                        .iter()
                        .zip(ranges)
                        .enumerate()
                        .map(|(i, (f, r))| {
                            (
                                format!("shard {i}"),
                                Box::new(SparseBytes::from_source(f, r).unwrap()) as Box<dyn ByteSource>,
                            )
                        })
                        .collect(),
                )
                .unwrap()
            };
            let w = sparse(&ranges);
            stages.push(DecoderStage::load(c.clone(), &w, &Device::Cpu, r.clone()).unwrap());
            // The other stage's layers are not in these pieces.
            let other = if r.start == 0 { parts[1].clone() } else { parts[0].clone() };
            let err = DecoderStage::load(c.clone(), &w, &Device::Cpu, other.clone()).err().unwrap().to_string();
            assert!(err.contains(&format!("model.layers.{}.", other.start)) || err.contains("embed_tokens"), "{err}");
            assert!(err.contains("not given"), "{err}");
        }
        for (key, ids, _) in cases(name).into_iter().take(3) {
            let mut kvs = vec![StageKv::default(); 2];
            let out = head_output(&c, &ids, run(&stages, &mut kvs, &ids, 5)).unwrap();
            let reference = model.forward(&[&ids], Padding::Right).unwrap().remove(0);
            assert_close(&flat(&out), &flat(&reference), 1e-4, &format!("{name}/{key} sparse"));
        }
    }

    // GGUF (q8_0, written from a fixture as `rewardlens quantize` does).
    let name = "qwen3-seq";
    let dir = fixture(name);
    let c = config(name);
    let st = SafetensorsWeights::from_buffers(shards(name)).unwrap();
    let file = std::fs::read(dir.join("model.safetensors")).unwrap();
    let dirs = rewardlens_models::st_header::read_directory(&file).unwrap();
    let tensors: Vec<(String, Vec<usize>)> = dirs.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
    let planned = quantized::plan(&c, &tensors, QuantType::Q8_0).unwrap();
    let tok = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    let meta = quantized::metadata(
        &c,
        &read(&dir.join("config.json")),
        &tok,
        &read(&dir.join("tokenizer_config.json")),
        "",
        name,
        QuantType::Q8_0,
    );
    let bytes = quantized::write_gguf(
        Vec::new(),
        &meta,
        &c,
        &planned,
        |n| {
            let t = dirs.iter().find(|t| t.name == n).unwrap();
            st.tensor(n, &t.shape, DType::F32, &Device::Cpu)
        },
        |_| {},
    )
    .unwrap();
    let gguf = GgufFile::from_bytes(bytes.clone()).unwrap();
    let gc = quantized::gguf_config(&gguf).unwrap();
    let model = DecoderRewardModel::load(
        gc.clone(),
        &GgufWeights::new(GgufFile::from_bytes(bytes.clone()).unwrap(), gc.clone()),
        &Device::Cpu,
    )
    .unwrap();
    let parts = stage_layers(gc.num_hidden_layers, 2);
    let mut stages = Vec::new();
    for r in &parts {
        let ranges = stage_byte_ranges_gguf(&gguf, &gc, r.clone()).unwrap();
        let sparse = SparseBytes::from_source(&bytes, &ranges).unwrap();
        let f = GgufFile::parse(Box::new(sparse)).unwrap();
        let w = GgufWeights::new(f, gc.clone());
        stages.push(DecoderStage::load(gc.clone(), &w, &Device::Cpu, r.clone()).unwrap());
    }
    let ids = &cases(name)[0].1;
    let mut kvs = vec![StageKv::default(); 2];
    let out = head_output(&gc, ids, run(&stages, &mut kvs, ids, 5)).unwrap();
    let reference = model.forward(&[ids], Padding::Right).unwrap().remove(0);
    assert_close(&flat(&out), &flat(&reference), 1e-4, "gguf sparse");
}

#[test]
fn sparse_bytes_refuse_reads_outside_their_pieces() {
    let file: Vec<u8> = (0..100u8).collect();
    let s = SparseBytes::from_source(&file, &[10..20, 30..40, 18..25]).unwrap();
    assert_eq!(s.held_bytes(), 25);
    let mut buf = [0u8; 5];
    s.read_at(12, &mut buf).unwrap();
    assert_eq!(buf, [12, 13, 14, 15, 16]);
    s.read_at(20, &mut buf).unwrap();
    assert!(s.read_at(22, &mut buf).is_err(), "runs past a piece");
    assert!(s.read_at(0, &mut buf).is_err(), "before every piece");
    assert!(s.read_at(95, &mut buf).is_err());
    assert!(s.read_at(u64::MAX - 2, &mut buf).is_err());
    assert!(SparseBytes::new(10, vec![(8, vec![0; 5])]).is_err());
    assert!(SparseBytes::new(10, vec![(0, vec![0; 5]), (4, vec![0; 2])]).is_err());
}

/// A profiled forward pass records every category and their sum stays within the total.
#[test]
fn profile_records_the_forward_passs_categories() {
    let c = config("qwen3-seq");
    let w = SafetensorsWeights::from_buffers(shards("qwen3-seq")).unwrap();
    let model = DecoderRewardModel::load(c, &w, &Device::Cpu).unwrap();
    let ids = &cases("qwen3-seq")[0].1;
    let (out, p) = profile::record(profile::native_clock, || model.forward(&[ids], Padding::Right).unwrap());
    assert_eq!(out.len(), 1);
    for op in profile::Op::ALL {
        assert!(p.ms(op) > 0.0, "{} not recorded: {p:?}", op.name());
    }
    let sum: f64 = profile::Op::ALL.iter().map(|&op| p.ms(op)).sum();
    assert!(sum <= p.total_ms + 1e-9, "{sum} > {}", p.total_ms);
    assert!(!profile::is_recording());
    // Without a recording nothing accumulates anywhere.
    model.forward(&[ids], Padding::Right).unwrap();
}
