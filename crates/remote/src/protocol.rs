//! Each protocol's request bodies and how its responses become scores. The bodies are the
//! `rewardlens_core::wire` types that `rewardlens serve` reads and answers with; documented
//! example responses are kept as test fixtures.

use crate::{RemoteConfig, RemoteInput, RemoteScore};
use rewardlens_core::wire::{self, nim, openrlhf, tei, vllm, ChatMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;

type Parsed = std::result::Result<Vec<RemoteScore>, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// vLLM `POST /pooling` (`vllm/entrypoints/pooling/pooling/protocol.py`): `task: classify`,
    /// `use_activation: false` so a one-label reward model returns its raw logit.
    VllmPooling,
    /// vLLM `POST /classify` (`vllm/entrypoints/pooling/classify/protocol.py`): `probs` per label.
    VllmClassify,
    /// NVIDIA NIM reward models: OpenAI chat completions whose content is `name:score,...`
    /// (nemotron-4-340b-reward's five attributes; `reward:x` for llama-3.1-nemotron-70b-reward).
    Nim,
    /// OpenRLHF `serve_rm.py` / LightRFT `remote_rm_fn`: `{"query": [...], "prompts": [...],
    /// "labels": [...]}` (LightRFT's `queries` too) -> `{"rewards": [...]}`.
    OpenRlhf,
    /// Hugging Face text-embeddings-inference `POST /predict` with `raw_scores: true`.
    Tei,
}

impl Protocol {
    pub const NAMES: [&'static str; 5] = ["vllm", "vllm-classify", "nim", "openrlhf", "tei"];

    pub fn parse_name(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "vllm" | "vllm-pooling" | "pooling" => Self::VllmPooling,
            "vllm-classify" | "classify" => Self::VllmClassify,
            "nim" => Self::Nim,
            "openrlhf" | "lightrft" => Self::OpenRlhf,
            "tei" => Self::Tei,
            other => return Err(format!("unknown protocol `{other}`; one of: {}", Self::NAMES.join(", "))),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::VllmPooling => "vllm",
            Self::VllmClassify => "vllm-classify",
            Self::Nim => "nim",
            Self::OpenRlhf => "openrlhf",
            Self::Tei => "tei",
        }
    }

