//! `rewardlens serve` and `rewardlens-remote` speak through the same `rewardlens_core::wire`
//! types. Against a real server (in process, on loopback, the tiny fixture models): for every
//! protocol the server implements, requests the client builds are accepted and the answers
//! parse with the client's parser, with transformers' scores; the other shapes real clients
//! send (token ids, content parts, LightRFT's `queries`, a single TEI text, the OpenAI SDK's
//! extra keys) are read, and every answer, errors included, decodes strictly as its wire type.

use rewardlens_core::wire::{self, nim, openrlhf, tei, vllm};
use rewardlens_core::{sigmoid, softmax};
use rewardlens_models::{CheckpointFiles, RewardModel};
use rewardlens_remote::{Protocol, RemoteConfig, RemoteInput, RemoteScorer};
use rewardlens_server::{NamedModel, ServerConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn logits(g: &Value, case: &str) -> Vec<f32> {
    floats(&g["conversations"][case]["logits"])
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1.0)
}

fn all_close(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(a, b)| close(*a, *b))
}

const PROMPT: &str = "What is the capital of France?";
const PARIS: &str = "The capital of France is Paris.";
const BERLIN: &str = "The capital of France is Berlin.";

/// The fixture models served: `qwen3` (one label), `qwen2` (three named labels) and `token`
/// (a two-label token head).
const MODELS: [(&str, &str); 3] = [("qwen3", "qwen3-seq"), ("qwen2", "qwen2-seq"), ("token", "qwen3-token")];

