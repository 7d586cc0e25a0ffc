//! The JSONL record forms shared by every front end (CLI batch files, the browser's batch
//! scoring, the JS API): what a line asks for, and the fields its scores add.

use crate::ConversationScore;
use rewardlens_core::types::prompt_response;
use rewardlens_core::{preference_probability, ranking, Message};
use serde_json::{Map, Value};

/// What is wrong with a record, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

type Result<T> = std::result::Result<T, RecordError>;

fn bail<T>(msg: impl Into<String>) -> Result<T> {
    Err(RecordError(msg.into()))
}

/// Every field a scored line gains (the CLI, the browser and resuming all use this one list):
/// stripped again to recognise already-scored lines on `--resume`, so a field written anywhere
/// must be named here.
pub const ADDED_FIELDS: [&str; 21] = [
    // annotate
    "score",
    "attributes",
    "token_logits",
    "scores",
    "ranking",
    "chosen_score",
    "rejected_score",
    "chosen_attributes",
    "rejected_attributes",
    "correct",
    "preference_probability",
    "truncated_tokens",
    // annotate_steps
    "steps",
    "step_scores",
    "first_bad_step",
    "step_convention",
    // annotate_tokens
    "tokens",
    "token_scores",
    // per-line errors: steps that could not be scored, a line that could not be scored
    STEP_ERROR_FIELD,
    ERROR_FIELD,
    // what scored the line (model, revision, options): checked by `--resume`
    SCORED_WITH_FIELD,
];

/// The steps of a line could not be scored; its scores stay.
pub const STEP_ERROR_FIELD: &str = "step_error";
/// The line could not be scored (alone, after its batch failed); it has no scores.
pub const ERROR_FIELD: &str = "error";
/// The model, revision and options that scored the line.
pub const SCORED_WITH_FIELD: &str = "scored_with";

/// One input line, understood.
pub enum Record {
    /// `conversation` or `instruction`/`response`: one sequence.
    Single(Vec<Message>),
    /// `prompt`/`responses`: one sequence per response.
    Responses(Vec<Vec<Message>>),
    /// `chosen`/`rejected`: two sequences.
    Pair(Vec<Message>, Vec<Message>),
}

impl Record {
    pub fn conversations(&self) -> Vec<&[Message]> {
        match self {
            Record::Single(c) => vec![c],
            Record::Responses(cs) => cs.iter().map(|c| c.as_slice()).collect(),
            Record::Pair(a, b) => vec![a, b],
        }
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    obj.get(key).and_then(Value::as_str).ok_or_else(|| RecordError(format!("`{key}` must be a string")))
}

fn conversation(v: &Value, key: &str) -> Result<Vec<Message>> {
    let msgs: Vec<Message> = serde_json::from_value(v.clone())
        .map_err(|e| RecordError(format!("`{key}` must be a list of {{\"role\", \"content\"}} messages: {e}")))?;
    if msgs.is_empty() {
        return bail(format!("`{key}` has no messages"));
    }
    Ok(msgs)
}

/// `prompt` as messages: a string is one user turn, a list is taken as is.
fn prompt_messages(obj: &Map<String, Value>) -> Result<Option<Vec<Message>>> {
    match obj.get("prompt") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![Message::user(s.as_str())])),
        Some(v @ Value::Array(_)) => conversation(v, "prompt").map(Some),
        Some(_) => bail("`prompt` must be a string or a list of messages"),
    }
}

/// A chosen/rejected side, in TRL's preference forms: with `prompt` (explicit form) the side is
/// the answer — a string is one assistant turn, a list the turns that follow the prompt — and is
/// scored after the prompt; without it (implicit form) the side is a list holding the whole
/// conversation. A list that already starts with the prompt's messages (as in
/// UltraFeedback-binarized, which has both) is taken as the whole conversation rather than
/// repeating the prompt.
fn pair_side(obj: &Map<String, Value>, prompt: Option<&[Message]>, key: &str) -> Result<Vec<Message>> {
    let answer = match &obj[key] {
        Value::String(s) => vec![Message::assistant(s.as_str())],
        v @ Value::Array(_) => conversation(v, key)?,
        _ => return bail(format!("`{key}` must be a string or a list of messages")),
    };
    match prompt {
        None if obj[key].is_string() => bail(format!("`{key}` is a string: give the `prompt` it answers")),
        None => Ok(answer),
        Some(p) if answer.starts_with(p) => Ok(answer),
        Some(p) => Ok(p.iter().cloned().chain(answer).collect()),
    }
}

