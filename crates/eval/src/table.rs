//! A suite's files as published on the Hub, read into JSON rows: Parquet (what `datasets`
//! uploads and what the Hub converts every dataset to), JSON Lines, or one JSON array.
//!
//! Parquet goes through the `parquet` crate's record reader (no Arrow: it would add several
//! crates to every build, the page's included), whose JSON conversion gives lists of strings,
//! nested structs of chat messages and large strings as the values `datasets` gives in Python.

use crate::EvalError;
use serde_json::{Map, Value};

/// One row: column name to value.
pub type JsonRow = Map<String, Value>;

/// A file's format, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    /// `.jsonl`, or `.json` holding one object per line.
    JsonLines,
    /// `.json` holding an array of objects (or an object of column arrays is refused).
    Json,
}

impl FileFormat {
    /// The format a file name says, or None for a file that is not data (README, scripts).
    pub fn of_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".parquet") {
            Some(Self::Parquet)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Some(Self::JsonLines)
        } else if lower.ends_with(".json") {
            Some(Self::Json)
        } else {
            None
        }
    }
}

/// The split a Hub data file belongs to, from its name as `datasets` writes it
/// (`data/test-00000-of-00001.parquet` → `test`, `gsm8k.json` → `gsm8k`).
pub fn split_of_file(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or(name);
    // `datasets` shards: `<split>-00000-of-00003`.
    let bytes = stem.as_bytes();
    if let Some(i) = stem
        .find("-00000")
        .or_else(|| stem.rfind("-of-").and_then(|of| stem[..of].rfind('-')).filter(|&i| bytes[i + 1].is_ascii_digit()))
    {
        return stem[..i].to_owned();
    }
    stem.to_owned()
}

fn file_error(file: &str, message: impl std::fmt::Display) -> EvalError {
    EvalError::File { file: file.to_owned(), message: message.to_string() }
}

/// Reads the rows of one file (`name` gives the format and appears in errors).
pub fn read_rows(name: &str, bytes: Vec<u8>) -> Result<Vec<JsonRow>, EvalError> {
    match FileFormat::of_name(name) {
        Some(FileFormat::Parquet) => parquet_rows(name, bytes),
        Some(FileFormat::JsonLines) => json_lines(name, &bytes),
        Some(FileFormat::Json) => {
            // A `.json` file is either an array of rows or, as many Hub datasets ship, JSON Lines.
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                json_array(name, &bytes)
            } else {
                json_lines(name, &bytes)
            }
        }
        None => Err(file_error(name, "not a data file: give .parquet, .jsonl or .json")),
    }
}

fn parquet_rows(name: &str, bytes: Vec<u8>) -> Result<Vec<JsonRow>, EvalError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    if bytes.len() < 8 || &bytes[bytes.len() - 4..] != b"PAR1" {
        return Err(file_error(name, "not a Parquet file (no PAR1 footer): truncated download?"));
    }
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes))
        .map_err(|e| file_error(name, format!("cannot read Parquet: {e}")))?;
    let rows = reader.get_row_iter(None).map_err(|e| file_error(name, format!("cannot read Parquet: {e}")))?;
    rows.enumerate()
        .map(|(i, row)| {
            let row = row.map_err(|e| file_error(name, format!("cannot decode row {}: {e}", i + 1)))?;
            match row.to_json_value() {
                Value::Object(map) => Ok(map),
                _ => Err(file_error(name, format!("row {} is not a record", i + 1))),
            }
        })
        .collect()
}

fn json_lines(name: &str, bytes: &[u8]) -> Result<Vec<JsonRow>, EvalError> {
    let text = std::str::from_utf8(bytes).map_err(|e| file_error(name, format!("not UTF-8: {e}")))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<JsonRow>(l)
                .map_err(|e| file_error(name, format!("line {} is not a JSON object: {e}", i + 1)))
        })
        .collect()
}

fn json_array(name: &str, bytes: &[u8]) -> Result<Vec<JsonRow>, EvalError> {
    serde_json::from_slice::<Vec<JsonRow>>(bytes)
        .map_err(|e| file_error(name, format!("not a JSON array of row objects: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_from_hub_file_names() {
        assert_eq!(split_of_file("data/test-00000-of-00001.parquet"), "test");
        assert_eq!(split_of_file("data/filtered-00000-of-00001.parquet"), "filtered");
        assert_eq!(split_of_file("data/raw-00002-of-00003.parquet"), "raw");
        assert_eq!(split_of_file("gsm8k.json"), "gsm8k");
        assert_eq!(split_of_file("olympiadbench.jsonl"), "olympiadbench");
        assert_eq!(split_of_file("data/safety-refuse.parquet"), "safety-refuse");
    }

    #[test]
    fn json_files_are_arrays_or_lines() {
        let lines = read_rows("a.json", b"{\"a\": 1}\n\n{\"a\": 2}\n".to_vec()).unwrap();
        let array = read_rows("a.json", b" [{\"a\": 1}, {\"a\": 2}]".to_vec()).unwrap();
        assert_eq!(lines, array);
        let err = read_rows("a.jsonl", b"{\"a\": 1}\n[1]\n".to_vec()).unwrap_err().to_string();
        assert!(err.contains("a.jsonl: line 2 is not a JSON object"), "{err}");
        let err = read_rows("a.parquet", b"{}".to_vec()).unwrap_err().to_string();
        assert!(err.contains("not a Parquet file"), "{err}");
        assert!(read_rows("README.md", vec![]).is_err());
    }
}