/// A server on a free loopback port over `(name, fixture)` models (the first is the
/// default); stops when dropped.
struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    async fn start(served: &[(&str, &str)]) -> Self {
        let models = served
            .iter()
            .map(|(name, dir)| NamedModel {
                name: (*name).into(),
                model: RewardModel::load(CheckpointFiles::from_dir(&fixture(dir)).unwrap(), &candle_core::Device::Cpu)
                    .unwrap(),
            })
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(rewardlens_server::serve(listener, models, ServerConfig::default(), async {
            let _ = stopped.await;
        }));
        Self { url, stop: Some(stop) }
    }

    fn client(&self, protocol: Protocol, model: &str) -> RemoteScorer {
        let mut cfg = RemoteConfig::new(self.url.clone(), protocol);
        cfg.model = Some(model.into());
        cfg.max_tries = 1;
        RemoteScorer::new(cfg).unwrap()
    }

    /// POSTs `body` as JSON to `route`: the status and the raw answer.
    async fn post(&self, route: &str, body: &impl Serialize) -> (u16, Vec<u8>) {
        let resp = reqwest::Client::new().post(format!("{}{route}", self.url)).json(body).send().await.unwrap();
        (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
    }

    /// POSTs `body` and decodes a 200 answer as `T`, strictly (the whole body must fit).
    async fn answer<T: DeserializeOwned>(&self, route: &str, body: &impl Serialize) -> T {
        let (status, bytes) = self.post(route, body).await;
        assert_eq!(status, 200, "{route}: {}", String::from_utf8_lossy(&bytes));
        wire::from_slice(&bytes).unwrap_or_else(|e| panic!("{route}: {e}: {}", String::from_utf8_lossy(&bytes)))
    }

    /// POSTs `body`, expecting the error status `status`; its decoded body.
    async fn error<T: DeserializeOwned>(&self, route: &str, body: &impl Serialize, status: u16) -> T {
        let (got, bytes) = self.post(route, body).await;
        assert_eq!(got, status, "{route}: {}", String::from_utf8_lossy(&bytes));
        wire::from_slice(&bytes).unwrap_or_else(|e| panic!("{route}: {e}: {}", String::from_utf8_lossy(&bytes)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn chat(answer: &str) -> RemoteInput {
    RemoteInput::Chat(rewardlens_core::types::prompt_response(PROMPT, answer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_client_and_the_server_agree_on_every_protocol() {
    let srv = Server::start(&MODELS).await;
    let (g3, g2, gt) = (golden("qwen3-seq"), golden("qwen2-seq"), golden("qwen3-token"));
    let chats = [chat(PARIS), chat(BERLIN)];
    let texts: Vec<RemoteInput> = ["simple", "wrong"]
        .iter()
        .map(|case| RemoteInput::Text {
            text: g3["conversations"][case]["text"].as_str().unwrap().to_owned(),
            prompt: PROMPT.into(),
            images: vec![],
        })
        .collect();
    let want = [logits(&g3, "simple")[0], logits(&g3, "wrong")[0]];

    for protocol in [Protocol::VllmPooling, Protocol::VllmClassify, Protocol::Nim, Protocol::OpenRlhf, Protocol::Tei] {
        let client = srv.client(protocol, "qwen3");
        let forms: &[&[RemoteInput]] = match protocol {
            // vLLM's API takes conversations and rendered text alike.
            Protocol::VllmPooling | Protocol::VllmClassify => &[&chats[..], &texts[..]],
            Protocol::Nim => &[&chats[..]],
            Protocol::OpenRlhf | Protocol::Tei => &[&texts[..]],
        };
        for inputs in forms {
            let got = client.score(inputs).await.unwrap_or_else(|e| panic!("{}: {e}", protocol.name()));
            for (s, w) in got.iter().zip(want) {
                assert!(close(s.score(), w), "{}: {} vs transformers {w}", protocol.name(), s.score());
            }
        }
    }

    // Three labels: NIM names them, vLLM and TEI give them in label order. OpenRLHF and TEI
    // requests name no model, so this server serves qwen2 first.
    let srv2 = Server::start(&MODELS[1..2]).await;
    let want2 = logits(&g2, "simple");
    let text2 = RemoteInput::Text {
        text: g2["conversations"]["simple"]["text"].as_str().unwrap().into(),
        prompt: "".into(),
        images: vec![],
    };
    for (protocol, input) in [(Protocol::Nim, &chats[0]), (Protocol::VllmClassify, &chats[0]), (Protocol::Tei, &text2)]
    {
        let got = srv2.client(protocol, "qwen2").score(std::slice::from_ref(input)).await.unwrap();
        assert!(all_close(&got[0].values, &want2), "{}: {:?} vs {want2:?}", protocol.name(), got[0].values);
        if protocol != Protocol::VllmClassify {
            assert_eq!(got[0].labels, ["helpfulness", "correctness", "coherence"], "{}", protocol.name());
        }
    }

    // Per-token rows of a token head (vLLM's `token_classify`) for token ids.
    let ids: Vec<u32> = serde_json::from_value(gt["conversations"]["simple"]["input_ids"].clone()).unwrap();
    let rows = srv.client(Protocol::VllmPooling, "token").token_rows(std::slice::from_ref(&ids)).await.unwrap();
    let want_rows = gt["conversations"]["simple"]["logits"].as_array().unwrap();
    assert_eq!(rows[0].len(), ids.len());
    for (t, (got, want)) in rows[0].iter().zip(want_rows).enumerate() {
        assert!(all_close(got, &floats(want)), "token {t}: {got:?} vs {want}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_client_shapes_are_read_and_every_answer_is_its_wire_type() {
    let srv = Server::start(&MODELS).await;
    let (g3, g2) = (golden("qwen3-seq"), golden("qwen2-seq"));
    let simple = &g3["conversations"]["simple"];
    let ids: Vec<u32> = serde_json::from_value(simple["input_ids"].clone()).unwrap();
    let logit = logits(&g3, "simple")[0];

    // vLLM: token ids with the default activation (sigmoid of the one logit) and full metadata.
    let r: vllm::PoolingResponse = srv.answer("/pooling", &json!({"model": "qwen3", "input": ids})).await;
    assert_eq!((r.object.as_deref(), r.model.as_deref(), r.data[0].index), (Some("list"), Some("qwen3"), Some(0)));
    assert!(r.id.unwrap().starts_with("pool-") && r.created.is_some());
    assert_eq!(r.usage.unwrap().prompt_tokens, ids.len());
    assert!(matches!(&r.data[0].data, vllm::PoolingData::Values(v) if close(v[0], sigmoid(logit))), "{:?}", r.data);
    // Content parts, as the OpenAI SDK may send them.
    let body = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]},
                                    {"role": "assistant", "content": [{"type": "text", "text": PARIS}]}],
                      "use_activation": false});
    let r: vllm::PoolingResponse = srv.answer("/pooling", &body).await;
    assert!(matches!(&r.data[0].data, vllm::PoolingData::Values(v) if close(v[0], logit)), "{:?}", r.data);
    // /classify: softmax over three labels, the best one named.
    let want2 = softmax(&logits(&g2, "simple"));
    let body = vllm::PoolingRequest {
        model: Some("qwen2".into()),
        input: Some(vllm::PoolingInput::Text(g2["conversations"]["simple"]["text"].as_str().unwrap().into())),
        ..Default::default()
    };
    let r: vllm::ClassifyResponse = srv.answer("/classify", &body).await;
    let item = &r.data[0];
    assert!(all_close(&item.probs.clone().into_vec(), &want2), "{item:?} vs {want2:?}");
    let best = want2.iter().enumerate().fold(0, |b, (j, &p)| if p > want2[b] { j } else { b });
    assert_eq!(item.label.as_deref(), Some(["helpfulness", "correctness", "coherence"][best]));
    assert_eq!(item.num_classes, Some(3));

    // OpenRLHF and LightRFT: `query` or `queries`, a list or one text.
    let text = simple["text"].as_str().unwrap();
    for body in [
        json!({"query": [text], "prompts": [PROMPT], "labels": [null]}),
        json!({"queries": [text], "prompts": [PROMPT]}),
        json!({"query": text}),
    ] {
        let r: openrlhf::RewardResponse = srv.answer("/get_reward", &body).await;
        assert_eq!(r.rewards, r.scores, "{body}");
        assert_eq!(r.extra_logs, Some(Default::default()));
        let rewards = r.into_rewards("rewards").unwrap().unwrap().into_per_query();
        assert!(rewards.len() == 1 && close(rewards[0][0], logit), "{body}: {rewards:?}");
    }
    let r: openrlhf::RewardResponse = srv.answer("/get_reward", &json!({"query": []})).await;
    assert_eq!(r.rewards, Some(openrlhf::Rewards::PerQuery(vec![])));

    // NIM as the OpenAI SDK sends it (extra keys); content and logprobs carry the same numbers.
    let body = json!({"model": "qwen2", "temperature": 0, "n": 1, "stream": false,
                      "messages": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": PARIS}]});
    let r: nim::ChatCompletionResponse = srv.answer("/v1/chat/completions", &body).await;
    assert_eq!((r.object.as_deref(), r.choices.len()), (Some("chat.completion"), 1));
    let choice = &r.choices[0];
    let pairs = nim::parse_reward_content(choice.message.as_ref().unwrap().content.as_deref().unwrap()).unwrap();
    let from_logprobs: Vec<(String, f32)> = choice
        .logprobs
        .as_ref()
        .unwrap()
        .content
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.token.clone(), e.logprob))
        .collect();
    assert_eq!(pairs, from_logprobs, "exactly the same numbers");
    assert!(all_close(&pairs.iter().map(|p| p.1).collect::<Vec<_>>(), &logits(&g2, "simple")));

    // TEI: one text (not a batch) answers one list, probabilities best first.
    let body = tei::PredictRequest {
        model: Some("qwen2".into()),
        inputs: tei::PredictInputs::Single(g2["conversations"]["simple"]["text"].as_str().unwrap().into()),
        raw_scores: false,
        truncate: None,
    };
    let r: tei::PredictResponse = srv.answer("/predict", &body).await;
    let preds = match r {
        tei::PredictResponse::Single(preds) => preds,
        other => panic!("a single text gets a single list: {other:?}"),
    };
    assert_eq!(preds[0].label, ["helpfulness", "correctness", "coherence"][best]);
    assert!(preds.windows(2).all(|w| w[0].score >= w[1].score));
    let mut sorted = want2.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    assert!(all_close(&preds.iter().map(|p| p.score).collect::<Vec<_>>(), &sorted));

    // /v1/models.
    let bytes = reqwest::get(format!("{}/v1/models", srv.url)).await.unwrap().bytes().await.unwrap();
    let models: vllm::ModelList = wire::from_slice(&bytes).unwrap();
    assert_eq!(models.data.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["qwen3", "qwen2", "token"]);

    // Errors: each API's own body, naming what was wrong.
    let e: vllm::ErrorResponse = srv.error("/pooling", &json!({"input": [1, -2]}), 400).await;
    assert!(e.error.message.starts_with("invalid request body: `input`: expected"), "{}", e.error.message);
    assert_eq!((e.error.kind.as_str(), e.error.code), ("BadRequestError", 400));
    let e: vllm::ErrorResponse = srv.error("/pooling", &json!({"input": "x", "task": "embed"}), 400).await;
    assert!(e.error.message.contains("Task embed is not supported"), "{}", e.error.message);
    let e: vllm::ErrorResponse = srv.error("/pooling", &json!({"model": "nope", "input": "x"}), 404).await;
    assert_eq!(e.error.kind, "NotFoundError");
    let e: vllm::ErrorResponse = srv.error("/get_reward", &json!({"query": [1]}), 400).await;
    assert!(e.error.message.contains("`query`"), "{}", e.error.message);
    let e: vllm::ErrorResponse = srv.error("/get_reward", &json!({"prompts": ["p"]}), 400).await;
    assert!(e.error.message.contains("needs `query`"), "{}", e.error.message);
    let e: vllm::ErrorResponse =
        srv.error("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "q"}]}), 400).await;
    assert!(e.error.message.contains("must be the assistant's"), "{}", e.error.message);
    let e: vllm::ErrorResponse =
        srv.error("/v1/chat/completions", &json!({"messages": [{"role": "robot", "content": "q"}]}), 400).await;
    assert!(e.error.message.contains("messages[0]") && e.error.message.contains("robot"), "{}", e.error.message);
    // Images to a text-only model: refused by name on every route that can carry them, never
    // scored on their text alone.
    let png = "data:image/png;base64,iVBORw0KGgo=";
    let with_image = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png}}, {"type": "text", "text": PROMPT}]},
                            {"role": "assistant", "content": PARIS}]);
    for route in ["/pooling", "/classify", "/v1/chat/completions"] {
        let e: vllm::ErrorResponse = srv.error(route, &json!({"model": "qwen2", "messages": with_image}), 400).await;
        assert!(
            e.error.message.contains("reads text only") && e.error.message.contains("1 image(s)"),
            "{route}: {}",
            e.error.message
        );
    }
    let audio =
        json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]);
    let e: vllm::ErrorResponse = srv.error("/pooling", &json!({"messages": audio}), 400).await;
    assert!(
        e.error.message.starts_with("`messages[0].content[0]`: parts of type `input_audio`"),
        "{}",
        e.error.message
    );
    let e: vllm::ErrorResponse =
        srv.error("/get_reward", &json!({"queries": [text, text], "images": [null, ["iVBORw0KGgo="]]}), 400).await;
    assert!(e.error.message.starts_with("`images[1]`: model `qwen3` reads text only"), "{}", e.error.message);
    let r: openrlhf::RewardResponse = srv.answer("/get_reward", &json!({"queries": [text], "images": [null]})).await;
    assert!(close(r.into_rewards("rewards").unwrap().unwrap().into_per_query()[0][0], logit), "no images: scored");
    let e: tei::ErrorResponse = srv.error("/predict", &json!({"inputs": [["a", "b"]]}), 400).await;
    assert!(e.error.contains("pairs are not supported") && e.error_type == "Validation", "{e:?}");
    let e: tei::ErrorResponse = srv.error("/predict", &json!({"inputs": 5}), 400).await;
    assert!(e.error.contains("[[text], ...]"), "{e:?}");
    let resp = reqwest::Client::new()
        .post(format!("{}/pooling", srv.url))
        .header("content-type", "application/json")
        .body("{\"input\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let e: vllm::ErrorResponse = wire::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert!(e.error.message.starts_with("request body is not valid JSON"), "{}", e.error.message);
}
