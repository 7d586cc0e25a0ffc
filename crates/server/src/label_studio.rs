//! A Label Studio ML backend (`rewardlens serve --label-studio`), in the shapes of
//! label-studio-ml-backend's `api.py` and Label Studio's `ml/api_connector.py`: `GET /health`,
//! `POST /setup` (answers the model version), `POST /predict` (one prediction per task, in
//! order) and `POST /webhook`, under `/label-studio` (the default model) or
//! `/label-studio/{model}`. The project's labeling config says which task fields are the prompt
//! and the responses, and which controls get the model's suggestion.

use serde_json::{json, Value};

/// An object tag (`<Text name="answer_a" value="$answer_a"/>`): its name and the task field.
#[derive(Debug, Clone, PartialEq)]
pub struct TextObject {
    pub name: String,
    pub field: String,
}

/// A control the backend fills.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// One choice per response, in order: the higher-scored response's choice is selected.
    Preference { name: String, to_name: String, choices: Vec<String> },
    /// `<Pairwise>` over two responses: `left` or `right`.
    Pairwise { name: String, to_name: String },
    /// A response's reward on the control's scale (1..=max_rating).
    Rating { name: String, response: usize, max_rating: u32 },
    /// A response's reward: raw, or mapped onto [min, max] when both are given.
    Number { name: String, response: usize, range: Option<(f64, f64)> },
    /// The rewards as text: one response's, or every response's (`name: reward` lines).
    Text { name: String, to_name: String, response: Option<usize> },
}

/// What a labeling config asks of the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelingConfig {
    pub prompt: TextObject,
    pub responses: Vec<TextObject>,
    pub controls: Vec<Control>,
}

/// Task fields that hold the prompt, in the order they are looked for.
const PROMPT_FIELDS: [&str; 6] = ["prompt", "question", "instruction", "input", "query", "context"];