/// Understands one input object.
pub fn parse_record(obj: &Map<String, Value>) -> Result<Record> {
    if let Some(c) = obj.get("conversation") {
        return Ok(Record::Single(conversation(c, "conversation")?));
    }
    if obj.contains_key("instruction") || obj.contains_key("response") {
        // distilabel's `instruction`, or `prompt` as in the other forms.
        let key = if obj.contains_key("instruction") || !obj.contains_key("prompt") { "instruction" } else { "prompt" };
        return Ok(Record::Single(prompt_response(str_field(obj, key)?, str_field(obj, "response")?)));
    }
    if let Some(r) = obj.get("responses") {
        let prompt = str_field(obj, "prompt")?;
        let list = r.as_array().ok_or_else(|| RecordError("`responses` must be a list of strings".into()))?;
        if list.is_empty() {
            return bail("`responses` is empty");
        }
        let convs = list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(|s| prompt_response(prompt, s))
                    .ok_or_else(|| RecordError(format!("`responses[{i}]` must be a string")))
            })
            .collect::<Result<_>>()?;
        return Ok(Record::Responses(convs));
    }
    if obj.contains_key("chosen") || obj.contains_key("rejected") {
        if !(obj.contains_key("chosen") && obj.contains_key("rejected")) {
            return bail("a preference pair needs both `chosen` and `rejected`");
        }
        let prompt = prompt_messages(obj)?;
        let prompt = prompt.as_deref();
        return Ok(Record::Pair(pair_side(obj, prompt, "chosen")?, pair_side(obj, prompt, "rejected")?));
    }
    bail(
        "expected one of: `conversation`; `instruction`+`response` (or `prompt`+`response`); `prompt`+`responses`; `prompt`+`chosen`+`rejected`",
    )
}

/// Key-order-independent text of a value, to match input lines with output lines.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&o[*k]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

pub fn input_key(mut obj: Map<String, Value>) -> String {
    for f in ADDED_FIELDS {
        obj.remove(f);
    }
    canonical(&Value::Object(obj))
}

/// An f32 as JSON with its shortest round-trip digits (0.23079002, not 0.23079001903533936).
pub fn num(v: f32) -> Value {
    if !v.is_finite() {
        return Value::Null;
    }
    v.to_string().parse::<f64>().map(Value::from).unwrap_or(Value::Null)
}

pub fn nums(vs: &[f32]) -> Value {
    Value::Array(vs.iter().map(|&v| num(v)).collect())
}

/// Adds the scores of `record` to `obj`.
pub fn annotate(obj: &mut Map<String, Value>, record: &Record, scores: &[ConversationScore], labels: &[String]) {
    let attributes = |s: &ConversationScore| -> Value {
        Value::Object(labels.iter().cloned().zip(s.logits.iter().map(|&v| num(v))).collect())
    };
    let multi = labels.len() > 1;
    let truncated: Vec<usize> = scores.iter().map(|s| s.truncated_tokens).collect();
    match record {
        Record::Single(_) => {
            let s = &scores[0];
            obj.insert("score".into(), num(s.score()));
            if multi {
                obj.insert("attributes".into(), attributes(s));
            }
            if let Some(t) = &s.token_logits {
                obj.insert("token_logits".into(), Value::Array(t.iter().map(|r| nums(r)).collect()));
            }
        }
        Record::Responses(_) => {
            let values: Vec<f32> = scores.iter().map(ConversationScore::score).collect();
            obj.insert("scores".into(), nums(&values));
            obj.insert("ranking".into(), serde_json::to_value(ranking(&values)).expect("ints serialize"));
            if multi {
                obj.insert("attributes".into(), Value::Array(scores.iter().map(attributes).collect()));
            }
        }
        Record::Pair(..) => {
            let (c, r) = (&scores[0], &scores[1]);
            obj.insert("chosen_score".into(), num(c.score()));
            obj.insert("rejected_score".into(), num(r.score()));
            obj.insert("correct".into(), (c.score() > r.score()).into());
            obj.insert("preference_probability".into(), num(preference_probability(c.score(), r.score())));
            if multi {
                obj.insert("chosen_attributes".into(), attributes(c));
                obj.insert("rejected_attributes".into(), attributes(r));
            }
        }
    }
    if truncated.iter().any(|&t| t > 0) {
        let v = if truncated.len() == 1 {
            Value::from(truncated[0])
        } else {
            serde_json::to_value(&truncated).expect("ints")
        };
        obj.insert("truncated_tokens".into(), v);
    }
}

