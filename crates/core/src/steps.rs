//! Splitting an answer into reasoning steps, with each step's byte range in the answer, so step
//! rewards can be shown against the text they score.

use crate::CoreError;
use serde::{Deserialize, Serialize};

/// Where one step ends and the next begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "by", content = "value")]
pub enum StepSplit {
    /// Paragraphs: one or more blank lines between steps (the default).
    #[default]
    BlankLines,
    /// Every line is a step.
    Lines,
    /// `Step 1:` / `Step 2.` markers (any case) at the start of a line begin a step; text before
    /// the first marker is a step of its own.
    StepMarkers,
    /// A literal separator string.
    Separator(String),
    /// A regular expression matching the separators.
    Regex(String),
}

/// One step: its text (trimmed) and where that text lies in the answer (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

impl StepSplit {
    /// Parses the CLI form: `blank`, `lines`, `markers`, `sep:<text>` or `regex:<pattern>`.
    pub fn parse(spec: &str) -> Result<Self, CoreError> {
        Ok(match spec {
            "blank" => Self::BlankLines,
            "lines" => Self::Lines,
            "markers" => Self::StepMarkers,
            s if s.starts_with("sep:") && s.len() > 4 => Self::Separator(unescape(&s[4..])),
            s if s.starts_with("regex:") && s.len() > 6 => Self::Regex(s[6..].to_owned()),
            other => {
                return Err(CoreError::Input(format!(
                    "unknown step split `{other}`: blank, lines, markers, sep:<text> or regex:<pattern>"
                )))
            }
        })
    }

    /// Splits `answer`; empty steps (only whitespace) are dropped.
    pub fn split(&self, answer: &str) -> Result<Vec<Step>, CoreError> {
        let bad = |e: regex::Error| CoreError::Input(format!("step split pattern: {e}"));
        // Separator ranges: the text between them is the steps.
        let seps: Vec<(usize, usize)> = match self {
            Self::BlankLines => regex::Regex::new(r"\r?\n[ \t]*\r?\n\s*")
                .map_err(bad)?
                .find_iter(answer)
                .map(|m| (m.start(), m.end()))
                .collect(),
            Self::Lines => answer.match_indices('\n').map(|(i, s)| (i, i + s.len())).collect(),
            Self::StepMarkers => regex::Regex::new(r"(?mi)^[ \t]*step\s*\d+\s*[:.]")
                .map_err(bad)?
                .find_iter(answer)
                .filter(|m| m.start() > 0)
                .map(|m| (m.start(), m.start()))
                .collect(),
            Self::Separator(s) if s.is_empty() => return Err(CoreError::Input("empty step separator".into())),
            Self::Separator(s) => answer.match_indices(s.as_str()).map(|(i, m)| (i, i + m.len())).collect(),
            Self::Regex(r) => {
                let re = regex::Regex::new(r).map_err(bad)?;
                re.find_iter(answer).filter(|m| !m.is_empty()).map(|m| (m.start(), m.end())).collect()
            }
        };
        let mut steps = Vec::new();
        let mut from = 0;
        for (s, e) in seps.into_iter().chain(std::iter::once((answer.len(), answer.len()))) {
            push_trimmed(answer, from, s, &mut steps);
            from = e;
        }
        Ok(steps)
    }
}

fn push_trimmed(text: &str, start: usize, end: usize, out: &mut Vec<Step>) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let t = piece.trim();
    if !t.is_empty() {
        out.push(Step { text: t.to_owned(), start: start + lead, end: start + lead + t.len() });
    }
}

/// `\n` and `\t` typed on a command line mean newline and tab.
fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\t", "\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(split: &StepSplit, answer: &str) -> Vec<String> {
        let steps = split.split(answer).unwrap();
        for s in &steps {
            assert_eq!(&answer[s.start..s.end], s.text, "offsets map back to the text");
        }
        steps.into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn every_split_mode() {
        let a = "First we add.\n\n  Then we multiply.\n \n\nDone: 18";
        assert_eq!(texts(&StepSplit::BlankLines, a), ["First we add.", "Then we multiply.", "Done: 18"]);
        assert_eq!(texts(&StepSplit::Lines, "a\nb\n\nc\n"), ["a", "b", "c"]);
        let m = "Let me think.\nStep 1: add 3 and 4.\nstep 2. multiply\nby 2\nStep 10: 14";
        assert_eq!(
            texts(&StepSplit::StepMarkers, m),
            ["Let me think.", "Step 1: add 3 and 4.", "step 2. multiply\nby 2", "Step 10: 14"]
        );
        assert_eq!(texts(&StepSplit::parse("sep:ки").unwrap(), "a ки b ки"), ["a", "b"]);
        assert_eq!(texts(&StepSplit::parse("sep:\\n").unwrap(), "x\ny"), ["x", "y"]);
        assert_eq!(texts(&StepSplit::parse(r"regex:;\s*|\.\s+").unwrap(), "one; two. three"), ["one", "two", "three"]);
        assert_eq!(texts(&StepSplit::BlankLines, "  "), Vec::<String>::new());
        assert_eq!(texts(&StepSplit::BlankLines, "é — ü\n\nñ"), ["é — ü", "ñ"]);
        assert_eq!(texts(&StepSplit::BlankLines, "a\r\n\r\nb\r\nc"), ["a", "b\r\nc"], "Windows line ends");
    }

    #[test]
    fn bad_specs_are_named() {
        assert!(StepSplit::parse("paragraphs").unwrap_err().to_string().contains("paragraphs"));
        let e = StepSplit::Regex("(".into()).split("x").unwrap_err().to_string();
        assert!(e.contains("pattern"), "{e}");
        assert!(StepSplit::Separator(String::new()).split("x").is_err());
    }
}