impl LabelingConfig {
    /// Reads a labeling config. The prompt is the `<Text>` (or `<HyperText>`, `<Paragraphs>`)
    /// whose field is `prompt` (else `question`, `instruction`, `input`, `query`, `context`);
    /// every other text object is a response, in document order. Filled: `Choices` with one
    /// choice per response, `Pairwise`, `Rating` and `Number` on a response, and `TextArea`s
    /// whose name says `score` or `reward` (others are the annotators'). Errors name the tag.
    pub fn parse(xml: &str) -> Result<Self, String> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| format!("the labeling config is not XML: {e}"))?;
        let mut objects = Vec::new();
        for node in doc.descendants().filter(|n| n.is_element()) {
            if matches!(node.tag_name().name(), "Text" | "HyperText" | "Paragraphs") {
                let name = node.attribute("name").ok_or_else(|| describe(node, "has no `name`"))?;
                let value = node.attribute("value").unwrap_or("");
                let field = value.strip_prefix('$').ok_or_else(|| describe(node, "has no `value=\"$field\"`"))?;
                objects.push(TextObject { name: name.into(), field: field.into() });
            }
        }
        let prompt_at = PROMPT_FIELDS
            .iter()
            .find_map(|f| {
                objects.iter().position(|o| o.field.eq_ignore_ascii_case(f) || o.name.eq_ignore_ascii_case(f))
            })
            .ok_or_else(|| {
                format!(
                    "no prompt: give a <Text> whose value is $prompt (or ${}); the config has {}",
                    PROMPT_FIELDS[1..].join(", $"),
                    if objects.is_empty() {
                        "no <Text>".to_owned()
                    } else {
                        objects.iter().map(|o| format!("${}", o.field)).collect::<Vec<_>>().join(", ")
                    }
                )
            })?;
        let prompt = objects.remove(prompt_at);
        let responses = objects;
        if responses.is_empty() {
            return Err(format!("no responses: give a <Text> per response besides the prompt's (${})", prompt.field));
        }
        let response_of = |node: roxmltree::Node, to: &str| -> Result<usize, String> {
            responses.iter().position(|r| r.name == to).ok_or_else(|| {
                describe(
                    node,
                    &format!("points at `{to}`, which is not a response's <Text> (responses: {})", names(&responses)),
                )
            })
        };
        let mut controls = Vec::new();
        for node in doc.descendants().filter(|n| n.is_element()) {
            let tag = node.tag_name().name();
            if !matches!(tag, "Choices" | "Pairwise" | "Rating" | "Number" | "TextArea") {
                continue;
            }
            let name = node.attribute("name").ok_or_else(|| describe(node, "has no `name`"))?.to_owned();
            let to_name = node.attribute("toName").ok_or_else(|| describe(node, "has no `toName`"))?.to_owned();
            match tag {
                "Choices" => {
                    let choices: Vec<String> = node
                        .children()
                        .filter(|c| c.has_tag_name("Choice"))
                        .filter_map(|c| c.attribute("value").or_else(|| c.attribute("alias")).map(str::to_owned))
                        .collect();
                    // Other choice sets (a topic, a flag) are the annotators' own.
                    if choices.len() == responses.len() && responses.len() > 1 {
                        controls.push(Control::Preference { name, to_name, choices });
                    }
                }
                "Pairwise" => {
                    if responses.len() != 2 {
                        return Err(describe(
                            node,
                            &format!("compares two responses; the config has {}", responses.len()),
                        ));
                    }
                    controls.push(Control::Pairwise { name, to_name });
                }
                "Rating" => {
                    let response = response_of(node, &to_name)?;
                    let max_rating = match node.attribute("maxRating") {
                        None => 5,
                        Some(m) => m.parse::<u32>().ok().filter(|m| *m >= 1).ok_or_else(|| {
                            describe(node, &format!("has maxRating `{m}`: expected a whole number ≥ 1"))
                        })?,
                    };
                    controls.push(Control::Rating { name, response, max_rating });
                }
                "Number" => {
                    let response = response_of(node, &to_name)?;
                    let bound = |a: &str| -> Result<Option<f64>, String> {
                        node.attribute(a)
                            .map(|v| {
                                v.parse::<f64>().map_err(|_| describe(node, &format!("has {a} `{v}`: not a number")))
                            })
                            .transpose()
                    };
                    let range = match (bound("min")?, bound("max")?) {
                        (Some(lo), Some(hi)) if hi > lo => Some((lo, hi)),
                        (Some(_), Some(_)) => return Err(describe(node, "has max ≤ min")),
                        _ => None,
                    };
                    controls.push(Control::Number { name, response, range });
                }
                _ => {
                    let lower = name.to_ascii_lowercase();
                    if lower.contains("score") || lower.contains("reward") {
                        let response = responses.iter().position(|r| r.name == to_name);
                        controls.push(Control::Text { name, to_name, response });
                    }
                }
            }
        }
        if controls.is_empty() {
            return Err(format!(
                "nothing for the reward model to fill: add <Choices> with one <Choice> per response ({} here), \
                 <Pairwise>, a <Rating> or <Number> per response, or a <TextArea> named like `reward_scores`",
                responses.len()
            ));
        }
        Ok(Self { prompt, responses, controls })
    }

    /// The prompt and responses of a task's `data`, or what is missing.
    pub fn texts(&self, data: &Value) -> Result<(String, Vec<String>), String> {
        let field = |o: &TextObject| -> Result<String, String> {
            match data.get(&o.field) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!("`data.{}` must be text, not {other}", o.field)),
                None => Err(format!("the task has no `data.{}` (the <Text name=\"{}\"> field)", o.field, o.name)),
            }
        };
        Ok((field(&self.prompt)?, self.responses.iter().map(field).collect::<Result<_, _>>()?))
    }

    /// The prediction for one task from its responses' rewards: its `result` items and its
    /// `score` — the probability that the best response beats the runner-up
    /// (sigmoid of the difference; of the reward itself for one response), so Label Studio's
    /// Data Manager sorts tasks by the model's confidence.
    pub fn prediction(&self, rewards: &[f32], model_version: &str) -> Value {
        let (best, confidence) = rewardlens_core::best_with_confidence(rewards);
        let unit = |r: f32| f64::from(rewardlens_core::sigmoid(r));
        let raw = |r: f32| json!({ "reward": f64::from(r) });
        let result: Vec<Value> = self
            .controls
            .iter()
            .map(|c| match c {
                Control::Preference { name, to_name, choices } => json!({
                    "from_name": name, "to_name": to_name, "type": "choices",
                    "value": { "choices": [choices[best]] },
                    "meta": { "rewards": rewards.iter().map(|&r| f64::from(r)).collect::<Vec<_>>() },
                }),
                Control::Pairwise { name, to_name } => json!({
                    "from_name": name, "to_name": to_name, "type": "pairwise",
                    "value": { "selected": if best == 0 { "left" } else { "right" } },
                }),
                Control::Rating { name, response, max_rating } => {
                    let r = rewards[*response];
                    let rating = 1 + (unit(r) * f64::from(max_rating - 1)).round() as u32;
                    json!({
                        "from_name": name, "to_name": self.responses[*response].name, "type": "rating",
                        "value": { "rating": rating }, "meta": raw(r),
                    })
                }
                Control::Number { name, response, range } => {
                    let r = rewards[*response];
                    let number = match range {
                        Some((lo, hi)) => lo + unit(r) * (hi - lo),
                        None => f64::from(r),
                    };
                    json!({
                        "from_name": name, "to_name": self.responses[*response].name, "type": "number",
                        "value": { "number": number }, "meta": raw(r),
                    })
                }
                Control::Text { name, to_name, response } => {
                    let lines: Vec<String> = match response {
                        Some(i) => vec![format!("{}", rewards[*i])],
                        None => self.responses.iter().zip(rewards).map(|(o, r)| format!("{}: {r}", o.name)).collect(),
                    };
                    json!({
                        "from_name": name, "to_name": to_name, "type": "textarea", "value": { "text": lines },
                    })
                }
            })
            .collect();
        json!({ "result": result, "score": f64::from(confidence), "model_version": model_version })
    }
}