/// What step scoring adds to a record's output: `steps` and `step_scores` (and `first_bad_step`,
/// the first step below `threshold`, or null) — plain for one sequence, one list per sequence
/// for responses and pairs.
pub fn annotate_steps(obj: &mut Map<String, Value>, record: &Record, steps: &[crate::prm::StepScores], threshold: f32) {
    let texts =
        |s: &crate::prm::StepScores| Value::Array(s.steps.iter().map(|t| Value::from(t.text.clone())).collect());
    let first = |s: &crate::prm::StepScores| s.first_below(threshold).map_or(Value::Null, Value::from);
    let convention = steps.first().map_or("", |s| s.convention);
    obj.insert("step_convention".into(), convention.into());
    if let Record::Single(_) = record {
        obj.insert("steps".into(), texts(&steps[0]));
        obj.insert("step_scores".into(), nums(&steps[0].scores));
        obj.insert("first_bad_step".into(), first(&steps[0]));
    } else {
        obj.insert("steps".into(), Value::Array(steps.iter().map(texts).collect()));
        obj.insert("step_scores".into(), Value::Array(steps.iter().map(|s| nums(&s.scores)).collect()));
        obj.insert("first_bad_step".into(), Value::Array(steps.iter().map(first).collect()));
    }
}

/// What `--token-scores` adds: `tokens` (each token's text) and `token_scores`, per sequence
/// as for steps.
pub fn annotate_tokens(obj: &mut Map<String, Value>, record: &Record, tokens: &[(Vec<String>, Vec<f32>)]) {
    let texts = |t: &[String]| Value::Array(t.iter().map(|s| Value::from(s.clone())).collect());
    if let Record::Single(_) = record {
        obj.insert("tokens".into(), texts(&tokens[0].0));
        obj.insert("token_scores".into(), nums(&tokens[0].1));
    } else {
        obj.insert("tokens".into(), Value::Array(tokens.iter().map(|t| texts(&t.0)).collect()));
        obj.insert("token_scores".into(), Value::Array(tokens.iter().map(|t| nums(&t.1)).collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prm::StepScores;
    use rewardlens_core::steps::Step;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn pair(v: Value) -> (Vec<Message>, Vec<Message>) {
        match parse_record(&obj(v)).unwrap() {
            Record::Pair(c, r) => (c, r),
            _ => panic!("not a pair"),
        }
    }

    #[test]
    fn every_preference_form_scores_prompt_and_answer() {
        let full = |a: &str| prompt_response("q", a);
        let user = json!([{"role": "user", "content": "q"}]);
        let said = |a: &str| json!([{"role": "assistant", "content": a}]);
        let implicit = |a: &str| json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]);
        for line in [
            json!({"prompt": "q", "chosen": "a", "rejected": "b"}),
            json!({"prompt": "q", "chosen": said("a"), "rejected": said("b")}),
            json!({"prompt": user, "chosen": "a", "rejected": "b"}),
            json!({"prompt": user, "chosen": said("a"), "rejected": said("b")}),
            json!({"chosen": implicit("a"), "rejected": implicit("b")}),
            // Both a prompt and whole conversations (UltraFeedback-binarized): not repeated.
            json!({"prompt": "q", "chosen": implicit("a"), "rejected": implicit("b")}),
            json!({"prompt": user, "chosen": implicit("a"), "rejected": said("b")}),
        ] {
            assert_eq!(pair(line.clone()), (full("a"), full("b")), "{line}");
        }
        let err = |v: Value| parse_record(&obj(v)).err().unwrap().0;
        assert!(err(json!({"chosen": "a", "rejected": "b"})).contains("give the `prompt`"));
        assert!(err(json!({"prompt": 3, "chosen": "a", "rejected": "b"})).contains("`prompt` must be"));
        assert!(err(json!({"prompt": [], "chosen": "a", "rejected": "b"})).contains("`prompt` has no messages"));
    }

    #[test]
    fn every_added_field_is_in_the_shared_list() {
        let s = |t: usize| ConversationScore {
            logits: vec![0.5, 1.0],
            token_logits: Some(vec![vec![0.1, 0.2]]),
            tokens: 3,
            truncated_tokens: t,
        };
        let labels = vec!["a".to_string(), "b".to_string()];
        let steps = StepScores {
            convention: "qwen",
            steps: vec![Step { text: "x".into(), start: 0, end: 1 }],
            scores: vec![0.2],
        };
        let conv = prompt_response("q", "a");
        for record in [
            Record::Single(conv.clone()),
            Record::Responses(vec![conv.clone(), conv.clone()]),
            Record::Pair(conv.clone(), conv.clone()),
        ] {
            let n = record.conversations().len();
            let mut o = Map::new();
            annotate(&mut o, &record, &vec![s(1); n], &labels);
            annotate_steps(&mut o, &record, &vec![steps.clone(); n], 0.5);
            annotate_tokens(&mut o, &record, &vec![(vec!["t".to_string()], vec![0.1]); n]);
            for k in o.keys() {
                assert!(ADDED_FIELDS.contains(&k.as_str()), "`{k}` is written but not in ADDED_FIELDS");
            }
            let mut input = obj(json!({"prompt": "q", "response": "a"}));
            let key = input_key(input.clone());
            input.extend(o);
            assert_eq!(input_key(input), key, "a scored line matches its input");
        }
    }
}
