//! The JSONL record forms shared by every front end (CLI batch files, the browser's batch
//! scoring, the JS API): what a line asks for, and the fields its scores add.

use crate::ConversationScore;
use rewardlens_core::types::prompt_response;
use rewardlens_core::{preference_probability, ranking, Message};
use serde_json::{Map, Value};
use std::fmt;

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
pub const ADDED_FIELDS: [&str; 25] = [
    // annotate
    "score",
    "attributes",
    "token_logits",
    "scores",
    "ranking",
    "chosen_score",
    "rejected_score",
    "chosen_scores",
    "rejected_scores",
    "chosen_attributes",
    "rejected_attributes",
    "correct",
    "margin_met",
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
    // which of several endpoints scored it
    SCORED_BY_FIELD,
];

/// The steps of a line could not be scored; its scores stay.
pub const STEP_ERROR_FIELD: &str = "step_error";
/// The line could not be scored (alone, after its batch failed); it has no scores.
pub const ERROR_FIELD: &str = "error";
/// The model, revision and options that scored the line.
pub const SCORED_WITH_FIELD: &str = "scored_with";
/// The endpoint (of several) that scored the line.
pub const SCORED_BY_FIELD: &str = "scored_by";

/// One input line, understood.
pub enum Record {
    /// `conversation` or `instruction`/`response`: one sequence.
    Single(Vec<Message>),
    /// `prompt`/`responses`: one sequence per response.
    Responses(Vec<Vec<Message>>),
    /// `chosen`/`rejected`: one sequence per answer, the chosen ones first.
    Preference(Preference),
}

impl Record {
    pub fn conversations(&self) -> Vec<&[Message]> {
        match self {
            Record::Single(c) => vec![c],
            Record::Responses(cs) => cs.iter().map(|c| c.as_slice()).collect(),
            Record::Preference(p) => p.chosen.iter().chain(&p.rejected).map(|c| c.as_slice()).collect(),
        }
    }
}

/// A preference record: TRL's pair (one answer a side), or several answers on a side
/// (RewardBench 2's best-of-4, RM-Bench), each answer a whole sequence to score.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    pub chosen: Vec<Vec<Message>>,
    pub rejected: Vec<Vec<Message>>,
    /// TRL's `margin` column: by how much chosen should score above rejected.
    pub margin: Option<f64>,
    /// A side was given as a list of answers: the output then has a list of scores per side
    /// (`chosen_scores`, `rejected_scores`) instead of TRL's `chosen_score`/`rejected_score`.
    pub lists: bool,
}

impl Preference {
    /// TRL's pair: one chosen and one rejected answer, no margin.
    pub fn pair(chosen: Vec<Message>, rejected: Vec<Message>) -> Self {
        Self { chosen: vec![chosen], rejected: vec![rejected], margin: None, lists: false }
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

/// One answer of a preference side (`name` is the field, or the field and index), in TRL's
/// forms: with `prompt` (explicit form) the answer — a string is one assistant turn, a list the
/// turns that follow the prompt — is scored after the prompt; without it (implicit form) the
/// answer is a list holding the whole conversation. A list that already starts with the
/// prompt's messages (as in UltraFeedback-binarized, which has both) is taken as the whole
/// conversation rather than repeating the prompt.
fn preference_answer(v: &Value, prompt: Option<&[Message]>, name: &str) -> Result<Vec<Message>> {
    let answer = match v {
        Value::String(_) if prompt.is_none() => {
            return bail(format!("`{name}` is a string: give the `prompt` it answers"))
        }
        Value::String(s) => vec![Message::assistant(s.as_str())],
        Value::Array(_) => conversation(v, name)?,
        _ => return bail(format!("`{name}` must be a string or a list of messages")),
    };
    match prompt {
        Some(p) if !answer.starts_with(p) => Ok(p.iter().cloned().chain(answer).collect()),
        _ => Ok(answer),
    }
}

/// A preference side: one answer, or a list of several. A list is read by its first element:
/// a message object makes the list one answer's messages (TRL's conversational form); a string
/// or a list makes it several answers, each a string or a list of messages. Returns the answers
/// and whether the side was a list of answers.
fn preference_side(
    obj: &Map<String, Value>,
    prompt: Option<&[Message]>,
    key: &str,
) -> Result<(Vec<Vec<Message>>, bool)> {
    match &obj[key] {
        Value::Array(items) if items.is_empty() => {
            bail(format!("`{key}` is empty: give an answer or a list of answers"))
        }
        Value::Array(items) if !items[0].is_object() => {
            let answers = items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let name = format!("{key}[{i}]");
                    match v {
                        Value::String(_) | Value::Array(_) => preference_answer(v, prompt, &name),
                        _ => bail(format!("`{name}` must be a string or a list of messages")),
                    }
                })
                .collect::<Result<_>>()?;
            Ok((answers, true))
        }
        v => Ok((vec![preference_answer(v, prompt, key)?], false)),
    }
}

