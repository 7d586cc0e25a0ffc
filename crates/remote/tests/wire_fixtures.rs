//! Every documented response in `tests/fixtures` decodes as its `rewardlens_core::wire` type
//! and encodes back to the same JSON: the types `rewardlens serve` answers with hold exactly
//! what the real servers send.

use rewardlens_core::wire::{self, nim, openrlhf, tei, vllm};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Decodes fixture `name` as `T` and checks that `T` encodes back to the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let bytes = fixture(name);
    let typed: T = wire::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let original: Value = serde_json::from_slice(&bytes).unwrap();
    // Through text: f32 fields print in their shortest form, as the fixtures write them.
    let back: Value = serde_json::from_str(&serde_json::to_string(&typed).unwrap()).unwrap();
    assert_eq!(back, original, "{name}");
    typed
}

#[test]
fn vllm_responses() {
    let r: vllm::PoolingResponse = round_trip("vllm_pooling_classify.json");
    assert_eq!(r.data[0].index, Some(1), "kept as sent; the client sorts");
    assert_eq!(r.data[0].data, vllm::PoolingData::Values(vec![-1.25]));
    let r: vllm::PoolingResponse = round_trip("vllm_pooling_token_classify.json");
    assert!(matches!(&r.data[0].data, vllm::PoolingData::TokenRows(rows) if rows.len() == 8));
    let r: vllm::ClassifyResponse = round_trip("vllm_classify.json");
    assert_eq!((r.data[0].label.as_deref(), r.data[0].num_classes), (Some("Default"), Some(2)));
}

#[test]
fn nim_responses() {
    let r: nim::ChatCompletionResponse = round_trip("nim_nemotron_340b_reward.json");
    assert_eq!((r.object, r.created, r.model), (None, None, None), "null in NVIDIA's example");
    let choice = &r.choices[0];
    let pairs = nim::parse_reward_content(choice.message.as_ref().unwrap().content.as_deref().unwrap()).unwrap();
    let logprobs = choice.logprobs.as_ref().unwrap().content.as_ref().unwrap();
    assert_eq!(pairs, logprobs.iter().map(|e| (e.token.clone(), e.logprob)).collect::<Vec<_>>());
    let r: nim::ChatCompletionResponse = round_trip("nim_llama_3_1_nemotron_70b_reward.json");
    assert_eq!(r.choices[0].message.as_ref().unwrap().content.as_deref(), Some("reward:-2.609375"));
    assert_eq!(r.usage.unwrap().total_tokens, 53);
}

#[test]
fn openrlhf_and_tei_responses() {
    let r: openrlhf::RewardResponse = round_trip("openrlhf_get_reward.json");
    assert_eq!(r.rewards, r.scores);
    assert!(r.extra_logs.as_ref().unwrap().contains_key("dummy_scores"));
    let r: tei::PredictResponse = round_trip("tei_predict_batch.json");
    assert!(matches!(r, tei::PredictResponse::Batch(ref rows) if rows.len() == 2 && rows[0][0].label == "LABEL_1"));
}
