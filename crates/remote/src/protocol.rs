//! Request bodies and response parsing per protocol. Shapes follow each project's own source
//! (named per variant); documented example responses are kept as test fixtures.

use crate::{RemoteConfig, RemoteInput, RemoteScore};
use serde_json::{json, Value};

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

    fn model_field(body: &mut Value, cfg: &RemoteConfig) {
        if let Some(m) = &cfg.model {
            body["model"] = json!(m);
        }
    }

    /// The body for several rendered texts.
    pub fn text_request(self, inputs: &[RemoteInput], cfg: &RemoteConfig) -> crate::Result<Value> {
        let (texts, prompts): (Vec<&str>, Vec<&str>) = inputs
            .iter()
            .map(|i| match i {
                RemoteInput::Text { text, prompt } => (text.as_str(), prompt.as_str()),
                RemoteInput::Chat(_) => unreachable!("text_request takes texts"),
            })
            .unzip();
        let mut body = match self {
            Self::VllmPooling => {
                json!({"input": texts, "task": "classify", "use_activation": false, "add_special_tokens": false})
            }
            Self::VllmClassify => json!({"input": texts, "use_activation": false, "add_special_tokens": false}),
            Self::OpenRlhf => {
                json!({"query": texts, "prompts": prompts, "labels": vec![Value::Null; texts.len()]})
            }
            Self::Tei => {
                let batch: Vec<Vec<&str>> = texts.iter().map(|t| vec![*t]).collect();
                json!({"inputs": batch, "raw_scores": true, "truncate": false})
            }
            Self::Nim => return Err(crate::RemoteError::Input("NIM reward models take conversations".into())),
        };
        if matches!(self, Self::VllmPooling | Self::VllmClassify) {
            Self::model_field(&mut body, cfg);
        }
        Ok(body)
    }

    /// The body for one input.
    pub fn single_request(self, input: &RemoteInput, cfg: &RemoteConfig) -> crate::Result<Value> {
        match input {
            RemoteInput::Text { .. } => self.text_request(std::slice::from_ref(input), cfg),
            RemoteInput::Chat(messages) => {
                let mut body = match self {
                    Self::VllmPooling => json!({"messages": messages, "task": "classify", "use_activation": false}),
                    Self::VllmClassify => json!({"messages": messages, "use_activation": false}),
                    Self::Nim => json!({"messages": messages, "stream": false}),
                    Self::OpenRlhf | Self::Tei => {
                        return Err(crate::RemoteError::Input(format!(
                            "the {} protocol takes text rendered with the model's chat template; \
                             give a template (--template DIR|REPO) to render conversations",
                            self.name()
                        )))
                    }
                };
                Self::model_field(&mut body, cfg);
                Ok(body)
            }
        }
    }

    /// Reads `n` scores from a response.
    pub fn parse(self, v: &Value, n: usize, cfg: &RemoteConfig) -> Parsed {
        let scores = match self {
            Self::VllmPooling => parse_pooling(v)?,
            Self::VllmClassify => parse_classify(v)?,
            Self::Nim => vec![parse_nim(v)?],
            Self::OpenRlhf => parse_openrlhf(v, &cfg.score_key)?,
            Self::Tei => parse_tei(v, n)?,
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

fn f32s(v: &Value, what: &str) -> std::result::Result<Vec<f32>, String> {
    match v {
        Value::Number(x) => Ok(vec![x.as_f64().unwrap_or(f64::NAN) as f32]),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| format!("{what} holds a non-number: {x}")))
            .collect(),
        other => Err(format!("{what} is not a number or a list of numbers: {other}")),
    }
}

/// Items of `data`, put back in `index` order.
fn data_items(v: &Value) -> std::result::Result<Vec<&Value>, String> {
    let items = v.get("data").and_then(Value::as_array).ok_or("no `data` list")?;
    let mut indexed: Vec<(usize, &Value)> = items
        .iter()
        .enumerate()
        .map(|(pos, it)| (it.get("index").and_then(Value::as_u64).map(|i| i as usize).unwrap_or(pos), it))
        .collect();
    indexed.sort_by_key(|(i, _)| *i);
    if indexed.iter().enumerate().any(|(want, (i, _))| want != *i) {
        return Err("`data[].index` values are not 0..n".into());
    }
    Ok(indexed.into_iter().map(|(_, it)| it).collect())
}