/// TRL's `margin` column, when present: a finite number.
fn margin(obj: &Map<String, Value>) -> Result<Option<f64>> {
    match obj.get("margin") {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(m) if m.is_finite() => Ok(Some(m)),
            _ => bail(format!("`margin` must be a finite number, not {v}")),
        },
    }
}

/// A response of the `responses` form: its text, or a message object with its own images
/// (`{"content": "...", "images": [...]}`; an image generator's answer may be images alone).
fn response(v: &Value, name: &str) -> Result<Message> {
    match v {
        Value::String(s) => Ok(Message::assistant(s.as_str())),
        Value::Object(o) => {
            let content = match o.get("content") {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return bail(format!("`{name}.content` must be a string")),
            };
            let mut m = Message::assistant(content);
            m.images = images(o.get("images"), &format!("{name}.images"))?;
            if m.content.is_empty() && m.images.is_empty() {
                return bail(format!("`{name}` has neither `content` nor `images`"));
            }
            Ok(m)
        }
        _ => bail(format!("`{name}` must be a string or a {{\"content\", \"images\"}} object")),
    }
}

/// A list of image references (file paths, URLs, data URLs).
fn images(v: Option<&Value>, name: &str) -> Result<Vec<String>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let list = v.as_array().ok_or_else(|| RecordError(format!("`{name}` must be a list of image paths or URLs")))?;
    list.iter()
        .enumerate()
        .map(|(i, x)| match x.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
            _ => bail(format!("`{name}[{i}]` must be an image path, URL or data URL")),
        })
        .collect()
}

/// Understands one input object. A top-level `images` list goes with the prompt: it is put on
/// the first user message of every conversation the line stands for.
pub fn parse_record(obj: &Map<String, Value>) -> Result<Record> {
    let mut record = parse_record_text(obj)?;
    let prompt_images = images(obj.get("images"), "images")?;
    if !prompt_images.is_empty() {
        let conversations: Vec<&mut Vec<Message>> = match &mut record {
            Record::Single(c) => vec![c],
            Record::Responses(cs) => cs.iter_mut().collect(),
            Record::Preference(p) => p.chosen.iter_mut().chain(p.rejected.iter_mut()).collect(),
        };
        for c in conversations {
            let user = c.iter_mut().find(|m| m.role == rewardlens_core::Role::User).ok_or_else(|| {
                RecordError("`images` go with the prompt, but a conversation has no user message".into())
            })?;
            user.images.splice(0..0, prompt_images.iter().cloned());
        }
    }
    Ok(record)
}