    /// The route appended to a bare endpoint.
    pub fn route(self) -> &'static str {
        match self {
            Self::VllmPooling => "/pooling",
            Self::VllmClassify => "/classify",
            Self::Nim => "/v1/chat/completions",
            Self::OpenRlhf => "/get_reward",
            Self::Tei => "/predict",
        }
    }

    /// Whether several rendered texts go in one request.
    pub fn batches_text(self) -> bool {
        !matches!(self, Self::Nim)
    }

    /// Whether the protocol can take a conversation (else the text must be rendered first).
    pub fn takes_chat(self) -> bool {
        matches!(self, Self::VllmPooling | Self::VllmClassify | Self::Nim)
    }

    /// The body for several rendered texts. With images, OpenRLHF's body becomes LightRFT's
    /// (`queries`, `prompts`, `images`: what its `remote_rm_fn` sends a multimodal reward
    /// server); the other text forms cannot carry images and refuse them.
    pub fn text_request(self, inputs: &[RemoteInput], cfg: &RemoteConfig) -> crate::Result<RequestBody> {
        let mut texts = Vec::with_capacity(inputs.len());
        let mut prompts = Vec::with_capacity(inputs.len());
        let mut images = Vec::with_capacity(inputs.len());
        for i in inputs {
            let RemoteInput::Text { text, prompt, images: own } = i else { unreachable!("text_request takes texts") };
            texts.push(text.clone());
            prompts.push(prompt.clone());
            images.push(own);
        }
        if images.iter().any(|i| !i.is_empty()) {
            return match self {
                Self::OpenRlhf => Ok(RequestBody::Reward(openrlhf::RewardRequest {
                    images: Some(images.into_iter().map(|i| bare_base64(i)).collect::<crate::Result<_>>()?),
                    queries: Some(openrlhf::Queries::List(texts)),
                    prompts: Some(prompts),
                    ..Default::default()
                })),
                Self::VllmPooling | Self::VllmClassify => Err(crate::RemoteError::Input(
                    "vLLM's `input` texts carry no images: give no --template, so that conversations go as \
                     `messages` with `image_url` parts"
                        .into(),
                )),
                _ => Err(self.no_images()),
            };
        }
        Ok(match self {
            Self::VllmPooling | Self::VllmClassify => RequestBody::Pooling(vllm::PoolingRequest {
                model: cfg.model.clone(),
                input: Some(vllm::PoolingInput::Batch(texts.into_iter().map(vllm::PoolingInputItem::Text).collect())),
                task: self.pooling_task(),
                use_activation: Some(false),
                // The template already put in the special tokens.
                add_special_tokens: Some(false),
                ..Default::default()
            }),
            Self::OpenRlhf => RequestBody::Reward(openrlhf::RewardRequest {
                labels: Some(vec![serde_json::Value::Null; texts.len()]),
                query: Some(openrlhf::Queries::List(texts)),
                prompts: Some(prompts),
                ..Default::default()
            }),
            Self::Tei => RequestBody::Predict(tei::PredictRequest {
                model: None,
                inputs: tei::PredictInputs::Batch(texts.into_iter().map(|t| vec![t]).collect()),
                raw_scores: true,
                truncate: Some(false),
            }),
            Self::Nim => return Err(crate::RemoteError::Input("NIM reward models take conversations".into())),
        })
    }

    /// `task: classify` on `/pooling`: a one-label model's raw logit, whatever the server's
    /// default task for it (`/classify` has no task).
    fn pooling_task(self) -> Option<vllm::PoolingTask> {
        (self == Self::VllmPooling).then_some(vllm::PoolingTask::Classify)
    }

    /// The body for one input.
    pub fn single_request(self, input: &RemoteInput, cfg: &RemoteConfig) -> crate::Result<RequestBody> {
        match input {
            RemoteInput::Text { .. } => self.text_request(std::slice::from_ref(input), cfg),
            RemoteInput::Chat(messages) => {
                if !self.takes_images() && messages.iter().any(|m| !m.images.is_empty()) {
                    return Err(self.no_images());
                }
                // Images go as `image_url` parts, before each message's text.
                let messages: Vec<ChatMessage> = messages.iter().cloned().map(ChatMessage::from).collect();
                Ok(match self {
                    Self::VllmPooling | Self::VllmClassify => RequestBody::Pooling(vllm::PoolingRequest {
                        model: cfg.model.clone(),
                        messages: Some(messages),
                        task: self.pooling_task(),
                        use_activation: Some(false),
                        ..Default::default()
                    }),
                    Self::Nim => RequestBody::ChatCompletion(nim::ChatCompletionRequest {
                        model: cfg.model.clone(),
                        messages,
                        stream: Some(false),
                    }),
                    Self::OpenRlhf | Self::Tei => {
                        return Err(crate::RemoteError::Input(format!(
                            "the {} protocol takes text rendered with the model's chat template; \
                             give a template (--template DIR|REPO) to render conversations",
                            self.name()
                        )))
                    }
                })
            }
        }
    }

    /// Whether the protocol can carry images: vLLM's chat form (`image_url` parts) and
    /// LightRFT's `images`.
    pub fn takes_images(self) -> bool {
        matches!(self, Self::VllmPooling | Self::VllmClassify | Self::OpenRlhf)
    }

    fn no_images(self) -> crate::RemoteError {
        crate::RemoteError::Input(format!(
            "the {} protocol carries no images; multimodal reward servers take them over vllm (chat) or \
             openrlhf (LightRFT's `images`)",
            self.name()
        ))
    }

    /// Reads `n` scores from a response body.
    pub fn parse(self, body: &[u8], n: usize, cfg: &RemoteConfig) -> Parsed {
        let scores = match self {
            Self::VllmPooling => pooling_scores(decode(body)?)?,
            Self::VllmClassify => classify_scores(decode(body)?)?,
            Self::Nim => vec![nim_score(decode(body)?)?],
            Self::OpenRlhf => reward_scores(decode(body)?, &cfg.score_key)?,
            Self::Tei => prediction_scores(decode(body)?, n)?,
        };
        if scores.len() != n {
            return Err(format!("{} scores for {n} inputs", scores.len()));
        }
        if let Some(i) = scores.iter().position(|s| s.values.is_empty() || s.values.iter().any(|x| !x.is_finite())) {
            return Err(format!("score {i} is empty or not a finite number"));
        }
        Ok(scores)
    }
}

