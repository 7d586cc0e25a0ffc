//! The int8 linear layers (`rewardlens-kernels`, the browser's default for 8-bit weights) against
//! transformers' goldens, on every fixture (quantize-on-load q8_0: the same Q8_0 tensors a GGUF
//! gives), each scale layout. Prints its accuracy table (`-- --nocapture`).

use candle_core::Device;
use rewardlens_kernels::ScaleLayout;
use rewardlens_models::linear::{with_kernel, LinearKernel};
use rewardlens_models::quantized::QuantType;
use rewardlens_models::{CheckpointFiles, HeadOutput, Padding, RewardModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

const MODELS: [&str; 7] =
    ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token", "llama-eot-seq"];

/// What every q8_0 path meets against transformers on these fixtures, Candle's included (logits
/// of order 0.1–1). tests/golden.rs holds the sequence heads to 0.06 (worst measured 0.038);
/// token heads report every position's logits, and there Candle's own q8_0 reached 0.0610
/// (qwen2-token) and the bf16 AMX kernel 0.0601 (qwen3-token; it also rounds the weights `q · d`
/// to 8 significant bits), so the token fixtures get 0.065, asserted for Candle as well.
const Q8_BOUND: f64 = 0.06;
const Q8_TOKEN_BOUND: f64 = 0.065;

fn bound(name: &str) -> f64 {
    if name.ends_with("-token") {
        Q8_TOKEN_BOUND
    } else {
        Q8_BOUND
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap()
}

/// Worst |ours − transformers| over a fixture's golden conversations.
fn worst_diff(model: &RewardModel, golden: &Value) -> f64 {
    let mut worst = 0f64;
    for case in golden["conversations"].as_object().unwrap().values() {
        let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let out = model.forward_padded(&[&ids], Padding::Right).unwrap();
        let ours: Vec<f32> = match &out[0] {
            HeadOutput::Sequence { logits, .. } => logits.clone(),
            HeadOutput::Token(rows) => rows.concat(),
        };
        let theirs: Vec<f64> = match case["logits"].as_array().unwrap()[0].as_array() {
            Some(_) => case["logits"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().clone())
                .map(|v| v.as_f64().unwrap())
                .collect(),
            None => case["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        };
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            worst = worst.max((*a as f64 - b).abs());
        }
    }
    worst
}

/// Quantize-on-load q8_0 (the browser's path for a float checkpoint): the same Q8_0 tensors a
/// GGUF file gives the layers.
fn load_quantized(name: &str, kernel: LinearKernel) -> RewardModel {
    let files = CheckpointFiles::from_dir(&fixture(name)).unwrap();
    let text = rewardlens_models::CheckpointText {
        config_json: &files.config_json,
        tokenizer_json: &files.tokenizer_json,
        tokenizer_config_json: &files.tokenizer_config_json,
        chat_template_jinja: files.chat_template_jinja.as_deref(),
    };
    let weights = files.weights.open().unwrap();
    with_kernel(kernel, || RewardModel::from_checkpoint(&text, &weights, Some(QuantType::Q8_0), &Device::Cpu).unwrap())
}

#[test]
fn int8_layers_match_transformers_on_every_fixture_and_layout() {
    let layouts = [ScaleLayout::PerGroup(32), ScaleLayout::PerGroup(128), ScaleLayout::PerChannel];
    eprintln!("fixture | candle q8_0 | {}", layouts.map(|l| format!("int8 {}", l.name())).join(" | "));
    let (mut candle_total, mut int8_total) = (0.0, 0.0);
    let mut failures = Vec::new();
    for name in MODELS {
        let g = golden(name);
        let candle = worst_diff(&load_quantized(name, LinearKernel::Candle), &g);
        if candle >= bound(name) {
            failures.push(format!("{name} Candle's q8_0: differs from transformers by {candle}"));
        }
        candle_total += candle;
        let mut row = vec![format!("{candle:.4}")];
        for layout in layouts {
            let model = load_quantized(name, LinearKernel::Int8(layout));
            // This build's kernel: AMX (bf16, else int8), VNNI or AVX2 on x86-64 CPUs that have
            // them, else portable code.
            let want = rewardlens_kernels::kernel().name();
            assert!(model.linear_kernel().starts_with(want), "{name}: {} (want {want})", model.linear_kernel());
            let worst = worst_diff(&model, &g);
            // The default (Q8_0's own blocks) must hold the q8_0 bound; coarser scales requantize
            // the weights a second time and are measured only (the table in docs).
            if layout == ScaleLayout::PerGroup(32) {
                if worst >= bound(name) {
                    failures.push(format!("{name} {}: differs from transformers by {worst}", layout.name()));
                }
                int8_total += worst;
            }
            row.push(format!("{worst:.4}"));
        }
        eprintln!("{name} | {}", row.join(" | "));
    }
    // Against Candle's q8_0 over all fixtures together: one fixture this small differs from it
    // by rounding noise either way (llama-eot-seq: 0.0235 here against Candle's 0.0136, while
    // llama-seq is 0.0176 against 0.0274), a systematic loss of accuracy shows in the sum.
    eprintln!("sum | {candle_total:.4} | {int8_total:.4}");
    assert!(failures.is_empty(), "{}", failures.join("; "));
    assert!(int8_total < 1.2 * candle_total, "int8 errors sum to {int8_total}, Candle's q8_0 to {candle_total}");
}