fn parse_record_text(obj: &Map<String, Value>) -> Result<Record> {
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
            .map(|(i, v)| response(v, &format!("responses[{i}]")).map(|r| vec![Message::user(prompt), r]))
            .collect::<Result<_>>()?;
        return Ok(Record::Responses(convs));
    }
    if obj.contains_key("chosen") || obj.contains_key("rejected") {
        if !(obj.contains_key("chosen") && obj.contains_key("rejected")) {
            return bail("a preference pair needs both `chosen` and `rejected`");
        }
        let prompt = prompt_messages(obj)?;
        let prompt = prompt.as_deref();
        let (chosen, chosen_list) = preference_side(obj, prompt, "chosen")?;
        let (rejected, rejected_list) = preference_side(obj, prompt, "rejected")?;
        let margin = margin(obj)?;
        return Ok(Record::Preference(Preference { chosen, rejected, margin, lists: chosen_list || rejected_list }));
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

/// A preference record's rewards, split into its sides.
struct PreferenceRewards {
    chosen: Vec<f32>,
    rejected: Vec<f32>,
}

impl PreferenceRewards {
    /// `scores` in `Record::conversations` order: the chosen answers, then the rejected ones.
    fn new(p: &Preference, scores: &[ConversationScore]) -> Self {
        let (chosen, rejected) = scores.split_at(p.chosen.len());
        Self {
            chosen: chosen.iter().map(ConversationScore::score).collect(),
            rejected: rejected.iter().map(ConversationScore::score).collect(),
        }
    }

    /// RewardBench's strict rule (RewardBench 2's best-of-4 too): every chosen answer scores
    /// strictly above every rejected one; a tie or a NaN is not correct. For one answer a side
    /// this is TRL's `chosen > rejected`.
    fn correct(&self) -> bool {
        self.chosen.iter().all(|c| self.rejected.iter().all(|r| c > r))
    }

    /// The narrowest chosen − rejected difference: min(chosen) − max(rejected), which is
    /// chosen − rejected for one answer a side; in f64, so comparing it with a margin does
    /// not round. NaN when any reward is NaN.
    fn gap(&self) -> f64 {
        let all = || self.chosen.iter().chain(&self.rejected).map(|&s| f64::from(s));
        if all().any(f64::is_nan) {
            return f64::NAN;
        }
        let lowest_chosen = self.chosen.iter().map(|&s| f64::from(s)).fold(f64::INFINITY, f64::min);
        let highest_rejected = self.rejected.iter().map(|&s| f64::from(s)).fold(f64::NEG_INFINITY, f64::max);
        lowest_chosen - highest_rejected
    }

    /// `margin_met`: min(chosen) − max(rejected) ≥ `margin`, i.e. every chosen answer beats
    /// every rejected one by at least the margin — for a pair, the reward difference is past
    /// the midpoint of TRL's loss −log σ(chosen − rejected − margin). False when a reward is NaN.
    fn margin_met(&self, margin: f64) -> bool {
        self.gap() >= margin
    }
}

/// Adds the scores of `record` to `obj`.
///
/// A preference record with one answer a side gets TRL's fields: `chosen_score`,
/// `rejected_score`, `correct` (chosen > rejected), `preference_probability`
/// (sigmoid(chosen − rejected)). With a list on either side it gets `chosen_scores` and
/// `rejected_scores` (input order) and `correct`: every chosen answer strictly above every
/// rejected one. Either form adds, when the line has a `margin`, `margin_met`:
/// min(chosen) − max(rejected) ≥ margin.
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
        Record::Preference(p) => {
            let rewards = PreferenceRewards::new(p, scores);
            let (chosen, rejected) = scores.split_at(p.chosen.len());
            if p.lists {
                obj.insert("chosen_scores".into(), nums(&rewards.chosen));
                obj.insert("rejected_scores".into(), nums(&rewards.rejected));
                obj.insert("correct".into(), rewards.correct().into());
                if let Some(m) = p.margin {
                    obj.insert("margin_met".into(), rewards.margin_met(m).into());
                }
                if multi {
                    obj.insert("chosen_attributes".into(), Value::Array(chosen.iter().map(attributes).collect()));
                    obj.insert("rejected_attributes".into(), Value::Array(rejected.iter().map(attributes).collect()));
                }
            } else {
                let (c, r) = (&chosen[0], &rejected[0]);
                obj.insert("chosen_score".into(), num(c.score()));
                obj.insert("rejected_score".into(), num(r.score()));
                obj.insert("correct".into(), rewards.correct().into());
                if let Some(m) = p.margin {
                    obj.insert("margin_met".into(), rewards.margin_met(m).into());
                }
                obj.insert("preference_probability".into(), num(preference_probability(c.score(), r.score())));
                if multi {
                    obj.insert("chosen_attributes".into(), attributes(c));
                    obj.insert("rejected_attributes".into(), attributes(r));
                }
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

/// TRL's reward-model figures over the preference records of a run: accuracy (records whose
/// `correct` holds), mean margin (each record's min(chosen) − max(rejected): chosen − rejected
/// for a pair) and the lowest, mean and highest reward over every answer scored. Front ends
/// `add` each scored record and print the line (`Display`) when `records` > 0.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceSummary {
    records: usize,
    correct: usize,
    gap_sum: f64,
    answers: usize,
    reward_sum: f64,
    reward_min: f64,
    reward_max: f64,
}

impl Default for PreferenceSummary {
    fn default() -> Self {
        Self {
            records: 0,
            correct: 0,
            gap_sum: 0.0,
            answers: 0,
            reward_sum: 0.0,
            reward_min: f64::INFINITY,
            reward_max: f64::NEG_INFINITY,
        }
    }
}

impl PreferenceSummary {
    /// Counts `record` with its `scores` (in `Record::conversations` order); other records
    /// than preferences are left out.
    pub fn add(&mut self, record: &Record, scores: &[ConversationScore]) {
        let Record::Preference(p) = record else { return };
        let rewards = PreferenceRewards::new(p, scores);
        self.records += 1;
        self.correct += usize::from(rewards.correct());
        self.gap_sum += rewards.gap();
        for r in rewards.chosen.iter().chain(&rewards.rejected).map(|&r| f64::from(r)) {
            self.answers += 1;
            self.reward_sum += r;
            self.reward_min = self.reward_min.min(r);
            self.reward_max = self.reward_max.max(r);
        }
    }

    /// Preference records added.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Records whose `correct` holds.
    pub fn correct(&self) -> usize {
        self.correct
    }

    /// Correct records / records (NaN before any record).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.records as f64
    }

    /// The mean of each record's min(chosen) − max(rejected) (NaN before any record).
    pub fn mean_margin(&self) -> f64 {
        self.gap_sum / self.records as f64
    }

    /// The lowest, mean and highest reward over every answer scored (None before any).
    pub fn rewards(&self) -> Option<(f64, f64, f64)> {
        (self.answers > 0).then(|| (self.reward_min, self.reward_sum / self.answers as f64, self.reward_max))
    }
}

impl fmt::Display for PreferenceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pair accuracy {}/{} = {:.1}%, mean margin {:.4}",
            self.correct,
            self.records,
            100.0 * self.accuracy(),
            self.mean_margin()
        )?;
        if let Some((min, mean, max)) = self.rewards() {
            write!(f, ", reward min/mean/max {min:.4}/{mean:.4}/{max:.4}")?;
        }
        Ok(())
    }
}

