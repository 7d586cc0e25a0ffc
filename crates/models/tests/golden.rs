//! Every fixture model against the scores transformers computed for it (tests/fixtures/generate.py).

use candle_core::Device;
use rewardlens_core::Message;
use rewardlens_models::{CheckpointFiles, HeadOutput, LengthPolicy, ModelError, Padding, RewardModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `llama-eot-seq`'s pad token is `<|eot_id|>`, which ends every rendered conversation: it is
/// pooled at the token before (as transformers does), never at the last.
const MODELS: [&str; 7] =
    ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token", "llama-eot-seq"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn load(name: &str) -> (RewardModel, Value) {
    let dir = fixture(name);
    let model = RewardModel::load(CheckpointFiles::from_dir(&dir).unwrap(), &Device::Cpu).unwrap();
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    (model, golden)
}

/// |ours - theirs| <= 1e-4 relative (absolute below magnitude 1).
fn assert_close(ours: &[f32], theirs: &Value, what: &str) {
    let theirs: Vec<f64> = theirs.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(ours.len(), theirs.len(), "{what}: label count");
    for (a, b) in ours.iter().zip(&theirs) {
        let tol = 1e-4 * b.abs().max(1.0);
        assert!((*a as f64 - b).abs() <= tol, "{what}: ours {a} vs transformers {b}");
    }
}

fn assert_output(o: &HeadOutput, golden: &Value, what: &str) {
    match o {
        HeadOutput::Sequence { logits, .. } => assert_close(logits, golden, what),
        HeadOutput::Token(rows) => {
            let g = golden.as_array().unwrap();
            assert_eq!(rows.len(), g.len(), "{what}: token count");
            for (i, (r, gr)) in rows.iter().zip(g).enumerate() {
                assert_close(r, gr, &format!("{what} token {i}"));
            }
        }
    }
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn templates_and_token_ids_match_transformers() {
    for name in MODELS {
        let (model, golden) = load(name);
        for (key, case) in golden["conversations"].as_object().unwrap() {
            let msgs = messages(&case["messages"]);
            assert_eq!(model.render(&msgs).unwrap(), case["text"].as_str().unwrap(), "{name}/{key}: rendered text");
            let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
            assert_eq!(model.encode(&msgs, &LengthPolicy::default()).unwrap().ids, ids, "{name}/{key}: token ids");
        }
    }
}

#[test]
fn single_inputs_match_transformers() {
    for name in MODELS {
        let (model, golden) = load(name);
        for (key, case) in golden["conversations"].as_object().unwrap() {
            let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
            let out = model.forward_padded(&[&ids], Padding::Right).unwrap();
            let g = &case["logits"];
            match &out[0] {
                // transformers returns pooled logits as [labels]; per-token as [tokens][labels].
                HeadOutput::Sequence { .. } => assert_output(&out[0], g, &format!("{name}/{key}")),
                HeadOutput::Token(_) => assert_output(&out[0], g, &format!("{name}/{key}")),
            }
        }
    }
}

#[test]
fn padded_batches_match_transformers_both_sides() {
    for name in MODELS {
        let (model, golden) = load(name);
        for (side, padding) in [("right", Padding::Right), ("left", Padding::Left)] {
            let batch = &golden["batches"][side];
            let ids: Vec<Vec<u32>> = batch["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    serde_json::from_value(golden["conversations"][k.as_str().unwrap()]["input_ids"].clone()).unwrap()
                })
                .collect();
            let rows: Vec<&[u32]> = ids.iter().map(|r| r.as_slice()).collect();
            let out = model.forward_padded(&rows, padding).unwrap();
            for (i, o) in out.iter().enumerate() {
                assert_output(o, &batch["logits"][i], &format!("{name} {side}-padded row {i}"));
            }
        }
    }
}

#[test]
fn library_api_scores_match_and_rank() {
    let (model, golden) = load("qwen3-seq");
    let convs = &golden["conversations"];
    let score = |k: &str| convs[k]["logits"][0].as_f64().unwrap() as f32;
    let prompt = "What is the capital of France?";
    let responses = vec!["The capital of France is Paris.".to_owned(), "The capital of France is Berlin.".to_owned()];
    let r = model.score_responses(prompt, &responses, &LengthPolicy::default(), 4).unwrap();
    assert_close(
        &[r.responses[0].score(), r.responses[1].score()],
        &serde_json::json!([score("simple"), score("wrong")]),
        "responses",
    );
    let expected_best = if score("simple") > score("wrong") { 0 } else { 1 };
    assert_eq!(r.ranking[0], expected_best);
    let pair = model.score_pair(prompt, &responses[0], &responses[1], &LengthPolicy::default()).unwrap();
    assert_eq!(pair.correct(), score("simple") > score("wrong"));
    let p = 1.0 / (1.0 + (-(score("simple") - score("wrong")) as f64).exp());
    assert!((pair.preference_probability as f64 - p).abs() < 1e-4);

    // Length-grouped batching returns input order.
    let keys: Vec<&String> = convs.as_object().unwrap().keys().collect();
    let all: Vec<Vec<Message>> = keys.iter().map(|k| messages(&convs[k.as_str()]["messages"])).collect();
    let scores = model.score_conversations(&all, &LengthPolicy::default(), 3).unwrap();
    for (k, s) in keys.iter().zip(&scores) {
        assert_close(&s.logits, &convs[k.as_str()]["logits"], k);
    }
}

