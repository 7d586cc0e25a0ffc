//! Step rewards of each PRM convention against what transformers computed on the fixture PRMs
//! (tests/fixtures/generate_prm.py), and prefix scores of an outcome RM against scoring each
//! truncated prefix on its own.

use candle_core::Device;
use rewardlens_core::types::prompt_response;
use rewardlens_core::{Step, StepSplit};
use rewardlens_models::prm::StepConvention;
use rewardlens_models::{CheckpointFiles, HeadOutput, LengthPolicy, Padding, RewardModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn load(name: &str) -> RewardModel {
    RewardModel::load(CheckpointFiles::from_dir(&fixture(name)).unwrap(), &Device::Cpu).unwrap()
}

fn steps_of(texts: &[Value]) -> Vec<Step> {
    texts.iter().map(|t| Step { text: t.as_str().unwrap().to_owned(), start: 0, end: 0 }).collect()
}

#[test]
fn every_convention_matches_transformers_step_rewards() {
    let cases =
        [("prm-qwen", Some("qwen")), ("prm-qwen-mlp", None), ("prm-shepherd", None), ("prm-value", Some("value"))];
    for (name, convention) in cases {
        let model = load(name);
        let g: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden_steps.json")).unwrap()).unwrap();
        // Qwen2ForProcessRewardModel and the causal LM declare their convention; the token
        // classifiers are named.
        let conv = match convention {
            Some(c) => StepConvention::parse(c).unwrap(),
            None => StepConvention::of_architecture(model.config()).expect("a causal LM is a math-shepherd PRM"),
        };
        assert_eq!(conv.name(), g["convention"].as_str().unwrap());
        for (case, c) in g["cases"].as_object().unwrap() {
            let steps = steps_of(c["steps"].as_array().unwrap());
            let problem = c["problem"].as_str().unwrap();
            let chat = prompt_response(problem, "");
            let input = model.inputs().encode_steps(&conv, &chat, &steps, &LengthPolicy::default()).unwrap();
            let want_ids: Vec<u32> = serde_json::from_value(c["input_ids"].clone()).unwrap();
            assert_eq!(input.ids, want_ids, "{name}/{case}: token ids");
            let got = model.score_steps(&conv, &chat, steps, &LengthPolicy::default()).unwrap();
            let want: Vec<f64> = serde_json::from_value(c["step_scores"].clone()).unwrap();
            assert_eq!(got.scores.len(), want.len(), "{name}/{case}: one reward per step");
            for (i, (a, b)) in got.scores.iter().zip(&want).enumerate() {
                assert!((*a as f64 - b).abs() <= 1e-4, "{name}/{case} step {i}: {a} vs transformers {b}");
            }
        }
    }
}

#[test]
fn conventions_refuse_models_that_do_not_fit() {
    let seq = load("qwen3-seq");
    for c in ["qwen", "shepherd", "value"] {
        let conv = StepConvention::parse(c).unwrap();
        let steps = vec![Step { text: "a".into(), start: 0, end: 1 }];
        let err = seq
            .score_steps(&conv, &prompt_response("q", "a"), steps, &LengthPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(c) && err.contains("Qwen3ForSequenceClassification"), "{err}");
    }
    assert!(StepConvention::parse("orm").unwrap_err().to_string().contains("qwen, shepherd, value, prefix"));
    // A separator inside a step would shift every reward: refused.
    let prm = load("prm-qwen");
    let conv = StepConvention::parse("qwen").unwrap();
    let steps = vec![Step { text: "a<extra_0>b".into(), start: 0, end: 0 }];
    let err =
        prm.score_steps(&conv, &prompt_response("q", ""), steps, &LengthPolicy::default()).unwrap_err().to_string();
    assert!(err.contains("occurs 2 times"), "{err}");
}

#[test]
fn prefix_scores_equal_scoring_each_truncated_prefix() {
    let model = load("qwen3-seq");
    let problem = "What is 12 * 13?";
    let answer = "12 * 13 = 12 * 10 + 12 * 3.\n\nThat is 120 + 36.\n\nSo the answer is 156.";
    let steps = StepSplit::BlankLines.split(answer).unwrap();
    assert_eq!(steps.len(), 3);
    let conv = StepConvention::Prefix;
    // A system prompt and an earlier turn stay in the context the prefixes are cut from.
    let chat = vec![
        rewardlens_core::Message::system("You check arithmetic."),
        rewardlens_core::Message::user("Hi"),
        rewardlens_core::Message::assistant("Hello."),
        rewardlens_core::Message::user(problem),
        rewardlens_core::Message::assistant(answer),
    ];
    let input = model.inputs().encode_steps(&conv, &chat, &steps, &LengthPolicy::default()).unwrap();
    let got = model.score_steps(&conv, &chat, steps, &LengthPolicy::default()).unwrap();
    for (i, (&p, score)) in input.positions.iter().zip(&got.scores).enumerate() {
        // The prefix on its own: the tokens up to the step's last one, no closing template tokens.
        let HeadOutput::Sequence { logits, .. } =
            &model.forward_padded(&[&input.ids[..=p]], Padding::Right).unwrap()[0]
        else {
            panic!("a sequence head")
        };
        assert!((logits[0] - score).abs() <= 1e-4 * logits[0].abs().max(1.0), "step {i}: {score} vs {}", logits[0]);
    }
    // Each position is the last token of its step's text.
    let text = model.render(&chat).unwrap();
    let (ids, offsets) = model.inputs().text_encoder().encode_with_offsets(&text).unwrap();
    assert_eq!(ids, input.ids);
    let last = &text[offsets[input.positions[2]].0..offsets[input.positions[2]].1];
    assert!("So the answer is 156.".ends_with(last.trim_start()), "last token of step 3: {last:?}");
}