/// One input's images as LightRFT sends them: the base64 of each file (no `data:` prefix), or
/// null for an input without images.
fn bare_base64(images: &[String]) -> crate::Result<Option<Vec<String>>> {
    if images.is_empty() {
        return Ok(None);
    }
    images
        .iter()
        .map(|url| {
            rewardlens_core::image::parse_data_url(url)
                .map(|(_, b64)| b64.to_owned())
                .map_err(|e| crate::RemoteError::Input(format!("image `{}`: {e}", rewardlens_core::image::shown(url))))
        })
        .collect::<crate::Result<Vec<_>>>()
        .map(Some)
}

/// A request body in its protocol's wire type (serialized as that type alone).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RequestBody {
    /// vLLM `/pooling` and `/classify`.
    Pooling(vllm::PoolingRequest),
    /// NIM `/v1/chat/completions`.
    ChatCompletion(nim::ChatCompletionRequest),
    /// OpenRLHF/LightRFT `/get_reward`.
    Reward(openrlhf::RewardRequest),
    /// TEI `/predict`.
    Predict(tei::PredictRequest),
}

/// A response body as its wire type; what did not fit, named by its path.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    wire::from_slice(body).map_err(|e| {
        if e.is_syntax() {
            format!("not JSON ({e}): {}", crate::snippet(&String::from_utf8_lossy(body)))
        } else {
            e.to_string()
        }
    })
}

fn score(values: Vec<f32>) -> RemoteScore {
    RemoteScore { values, labels: vec![] }
}

/// `data` items put back in `index` order (an item without one stands at its position).
fn in_index_order<T>(items: Vec<T>, index: impl Fn(&T) -> Option<usize>) -> Result<Vec<T>, String> {
    let mut indexed: Vec<(usize, T)> =
        items.into_iter().enumerate().map(|(pos, it)| (index(&it).unwrap_or(pos), it)).collect();
    indexed.sort_by_key(|(i, _)| *i);
    if indexed.iter().enumerate().any(|(want, (i, _))| want != *i) {
        return Err("`data[].index` values are not 0..n".into());
    }
    Ok(indexed.into_iter().map(|(_, it)| it).collect())
}

fn pooling_scores(resp: vllm::PoolingResponse) -> Parsed {
    in_index_order(resp.data, |it| it.index)?
        .into_iter()
        .enumerate()
        .map(|(i, it)| match it.data {
            vllm::PoolingData::Values(v) => Ok(score(v)),
            vllm::PoolingData::Bare(x) => Ok(score(vec![x])),
            // A per-token answer (`token_classify`) means the server ignored `task`.
            vllm::PoolingData::TokenRows(_) => {
                Err(format!("`data[{i}].data` is per token; the server must support task `classify`"))
            }
        })
        .collect()
}