#[test]
fn multi_label_head_keeps_names() {
    let (model, _) = load("qwen2-seq");
    assert_eq!(model.labels(), ["helpfulness", "correctness", "coherence"]);
}

#[test]
fn over_long_input_is_an_error_unless_truncation_is_asked() {
    let (model, golden) = load("qwen3-seq");
    let msgs = messages(&golden["conversations"]["long"]["messages"]);
    let strict = LengthPolicy { max_tokens: Some(512), truncate: false };
    match model.score_conversation(&msgs, &strict) {
        Err(ModelError::InputTooLong { tokens: 1925, limit: 512 }) => {}
        other => panic!("expected InputTooLong, got {other:?}"),
    }
    let cut = model.score_conversation(&msgs, &LengthPolicy { max_tokens: Some(512), truncate: true }).unwrap();
    assert_eq!((cut.tokens, cut.truncated_tokens), (512, 1925 - 512));
}

#[test]
fn missing_tensor_is_named() {
    let dir = fixture("qwen3-seq");
    let mut files = CheckpointFiles::from_dir(&dir).unwrap();
    // Drop one tensor by rewriting the checkpoint without it.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| n != "model.layers.1.self_attn.k_norm.weight").collect();
    let out = safetensors::serialize(kept, None).unwrap();
    files.weights = rewardlens_models::WeightFiles::Buffers(vec![out]);
    let err = RewardModel::load(files, &Device::Cpu).err().expect("load must fail").to_string();
    assert!(err.contains("model.layers.1.self_attn.k_norm.weight"), "{err}");
}

/// The browser's loading path: shards read tensor by tensor through positioned reads, and
/// optionally quantized while loading.
fn load_streamed(name: &str, quantize: Option<rewardlens_models::quantized::QuantType>) -> RewardModel {
    use rewardlens_models::gguf::ByteSource;
    use rewardlens_models::weights::StreamedSafetensors;
    let dir = fixture(name);
    let files = CheckpointFiles::from_dir(&dir).unwrap();
    let shards: Vec<(String, Box<dyn ByteSource>)> = match &files.weights {
        rewardlens_models::WeightFiles::Paths(paths) => paths
            .iter()
            .map(|p| (p.display().to_string(), Box::new(std::fs::read(p).unwrap()) as Box<dyn ByteSource>))
            .collect(),
        _ => unreachable!("from_dir gives paths"),
    };
    let weights = StreamedSafetensors::new(shards).unwrap();
    let text = rewardlens_models::CheckpointText {
        config_json: &files.config_json,
        tokenizer_json: &files.tokenizer_json,
        tokenizer_config_json: &files.tokenizer_config_json,
        chat_template_jinja: files.chat_template_jinja.as_deref(),
    };
    RewardModel::from_checkpoint(&text, &weights, quantize, &Device::Cpu).unwrap()
}

#[test]
fn streamed_and_quantized_on_load_match_transformers() {
    use rewardlens_models::quantized::QuantType;
    for name in ["qwen3-seq", "llama-seq", "qwen2-seq"] {
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap();
        let f32_model = load_streamed(name, None);
        let q8_model = load_streamed(name, Some(QuantType::Q8_0));
        let mut worst = 0f64;
        for (key, case) in golden["conversations"].as_object().unwrap() {
            let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
            let exact = f32_model.forward_padded(&[&ids], Padding::Right).unwrap();
            assert_output(&exact[0], &case["logits"], &format!("{name}/{key} streamed"));
            let HeadOutput::Sequence { logits, .. } = &q8_model.forward_padded(&[&ids], Padding::Right).unwrap()[0]
            else {
                unreachable!()
            };
            for (a, b) in logits.iter().zip(case["logits"].as_array().unwrap()) {
                worst = worst.max((*a as f64 - b.as_f64().unwrap()).abs());
            }
        }
        // Measured worst cases: 0.038 (qwen3-seq) and below; logits here are of order 0.1-1.
        assert!(worst < 0.06, "{name}: q8_0 on load differs from transformers by {worst}");
        eprintln!("{name}: q8_0-on-load worst abs diff {worst:.4}");
    }
}