fn names(objects: &[TextObject]) -> String {
    objects.iter().map(|o| format!("`{}`", o.name)).collect::<Vec<_>>().join(", ")
}

/// `<Tag name="x">: what` (the tag as the config writes it).
fn describe(node: roxmltree::Node, what: &str) -> String {
    match node.attribute("name") {
        Some(n) => format!("<{} name=\"{n}\"> {what}", node.tag_name().name()),
        None => format!("<{}> {what}", node.tag_name().name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config shipped in web/examples (read from there: what users get is what is tested).
    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/examples/label-studio-pairwise.xml"))
            .unwrap()
    }

    #[test]
    fn the_shipped_config_maps_prompt_responses_and_controls() {
        let c = LabelingConfig::parse(&shipped()).unwrap();
        assert_eq!(c.prompt, TextObject { name: "prompt".into(), field: "prompt".into() });
        assert_eq!(c.responses.iter().map(|r| r.field.as_str()).collect::<Vec<_>>(), ["answer_a", "answer_b"]);
        let p = c.prediction(&[2.0, -1.0], "tiny");
        let result = p["result"].as_array().unwrap();
        let by_name = |n: &str| result.iter().find(|r| r["from_name"] == n).unwrap_or_else(|| panic!("{n}: {p}"));
        assert_eq!(by_name("preference")["value"], json!({"choices": ["Response A"]}));
        assert_eq!(
            by_name("reward_a")["value"]["rating"],
            1 + (rewardlens_core::sigmoid(2.0) as f64 * 9.0).round() as u64
        );
        assert_eq!(by_name("reward_a")["meta"]["reward"], 2.0);
        assert_eq!(by_name("reward_scores")["value"]["text"], json!(["answer_a: 2", "answer_b: -1"]));
        assert!((p["score"].as_f64().unwrap() - rewardlens_core::sigmoid(3.0) as f64).abs() < 1e-6);
        assert_eq!(p["model_version"], "tiny");
        let p = c.prediction(&[-1.0, 0.5], "tiny");
        let preference = p["result"].as_array().unwrap().iter().find(|r| r["from_name"] == "preference").unwrap();
        assert_eq!(preference["value"], json!({"choices": ["Response B"]}), "{p}");
    }

    #[test]
    fn other_controls_pairwise_and_ranges() {
        let xml = r#"<View><Text name="q" value="$question"/><Text name="left" value="$a"/><Text name="right" value="$b"/>
            <Pairwise name="pw" toName="left,right"/><Number name="n" toName="right" min="0" max="10"/>
            <Number name="raw" toName="left"/><TextArea name="reward_b" toName="right"/><TextArea name="notes" toName="q"/>
            <Choices name="topic" toName="q"><Choice value="math"/><Choice value="code"/><Choice value="other"/></Choices></View>"#;
        let c = LabelingConfig::parse(xml).unwrap();
        assert_eq!(c.prompt.field, "question");
        assert_eq!(c.controls.len(), 4, "the annotators' notes and topic are left alone: {:?}", c.controls);
        let p = c.prediction(&[0.0, 1.0], "m");
        assert_eq!(p["result"][0]["value"], json!({"selected": "right"}));
        assert!(
            (p["result"][1]["value"]["number"].as_f64().unwrap() - 10.0 * rewardlens_core::sigmoid(1.0) as f64).abs()
                < 1e-6
        );
        assert_eq!(p["result"][2]["value"]["number"], 0.0);
        assert_eq!(p["result"][3]["value"]["text"], json!(["1"]));
        let (prompt, responses) = c.texts(&json!({"question": "q?", "a": "x", "b": "y"})).unwrap();
        assert_eq!((prompt.as_str(), responses), ("q?", vec!["x".to_owned(), "y".to_owned()]));
        assert_eq!(
            c.texts(&json!({"question": "q?", "a": "x"})).unwrap_err(),
            "the task has no `data.b` (the <Text name=\"right\"> field)"
        );
        assert_eq!(
            c.texts(&json!({"question": 3, "a": "x", "b": "y"})).unwrap_err(),
            "`data.question` must be text, not 3"
        );
    }

    #[test]
    fn configs_it_cannot_map_name_the_tag() {
        for (xml, want) in [
            ("<View><Text name=\"t\" value=\"$text\"/></View>", "no prompt: give a <Text> whose value is $prompt (or $question, $instruction, $input, $query, $context); the config has $text"),
            ("<View><Text name=\"p\" value=\"$prompt\"/></View>", "no responses: give a <Text> per response besides the prompt's ($prompt)"),
            ("<View><Text name=\"p\" value=\"$prompt\"/><Text name=\"a\" value=\"$a\"/><Rating name=\"r\" toName=\"p\"/></View>", "<Rating name=\"r\"> points at `p`, which is not a response's <Text> (responses: `a`)"),
            ("<View><Text name=\"p\" value=\"$prompt\"/><Text name=\"a\" value=\"$a\"/><Rating name=\"r\" toName=\"a\" maxRating=\"ten\"/></View>", "<Rating name=\"r\"> has maxRating `ten`: expected a whole number ≥ 1"),
            ("<View><Text name=\"p\" value=\"$prompt\"/><Text name=\"a\" value=\"$a\"/><Pairwise name=\"pw\" toName=\"a\"/></View>", "<Pairwise name=\"pw\"> compares two responses; the config has 1"),
            ("<View><Text name=\"p\" value=\"$prompt\"/><Text name=\"a\" value=\"$a\"/><Choices name=\"c\" toName=\"p\"><Choice value=\"x\"/></Choices></View>", "nothing for the reward model to fill"),
            ("<View><Text name=\"p\" value=\"prompt\"/></View>", "<Text name=\"p\"> has no `value=\"$field\"`"),
            ("<View><Text", "the labeling config is not XML"),
        ] {
            let e = LabelingConfig::parse(xml).unwrap_err();
            assert!(e.starts_with(want), "{xml}: {e}");
        }
    }
}