/// vLLM's `token_classify` answer: one row of values per token of each input, in input order.
pub(crate) fn token_rows(body: &[u8], n: usize) -> Result<Vec<Vec<Vec<f32>>>, String> {
    let resp: vllm::PoolingResponse = decode(body)?;
    let items = in_index_order(resp.data, |it| it.index)?;
    if items.len() != n {
        return Err(format!("{} results for {n} inputs", items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, it)| match it.data {
            vllm::PoolingData::TokenRows(rows) => Ok(rows),
            // A one-label head's rows, squeezed to one number per token.
            vllm::PoolingData::Values(v) => Ok(v.into_iter().map(|x| vec![x]).collect()),
            vllm::PoolingData::Bare(_) => Err(format!("`data[{i}].data` is a number, not a list per token")),
        })
        .collect()
}

fn classify_scores(resp: vllm::ClassifyResponse) -> Parsed {
    Ok(in_index_order(resp.data, |it| it.index)?.into_iter().map(|it| score(it.probs.into_vec())).collect())
}

/// `helpfulness:1.6,correctness:1.6,...` in the message content, else the same pairs in
/// `logprobs.content[].{token, logprob}` (where NeMo Curator reads them).
fn nim_score(resp: nim::ChatCompletionResponse) -> Result<RemoteScore, String> {
    let choice = resp.choices.into_iter().next().ok_or("no `choices[0]`")?;
    let content = choice.message.and_then(|m| m.content).unwrap_or_default();
    let mut pairs = nim::parse_reward_content(&content).map_err(|e| e.to_string())?;
    if pairs.is_empty() {
        let logprobs = choice.logprobs.and_then(|l| l.content).unwrap_or_default();
        pairs = logprobs.into_iter().map(|e| (e.token, e.logprob)).collect();
    }
    if pairs.is_empty() {
        return Err("no scores in `choices[0].message.content` or `choices[0].logprobs`".into());
    }
    let (labels, values) = pairs.into_iter().unzip();
    Ok(RemoteScore { values, labels })
}

fn reward_scores(resp: openrlhf::RewardResponse, key: &str) -> Parsed {
    let keys = resp.keys().join(", ");
    let rewards = resp
        .into_rewards(key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no `{key}` key (keys: {})", if keys.is_empty() { "none" } else { keys.as_str() }))?;
    Ok(rewards.into_per_query().into_iter().map(score).collect())
}

/// TEI answers each input's labels sorted by score; put them back in label order
/// (`LABEL_0`, `LABEL_1`, … or the model's names, sorted by `LABEL_i` index when present).
fn prediction_scores(resp: tei::PredictResponse, n: usize) -> Parsed {
    let rows = match resp {
        tei::PredictResponse::Batch(rows) => rows,
        tei::PredictResponse::Single(row) if n == 1 => vec![row],
        tei::PredictResponse::Single(_) => return Err(format!("one list of predictions for {n} inputs")),
    };
    let order = |l: &str| l.strip_prefix("LABEL_").and_then(|x| x.parse::<usize>().ok());
    Ok(rows
        .into_iter()
        .map(|mut preds| {
            if preds.iter().all(|p| order(&p.label).is_some()) {
                preds.sort_by_key(|p| order(&p.label));
            }
            RemoteScore {
                values: preds.iter().map(|p| p.score).collect(),
                labels: preds.into_iter().map(|p| p.label).collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn cfg(p: Protocol) -> RemoteConfig {
        RemoteConfig::new("http://h", p)
    }

    fn parse(p: Protocol, body: &Value, n: usize) -> Parsed {
        p.parse(body.to_string().as_bytes(), n, &cfg(p))
    }

    #[test]
    fn documented_responses_parse() {
        let nim = Protocol::Nim.parse(&fixture("nim_nemotron_340b_reward.json"), 1, &cfg(Protocol::Nim)).unwrap();
        assert_eq!(nim[0].labels, ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]);
        assert_eq!(nim[0].values, [1.6171875, 1.6484375, 3.3125, 0.546875, 0.515625]);
        let nim70 =
            Protocol::Nim.parse(&fixture("nim_llama_3_1_nemotron_70b_reward.json"), 1, &cfg(Protocol::Nim)).unwrap();
        assert_eq!(
            (nim70[0].labels.as_slice(), nim70[0].values.as_slice()),
            (&["reward".to_owned()][..], &[-2.609375f32][..])
        );

        let pooling = Protocol::VllmPooling
            .parse(&fixture("vllm_pooling_classify.json"), 2, &cfg(Protocol::VllmPooling))
            .unwrap();
        assert_eq!(pooling[0].values, [3.5], "back in index order");
        assert_eq!(pooling[1].values, [-1.25]);
        let token = fixture("vllm_pooling_token_classify.json");
        assert!(Protocol::VllmPooling.parse(&token, 1, &cfg(Protocol::VllmPooling)).unwrap_err().contains("per token"));
        assert_eq!(token_rows(&token, 1).unwrap()[0].len(), 8);
        let classify =
            Protocol::VllmClassify.parse(&fixture("vllm_classify.json"), 1, &cfg(Protocol::VllmClassify)).unwrap();
        assert_eq!(classify[0].values.len(), 2);

        let rlhf = Protocol::OpenRlhf.parse(&fixture("openrlhf_get_reward.json"), 2, &cfg(Protocol::OpenRlhf)).unwrap();
        assert_eq!(rlhf.iter().map(|s| s.score()).collect::<Vec<_>>(), [0.5, -1.5]);

        let tei = Protocol::Tei.parse(&fixture("tei_predict_batch.json"), 2, &cfg(Protocol::Tei)).unwrap();
        assert_eq!(tei[0].labels, ["LABEL_0", "LABEL_1"], "back in label order");
        assert_eq!(tei[0].values, [0.2, 0.8]);
    }

    #[test]
    fn other_shapes_servers_emit_parse() {
        // A bare number per input, items without `index`, a single TEI list, OpenRLHF's bare
        // reward for one query, NIM scores only in logprobs.
        let p = parse(Protocol::VllmPooling, &json!({"data": [{"data": 1.5}, {"data": [2.5]}]}), 2).unwrap();
        assert_eq!((p[0].values.as_slice(), p[1].values.as_slice()), (&[1.5f32][..], &[2.5f32][..]));
        let t =
            parse(Protocol::Tei, &json!([{"score": 0.25, "label": "LABEL_1"}, {"score": 0.75, "label": "LABEL_0"}]), 1);
        assert_eq!(t.unwrap()[0].values, [0.75, 0.25]);
        assert!(parse(Protocol::Tei, &json!([{"score": 0.25}]), 2).unwrap_err().contains("for 2 inputs"));
        assert_eq!(parse(Protocol::OpenRlhf, &json!({"rewards": 0.5}), 1).unwrap()[0].values, [0.5]);
        assert_eq!(parse(Protocol::OpenRlhf, &json!({"rewards": [[0.5, 1.0]]}), 1).unwrap()[0].values, [0.5, 1.0]);
        let nim = parse(
            Protocol::Nim,
            &json!({"choices": [{"message": {"content": null}, "logprobs": {"content": [{"token": "reward", "logprob": -1.0}]}}]}),
            1,
        )
        .unwrap();
        assert_eq!((nim[0].labels.as_slice(), nim[0].values.as_slice()), (&["reward".to_owned()][..], &[-1.0f32][..]));
        let rows = token_rows(json!({"data": [{"index": 0, "data": [0.5, 0.25]}]}).to_string().as_bytes(), 1);
        assert_eq!(rows.unwrap(), [[[0.5], [0.25]]], "a one-label head's rows, squeezed");
    }

    #[test]
    fn bad_responses_name_the_field() {
        let e = parse(Protocol::OpenRlhf, &json!({"scores": [1.0]}), 1).unwrap_err();
        assert!(e.contains("no `rewards` key") && e.contains("scores"), "{e}");
        let e = parse(Protocol::OpenRlhf, &json!({"rewards": [1.0]}), 2).unwrap_err();
        assert!(e.contains("1 scores for 2 inputs"), "{e}");
        let e = parse(Protocol::OpenRlhf, &json!({"rewards": ["x"]}), 1).unwrap_err();
        assert!(e.starts_with("`rewards`: expected a list"), "{e}");
        let e = parse(Protocol::VllmPooling, &json!({"data": [{"index": 0}]}), 1).unwrap_err();
        assert!(e.starts_with("`data[0]`: missing field `data`"), "{e}");
        let e = parse(Protocol::VllmPooling, &json!({"data": [{"index": 0, "data": [1.0, null]}]}), 1).unwrap_err();
        assert!(e.starts_with("`data[0].data`: expected a list of numbers"), "{e}");
        let e = parse(Protocol::VllmPooling, &json!({"data": [{"index": 1, "data": [1.0]}]}), 1).unwrap_err();
        assert!(e.contains("`data[].index` values are not 0..n"), "{e}");
        let e = parse(Protocol::VllmClassify, &json!({"data": [{"index": 0, "label": "a"}]}), 1).unwrap_err();
        assert!(e.starts_with("`data[0]`: missing field `probs`"), "{e}");
        let e = parse(Protocol::Nim, &json!({"choices": [{"message": {"content": "helpfulness=2"}}]}), 1).unwrap_err();
        assert!(e.contains("name:score"), "{e}");
        let e = parse(Protocol::Nim, &json!({"choices": []}), 1).unwrap_err();
        assert!(e.contains("no `choices[0]`"), "{e}");
        let e = parse(Protocol::Nim, &json!({"choices": [{"logprobs": {"content": [{"token": "reward"}]}}]}), 1)
            .unwrap_err();
        assert!(e.starts_with("`choices[0].logprobs.content[0]`: missing field `logprob`"), "{e}");
        let e = parse(Protocol::Tei, &json!([[{"label": "LABEL_0"}]]), 1).unwrap_err();
        assert!(e.contains("expected a list of predictions"), "{e}");
        let e = Protocol::OpenRlhf.parse(b"{\"rewards\": [1.0,", 1, &cfg(Protocol::OpenRlhf)).unwrap_err();
        assert!(e.starts_with("not JSON (") && e.ends_with(r#"{"rewards": [1.0,"#), "{e}");
        let mut c = cfg(Protocol::OpenRlhf);
        c.score_key = "scores".into();
        assert_eq!(Protocol::OpenRlhf.parse(br#"{"scores": [2.0]}"#, 1, &c).unwrap()[0].score(), 2.0);
        c.score_key = "reward".into();
        assert_eq!(Protocol::OpenRlhf.parse(br#"{"reward": [3.0]}"#, 1, &c).unwrap()[0].score(), 3.0);
        let e = Protocol::OpenRlhf.parse(br#"{"reward": {"a": 1}}"#, 1, &c).unwrap_err();
        assert!(e.starts_with("`reward`: expected a list"), "{e}");
    }

    #[test]
    fn requests_have_each_protocols_shape() {
        let body = |b: RequestBody| serde_json::to_value(b).unwrap();
        let chat = RemoteInput::Chat(rewardlens_core::types::prompt_response("p", "r"));
        let mut c = cfg(Protocol::VllmPooling);
        c.model = Some("m".into());
        let b = body(Protocol::VllmPooling.single_request(&chat, &c).unwrap());
        assert_eq!(
            b,
            json!({"model": "m", "task": "classify", "use_activation": false,
                   "messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "r"}]})
        );
        let b = body(Protocol::VllmClassify.single_request(&chat, &c).unwrap());
        assert!(b.get("task").is_none(), "/classify has no task: {b}");
        let b = body(Protocol::Nim.single_request(&chat, &c).unwrap());
        assert_eq!(
            (b["stream"].clone(), b["model"].clone(), b["messages"][1]["role"].clone()),
            (json!(false), json!("m"), json!("assistant"))
        );
        let text = [
            RemoteInput::Text { text: "t".into(), prompt: "p".into(), images: vec![] },
            RemoteInput::Text { text: "u".into(), prompt: "q".into(), images: vec![] },
        ];
        let b = body(Protocol::VllmPooling.text_request(&text, &c).unwrap());
        assert_eq!(
            b,
            json!({"model": "m", "input": ["t", "u"], "task": "classify", "use_activation": false, "add_special_tokens": false})
        );
        let b = body(Protocol::OpenRlhf.text_request(&text, &cfg(Protocol::OpenRlhf)).unwrap());
        assert_eq!(b, json!({"query": ["t", "u"], "prompts": ["p", "q"], "labels": [null, null]}));
        let b = body(Protocol::Tei.text_request(&text, &cfg(Protocol::Tei)).unwrap());
        assert_eq!(b["inputs"], json!([["t"], ["u"]]), "a TEI batch is a list of lists (two bare strings are a pair)");
        assert_eq!((b["raw_scores"].clone(), b["truncate"].clone()), (json!(true), json!(false)));
        assert!(Protocol::Tei.single_request(&chat, &cfg(Protocol::Tei)).is_err());
        assert!(Protocol::Nim.text_request(&text, &cfg(Protocol::Nim)).is_err());
    }

    #[test]
    fn images_go_as_image_url_parts_or_lightrfts_base64() {
        let body = |b: RequestBody| serde_json::to_value(b).unwrap();
        let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==";
        let mut prompt = rewardlens_core::Message::user("What is it?");
        prompt.images = vec![png.into()];
        let chat = RemoteInput::Chat(vec![prompt, rewardlens_core::Message::assistant("A cat.")]);
        let b = body(Protocol::VllmPooling.single_request(&chat, &cfg(Protocol::VllmPooling)).unwrap());
        assert_eq!(
            b["messages"],
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png}}, {"type": "text", "text": "What is it?"}]},
                   {"role": "assistant", "content": "A cat."}])
        );
        let text = [
            RemoteInput::Text { text: "t".into(), prompt: "p".into(), images: vec![png.into(), png.into()] },
            RemoteInput::Text { text: "u".into(), prompt: "q".into(), images: vec![] },
        ];
        let b = body(Protocol::OpenRlhf.text_request(&text, &cfg(Protocol::OpenRlhf)).unwrap());
        let b64 = png.split_once(',').unwrap().1;
        assert_eq!(b, json!({"queries": ["t", "u"], "prompts": ["p", "q"], "images": [[b64, b64], null]}));
        for p in [Protocol::Nim, Protocol::Tei] {
            let e = p.single_request(&chat, &cfg(p)).unwrap_err().to_string();
            assert!(e.contains(&format!("the {} protocol carries no images", p.name())), "{e}");
        }
        let e = Protocol::VllmPooling.text_request(&text, &cfg(Protocol::VllmPooling)).unwrap_err().to_string();
        assert!(e.contains("give no --template"), "{e}");
        let bad = [RemoteInput::Text { text: "t".into(), prompt: "p".into(), images: vec!["cat.png".into()] }];
        let e = Protocol::OpenRlhf.text_request(&bad, &cfg(Protocol::OpenRlhf)).unwrap_err().to_string();
        assert!(e.contains("image `cat.png`: not a data URL"), "{e}");
    }
}