/// Prompt reuse (the shared prefix computed once, the rest of each row on its keys and values)
/// gives transformers' outputs: every pair of golden conversations batched together, and all of
/// them at once, with reuse from one shared token, on every architecture and head.
#[test]
fn shared_prefix_batches_match_transformers() {
    for name in MODELS {
        let (mut model, golden) = load(name);
        model.set_prefix_reuse(Some(1));
        let convs = golden["conversations"].as_object().unwrap();
        let cases: Vec<(&String, Vec<u32>)> =
            convs.iter().map(|(k, c)| (k, serde_json::from_value(c["input_ids"].clone()).unwrap())).collect();
        let mut shared_seen = 0;
        for (i, (ki, a)) in cases.iter().enumerate() {
            for (kj, b) in &cases[i + 1..] {
                shared_seen = shared_seen.max(rewardlens_models::plan::shared_prefix_len(&[a, b]));
                let out = model.forward_padded(&[a, b], Padding::Right).unwrap();
                assert_output(&out[0], &convs[ki.as_str()]["logits"], &format!("{name} {ki} with {kj}"));
                assert_output(&out[1], &convs[kj.as_str()]["logits"], &format!("{name} {kj} with {ki}"));
            }
        }
        assert!(shared_seen >= 8, "{name}: the golden conversations share a prompt ({shared_seen} tokens)");
        let rows: Vec<&[u32]> = cases.iter().map(|(_, ids)| ids.as_slice()).collect();
        let out = model.forward_padded(&rows, Padding::Right).unwrap();
        for ((k, _), o) in cases.iter().zip(&out) {
            assert_output(o, &convs[k.as_str()]["logits"], &format!("{name} {k} in the whole batch"));
        }
    }
}

/// A long prompt answered several ways scores the same with and without reuse, and through
/// `score_encoded`, which batches the answers to one prompt together among other inputs.
#[test]
fn long_shared_prompt_scores_equal_whole_rows() {
    for name in MODELS {
        let (mut model, golden) = load(name);
        let prompt: Vec<u32> = serde_json::from_value(golden["conversations"]["long"]["input_ids"].clone()).unwrap();
        let vocab = model.config().vocab_size as u32;
        let rows: Vec<Vec<u32>> = (0..5u32)
            .map(|r| prompt.iter().copied().chain((0..3 + 4 * r).map(|i| (i * 31 + r * 7 + 5) % vocab)).collect())
            .collect();
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        assert!(rewardlens_models::plan::shared_prefix_len(&refs) >= rewardlens_models::plan::MIN_SHARED_PREFIX);
        model.set_prefix_reuse(None);
        let alone: Vec<HeadOutput> =
            refs.iter().map(|r| model.forward_padded(&[r], Padding::Right).unwrap().remove(0)).collect();
        model.set_prefix_reuse(Some(rewardlens_models::plan::MIN_SHARED_PREFIX));
        let reused = model.forward_padded(&refs, Padding::Right).unwrap();
        for (i, (a, b)) in alone.iter().zip(&reused).enumerate() {
            let expected = match a {
                HeadOutput::Sequence { logits, .. } => serde_json::json!(logits),
                HeadOutput::Token(t) => serde_json::json!(t),
            };
            assert_output(b, &expected, &format!("{name} row {i} with the prompt reused"));
        }
        // Mixed with unrelated inputs, in score_encoded's batches of 2.
        let mut inputs: Vec<rewardlens_models::EncodedInput> = Vec::new();
        for (k, c) in golden["conversations"].as_object().unwrap() {
            if k != "long" {
                inputs.push(model.encode(&messages(&c["messages"]), &LengthPolicy::default()).unwrap());
            }
        }
        let base = inputs.len();
        for r in &rows {
            let mut e = inputs[0].clone();
            e.ids = r.clone();
            inputs.push(e);
        }
        let scores = model.score_encoded(&inputs, 2).unwrap();
        for (i, a) in alone.iter().enumerate() {
            if let HeadOutput::Sequence { logits, .. } = a {
                assert_close(
                    &scores[base + i].logits,
                    &serde_json::json!(logits),
                    &format!("{name} score_encoded row {i}"),
                );
            }
        }
    }
}

/// A model whose pad token ends every turn (`<|eot_id|>`) is pooled at the token before it, and
/// that is what makes transformers' score: the last token's logits differ from it.
#[test]
fn pad_token_ending_each_turn_is_pooled_before_it() {
    let (model, golden) = load("llama-eot-seq");
    let eot = model.config().pad_token_id.unwrap();
    for (key, case) in golden["conversations"].as_object().unwrap() {
        let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        assert_eq!(ids.last(), Some(&eot), "{key}: ends with <|eot_id|>");
        let HeadOutput::Sequence { pooled_index, .. } =
            model.forward_padded(&[&ids], Padding::Right).unwrap().remove(0)
        else {
            panic!("a sequence head")
        };
        assert_eq!(pooled_index, ids.len() - 2, "{key}");
        assert_eq!(pooled_index, rewardlens_models::plan::pooled_index(&ids, Some(eot)));
        let last = model.forward_positions(&ids).unwrap().pop().unwrap();
        let g = case["logits"][0].as_f64().unwrap();
        assert!((last[0] as f64 - g).abs() > 1e-3, "{key}: the last token scores {} like the pooled one", last[0]);
    }
}