/// What step scoring adds to a record's output: `steps` and `step_scores` (and `first_bad_step`,
/// the first step below `threshold`, or null) — plain for one sequence, one list per sequence
/// for responses and preferences.
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

    fn preference(v: Value) -> Preference {
        match parse_record(&obj(v)).unwrap() {
            Record::Preference(p) => p,
            _ => panic!("not a preference"),
        }
    }

    fn pair(v: Value) -> (Vec<Message>, Vec<Message>) {
        let p = preference(v);
        assert!(!p.lists && p.chosen.len() == 1 && p.rejected.len() == 1, "one answer a side");
        (p.chosen[0].clone(), p.rejected[0].clone())
    }

    fn err(v: Value) -> String {
        parse_record(&obj(v)).err().unwrap().0
    }

    /// Sequence scores with these label values (the first is the reward).
    fn scores<const N: usize>(logits: &[[f32; N]]) -> Vec<ConversationScore> {
        logits
            .iter()
            .map(|l| ConversationScore { logits: l.to_vec(), token_logits: None, tokens: 3, truncated_tokens: 0 })
            .collect()
    }

    /// `line` annotated with `logits`, one row per answer.
    fn annotated<const N: usize>(line: Value, logits: &[[f32; N]], labels: &[&str]) -> Map<String, Value> {
        let record = parse_record(&obj(line.clone())).unwrap();
        let mut o = obj(line);
        annotate(&mut o, &record, &scores(logits), &labels.iter().map(|l| l.to_string()).collect::<Vec<_>>());
        o
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
        assert!(err(json!({"chosen": "a", "rejected": "b"})).contains("give the `prompt`"));
        assert!(err(json!({"prompt": 3, "chosen": "a", "rejected": "b"})).contains("`prompt` must be"));
        assert!(err(json!({"prompt": [], "chosen": "a", "rejected": "b"})).contains("`prompt` has no messages"));
    }

    #[test]
    fn a_list_of_strings_or_of_message_lists_is_several_answers() {
        let full = |a: &str| prompt_response("q", a);
        let user = json!([{"role": "user", "content": "q"}]);
        let said = |a: &str| json!([{"role": "assistant", "content": a}]);
        let implicit = |a: &str| json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]);
        let (ab, c) = (vec![full("a"), full("b")], vec![full("c")]);
        for line in [
            json!({"prompt": "q", "chosen": ["a", "b"], "rejected": ["c"]}),
            json!({"prompt": user, "chosen": [said("a"), said("b")], "rejected": "c"}),
            json!({"prompt": "q", "chosen": ["a", said("b")], "rejected": said("c")}),
            json!({"chosen": [implicit("a"), implicit("b")], "rejected": [implicit("c")]}),
            json!({"prompt": "q", "chosen": [implicit("a"), said("b")], "rejected": [implicit("c")]}),
        ] {
            let p = preference(line.clone());
            assert_eq!((p.chosen, p.rejected, p.lists), (ab.clone(), c.clone(), true), "{line}");
        }
        // A list of messages is one answer (TRL's conversational form), however many turns.
        let turns = json!([
            {"role": "assistant", "content": "a"}, {"role": "user", "content": "and?"}, {"role": "assistant", "content": "b"}
        ]);
        let p = preference(json!({"prompt": "q", "chosen": turns, "rejected": "c"}));
        assert_eq!((p.chosen.len(), p.chosen[0].len(), p.lists), (1, 4, false));
        // One answer in a list is still a list: the output follows the input's shape.
        assert!(preference(json!({"prompt": "q", "chosen": ["a"], "rejected": "c"})).lists);
    }

    #[test]
    fn bad_preference_shapes_name_the_field_and_index() {
        for (line, expected) in [
            (
                json!({"prompt": "q", "chosen": ["a", 3], "rejected": "c"}),
                "`chosen[1]` must be a string or a list of messages",
            ),
            (
                json!({"prompt": "q", "chosen": ["a", {"role": "assistant", "content": "b"}], "rejected": "c"}),
                "`chosen[1]` must be a string or a list of messages",
            ),
            (json!({"prompt": "q", "chosen": 3, "rejected": "c"}), "`chosen` must be a string or a list of messages"),
            (
                json!({"prompt": "q", "chosen": "a", "rejected": []}),
                "`rejected` is empty: give an answer or a list of answers",
            ),
            (json!({"prompt": "q", "chosen": "a", "rejected": ["b", []]}), "`rejected[1]` has no messages"),
            (
                json!({"chosen": [[{"role": "user", "content": "q"}]], "rejected": ["c"]}),
                "`rejected[0]` is a string: give the `prompt` it answers",
            ),
            (
                json!({"prompt": "q", "chosen": "a", "rejected": "c", "margin": "1"}),
                "`margin` must be a finite number, not \"1\"",
            ),
            (
                json!({"prompt": "q", "chosen": "a", "rejected": "c", "margin": null}),
                "`margin` must be a finite number, not null",
            ),
        ] {
            assert_eq!(err(line.clone()), expected, "{line}");
        }
        let bad_message = err(json!({"prompt": "q", "chosen": [[{"role": 3}]], "rejected": "c"}));
        assert!(
            bad_message.starts_with("`chosen[0]` must be a list of {\"role\", \"content\"} messages"),
            "{bad_message}"
        );
        assert_eq!(preference(json!({"prompt": "q", "chosen": "a", "rejected": "c", "margin": 0.5})).margin, Some(0.5));
        assert_eq!(
            preference(json!({"prompt": "q", "chosen": ["a"], "rejected": "c", "margin": -2})).margin,
            Some(-2.0)
        );
    }

    #[test]
    fn images_go_with_the_prompt_or_with_a_response() {
        let convs = |v: Value| -> Vec<Vec<Message>> {
            parse_record(&obj(v)).unwrap().conversations().into_iter().map(<[Message]>::to_vec).collect()
        };
        // Top level: on the first user message of every conversation, before its own images.
        let c = convs(
            json!({"prompt": "q", "responses": ["a", {"content": "b", "images": ["gen.png"]}], "images": ["x.png"]}),
        );
        assert_eq!(c[0][0].images, ["x.png"]);
        assert_eq!(
            (c[1][0].images.as_slice(), c[1][1].images.as_slice()),
            (&["x.png".to_owned()][..], &["gen.png".to_owned()][..])
        );
        assert!(c[0][1].images.is_empty());
        let c = convs(json!({"images": ["x.png"], "conversation": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "q", "images": ["own.jpg"]}, {"role": "assistant", "content": "a"}]}));
        assert_eq!(c[0][1].images, ["x.png", "own.jpg"]);
        let c = convs(json!({"prompt": "q", "chosen": "a", "rejected": "b", "images": ["data:image/png;base64,AA=="]}));
        assert!(c.iter().all(|c| c[0].images.len() == 1 && c[1].images.is_empty()));
        // An answer of images alone (an image generator's).
        let c = convs(json!({"prompt": "draw a cat", "responses": [{"images": ["a.png"]}]}));
        assert_eq!((c[0][1].content.as_str(), c[0][1].images.len()), ("", 1));
        for (line, expected) in [
            (
                json!({"prompt": "q", "responses": ["a"], "images": "x.png"}),
                "`images` must be a list of image paths or URLs",
            ),
            (
                json!({"prompt": "q", "responses": ["a"], "images": [""]}),
                "`images[0]` must be an image path, URL or data URL",
            ),
            (
                json!({"prompt": "q", "responses": ["a", {"content": "b", "images": [1]}]}),
                "`responses[1].images[0]` must be an image path, URL or data URL",
            ),
            (json!({"prompt": "q", "responses": [{}]}), "`responses[0]` has neither `content` nor `images`"),
            (
                json!({"prompt": "q", "responses": [3]}),
                "`responses[0]` must be a string or a {\"content\", \"images\"} object",
            ),
            (
                json!({"conversation": [{"role": "assistant", "content": "a"}], "images": ["x.png"]}),
                "`images` go with the prompt, but a conversation has no user message",
            ),
        ] {
            assert_eq!(err(line.clone()), expected, "{line}");
        }
    }

    #[test]
    fn a_list_record_gets_scores_per_side_and_the_strict_verdict() {
        let o = annotated(
            json!({"prompt": "q", "chosen": ["a", "b"], "rejected": ["c"], "margin": 0.5}),
            &[[2.0, 1.0], [0.5, -1.0], [0.25, 3.0]],
            &["reward", "style"],
        );
        // Both chosen rewards (2, 0.5) are above the rejected 0.25: correct; but the narrowest
        // gap, 0.5 − 0.25 = 0.25, falls short of the margin 0.5.
        let expected = json!({
            "prompt": "q", "chosen": ["a", "b"], "rejected": ["c"], "margin": 0.5,
            "chosen_scores": [2.0, 0.5], "rejected_scores": [0.25], "correct": true, "margin_met": false,
            "chosen_attributes": [{"reward": 2.0, "style": 1.0}, {"reward": 0.5, "style": -1.0}],
            "rejected_attributes": [{"reward": 0.25, "style": 3.0}],
        });
        assert_eq!(Value::Object(o), expected);

        // A chosen answer tied with a rejected one is not correct (strictly above), while the
        // gap 0.25 − 0.25 = 0 meets a margin of 0 (at least).
        let o = annotated(
            json!({"prompt": "q", "chosen": ["a", "b"], "rejected": ["c", "d"], "margin": 0}),
            &[[1.0], [0.25], [0.25], [-3.0]],
            &["reward"],
        );
        assert_eq!(o["chosen_scores"], json!([1.0, 0.25]));
        assert_eq!(o["rejected_scores"], json!([0.25, -3.0]));
        assert_eq!((&o["correct"], &o["margin_met"]), (&json!(false), &json!(true)));
        assert!(!o.contains_key("chosen_attributes") && !o.contains_key("preference_probability"));
    }

    #[test]
    fn a_single_pair_is_annotated_as_before() {
        // The line `rewardlens score` wrote for this pair before lists and margins existed
        // (docs/user/cli.md's example, the qwen3-seq fixture's scores).
        let before = r#"{"prompt":"What is the capital of France?","chosen":"The capital of France is Paris.","rejected":"The capital of France is Berlin.","chosen_score":-0.18969655,"rejected_score":0.13191311,"correct":false,"preference_probability":0.4202835}"#;
        let line = json!({
            "prompt": "What is the capital of France?",
            "chosen": "The capital of France is Paris.",
            "rejected": "The capital of France is Berlin.",
        });
        let rewards = [[-0.18969655], [0.13191311]];
        let o = annotated(line.clone(), &rewards, &["score"]);
        assert_eq!(Value::Object(o), serde_json::from_str::<Value>(before).unwrap());

        // With a margin it adds `margin_met`: -0.18969655 − 0.13191311 ≈ -0.3216, above -0.5
        // and below -0.3.
        let mut with_margin = line;
        with_margin["margin"] = json!(-0.5);
        assert_eq!(annotated(with_margin.clone(), &rewards, &["score"])["margin_met"], json!(true));
        with_margin["margin"] = json!(-0.3);
        let o = annotated(with_margin, &rewards, &["score"]);
        assert_eq!((&o["margin_met"], &o["correct"]), (&json!(false), &json!(false)));
        assert!(!o.contains_key("chosen_scores"));
    }

    #[test]
    fn the_summary_has_trls_figures_over_the_preference_records() {
        fn add(summary: &mut PreferenceSummary, line: Value, rewards: &[[f32; 1]]) {
            summary.add(&parse_record(&obj(line)).unwrap(), &scores(rewards));
        }
        let mut summary = PreferenceSummary::default();
        // Correct; margin 0.75 − (−0.5) = 1.25.
        add(&mut summary, json!({"prompt": "q", "chosen": "a", "rejected": "b"}), &[[0.75], [-0.5]]);
        // Chosen 0.5 is below rejected 1.0: wrong; margin min(2, 0.5) − max(0.25, 1) = −0.5.
        add(
            &mut summary,
            json!({"prompt": "q", "chosen": ["a", "b"], "rejected": ["c", "d"]}),
            &[[2.0], [0.5], [0.25], [1.0]],
        );
        // Correct; margin 1 − max(−1, 0, 0.5) = 0.5.
        add(
            &mut summary,
            json!({"prompt": "q", "chosen": ["a"], "rejected": ["b", "c", "d"]}),
            &[[1.0], [-1.0], [0.0], [0.5]],
        );
        // Not a preference: left out.
        add(&mut summary, json!({"conversation": [{"role": "user", "content": "q"}]}), &[[100.0]]);

        // Accuracy 2/3; mean margin (1.25 − 0.5 + 0.5) / 3 = 1.25 / 3 = 0.41667; the ten
        // rewards sum to 0.25 + 3.75 + 0.5 = 4.5: mean 0.45, lowest −1, highest 2.
        assert_eq!((summary.records(), summary.correct()), (3, 2));
        assert!((summary.accuracy() - 2.0 / 3.0).abs() < 1e-12);
        assert!((summary.mean_margin() - 1.25 / 3.0).abs() < 1e-12);
        assert_eq!(summary.rewards(), Some((-1.0, 0.45, 2.0)));
        assert_eq!(
            summary.to_string(),
            "pair accuracy 2/3 = 66.7%, mean margin 0.4167, reward min/mean/max -1.0000/0.4500/2.0000"
        );
        assert_eq!(PreferenceSummary::default().rewards(), None);
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
        let pair = Preference { margin: Some(0.0), ..Preference::pair(conv.clone(), conv.clone()) };
        let lists =
            Preference { chosen: vec![conv.clone(); 2], rejected: vec![conv.clone()], margin: Some(0.0), lists: true };
        for record in [
            Record::Single(conv.clone()),
            Record::Responses(vec![conv.clone(), conv.clone()]),
            Record::Preference(pair),
            Record::Preference(lists),
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