fn parse_pooling(v: &Value) -> Parsed {
    data_items(v)?
        .into_iter()
        .enumerate()
        .map(|(i, it)| {
            let d = it.get("data").ok_or_else(|| format!("no `data[{i}].data`"))?;
            // A per-token answer (`token_classify`) means the server ignored `task`.
            if d.as_array().and_then(|a| a.first()).is_some_and(Value::is_array) {
                return Err(format!("`data[{i}].data` is per token; the server must support task `classify`"));
            }
            Ok(crate::RemoteScore { values: f32s(d, &format!("`data[{i}].data`"))?, labels: vec![] })
        })
        .collect()
}

/// vLLM's `token_classify` answer: one row of values per token of each input, in input order.
pub(crate) fn parse_token_rows(v: &Value, n: usize) -> std::result::Result<Vec<Vec<Vec<f32>>>, String> {
    let items = data_items(v)?;
    if items.len() != n {
        return Err(format!("{} results for {n} inputs", items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, it)| {
            let rows = it.get("data").and_then(Value::as_array).ok_or_else(|| format!("no `data[{i}].data` list"))?;
            rows.iter().enumerate().map(|(t, r)| f32s(r, &format!("`data[{i}].data[{t}]`"))).collect()
        })
        .collect()
}

fn parse_classify(v: &Value) -> Parsed {
    data_items(v)?
        .into_iter()
        .enumerate()
        .map(|(i, it)| {
            let p = it.get("probs").ok_or_else(|| format!("no `data[{i}].probs`"))?;
            Ok(crate::RemoteScore { values: f32s(p, &format!("`data[{i}].probs`"))?, labels: vec![] })
        })
        .collect()
}

/// `helpfulness:1.6,correctness:1.6,...` in the message content, else the same pairs in
/// `logprobs.content[].{token, logprob}` (where NeMo Curator reads them).
pub fn parse_nim(v: &Value) -> std::result::Result<crate::RemoteScore, String> {
    let choice = v.get("choices").and_then(|c| c.get(0)).ok_or("no `choices[0]`")?;
    let content = choice.get("message").and_then(|m| m.get("content")).and_then(Value::as_str).unwrap_or("");
    let mut labels = Vec::new();
    let mut values = Vec::new();
    for pair in content.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) =
            pair.split_once(':').ok_or_else(|| format!("content `{content}` is not `name:score,...`"))?;
        let value: f32 =
            value.trim().parse().map_err(|_| format!("content `{content}`: `{}` is not a number", value.trim()))?;
        labels.push(name.trim().to_owned());
        values.push(value);
    }
    if values.is_empty() {
        if let Some(lp) = choice.get("logprobs").and_then(|l| l.get("content")).and_then(Value::as_array) {
            for e in lp {
                labels.push(e.get("token").and_then(Value::as_str).unwrap_or("").to_owned());
                values.push(
                    e.get("logprob").and_then(Value::as_f64).ok_or("`logprobs.content[].logprob` missing")? as f32
                );
            }
        }
    }
    if values.is_empty() {
        return Err("no scores in `choices[0].message.content` or `choices[0].logprobs`".into());
    }
    Ok(crate::RemoteScore { values, labels })
}

fn parse_openrlhf(v: &Value, key: &str) -> Parsed {
    let r = v.get(key).ok_or_else(|| format!("no `{key}` key (keys: {})", keys(v)))?;
    match r {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| Ok(crate::RemoteScore { values: f32s(x, &format!("`{key}[{i}]`"))?, labels: vec![] }))
            .collect(),
        x => Ok(vec![crate::RemoteScore { values: f32s(x, &format!("`{key}`"))?, labels: vec![] }]),
    }
}

fn keys(v: &Value) -> String {
    v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_else(|| "none".into())
}

/// TEI answers each input's labels sorted by score; put them back in label order
/// (`LABEL_0`, `LABEL_1`, … or the model's names, sorted by `LABEL_i` index when present).
fn parse_tei(v: &Value, n: usize) -> Parsed {
    let rows: Vec<&Value> = match v.as_array() {
        Some(a) if a.first().is_some_and(Value::is_array) => a.iter().collect(),
        Some(_) if n == 1 => vec![v],
        _ => return Err("not a list of predictions".into()),
    };
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let mut preds: Vec<(String, f32)> = row
                .as_array()
                .ok_or_else(|| format!("prediction {i} is not a list"))?
                .iter()
                .map(|p| {
                    let label = p.get("label").and_then(Value::as_str).unwrap_or("").to_owned();
                    let score = p
                        .get("score")
                        .and_then(Value::as_f64)
                        .ok_or_else(|| format!("prediction {i} has no `score`"))?;
                    Ok((label, score as f32))
                })
                .collect::<std::result::Result<_, String>>()?;
            let order = |l: &str| l.strip_prefix("LABEL_").and_then(|x| x.parse::<usize>().ok());
            if preds.iter().all(|(l, _)| order(l).is_some()) {
                preds.sort_by_key(|(l, _)| order(l));
            }
            Ok(crate::RemoteScore {
                values: preds.iter().map(|p| p.1).collect(),
                labels: preds.into_iter().map(|p| p.0).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn cfg(p: Protocol) -> RemoteConfig {
        RemoteConfig::new("http://h", p)
    }

    #[test]
    fn documented_responses_parse() {
        let nim = parse_nim(&fixture("nim_nemotron_340b_reward.json")).unwrap();
        assert_eq!(nim.labels, ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]);
        assert_eq!(nim.values, [1.6171875, 1.6484375, 3.3125, 0.546875, 0.515625]);
        let nim70 = parse_nim(&fixture("nim_llama_3_1_nemotron_70b_reward.json")).unwrap();
        assert_eq!(
            (nim70.labels.as_slice(), nim70.values.as_slice()),
            (&["reward".to_owned()][..], &[-2.609375f32][..])
        );

        let pooling = Protocol::VllmPooling
            .parse(&fixture("vllm_pooling_classify.json"), 2, &cfg(Protocol::VllmPooling))
            .unwrap();
        assert_eq!(pooling[1].values, [-1.25]);
        let token = fixture("vllm_pooling_token_classify.json");
        assert!(Protocol::VllmPooling.parse(&token, 1, &cfg(Protocol::VllmPooling)).unwrap_err().contains("per token"));
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
    fn bad_responses_name_the_field() {
        let c = cfg(Protocol::OpenRlhf);
        let e = Protocol::OpenRlhf.parse(&json!({"scores": [1.0]}), 1, &c).unwrap_err();
        assert!(e.contains("no `rewards` key") && e.contains("scores"), "{e}");
        let e = Protocol::OpenRlhf.parse(&json!({"rewards": [1.0]}), 2, &c).unwrap_err();
        assert!(e.contains("1 scores for 2 inputs"), "{e}");
        let e =
            Protocol::VllmPooling.parse(&json!({"data": [{"index": 0}]}), 1, &cfg(Protocol::VllmPooling)).unwrap_err();
        assert!(e.contains("data[0].data"), "{e}");
        let e = parse_nim(&json!({"choices": [{"message": {"content": "helpfulness=2"}}]})).unwrap_err();
        assert!(e.contains("name:score"), "{e}");
        let mut c = cfg(Protocol::OpenRlhf);
        c.score_key = "scores".into();
        assert_eq!(Protocol::OpenRlhf.parse(&json!({"scores": [2.0]}), 1, &c).unwrap()[0].score(), 2.0);
    }

    #[test]
    fn requests_have_each_protocols_shape() {
        let chat = RemoteInput::Chat(rewardlens_core::types::prompt_response("p", "r"));
        let mut c = cfg(Protocol::VllmPooling);
        c.model = Some("m".into());
        let b = Protocol::VllmPooling.single_request(&chat, &c).unwrap();
        assert_eq!(b["task"], "classify");
        assert_eq!(b["use_activation"], false);
        assert_eq!(b["model"], "m");
        assert_eq!(b["messages"][1]["role"], "assistant");
        let text = [
            RemoteInput::Text { text: "t".into(), prompt: "p".into() },
            RemoteInput::Text { text: "u".into(), prompt: "q".into() },
        ];
        let b = Protocol::OpenRlhf.text_request(&text, &cfg(Protocol::OpenRlhf)).unwrap();
        assert_eq!(b, json!({"query": ["t", "u"], "prompts": ["p", "q"], "labels": [null, null]}));
        let b = Protocol::Tei.text_request(&text, &cfg(Protocol::Tei)).unwrap();
        assert_eq!(b["inputs"], json!([["t"], ["u"]]), "a TEI batch is a list of lists (two bare strings are a pair)");
        assert!(Protocol::Tei.single_request(&chat, &cfg(Protocol::Tei)).is_err());
    }
}
