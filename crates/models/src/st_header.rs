//! A bounds-checked reader for safetensors headers (8-byte length, JSON directory, data), used
//! where tensors are streamed one at a time with positioned reads instead of memory-mapping
//! the whole file (the quantizer), and fuzzed with the GGUF parser.

use crate::{ModelError, Result};
use candle_core::DType;

/// Largest header we accept; real ones are a few MB at most.
const MAX_HEADER: u64 = 100 << 20;

/// One tensor's entry in a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct StTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::Weights(format!("safetensors: {}", msg.into()))
}

fn dtype(s: &str) -> Option<(DType, usize)> {
    Some(match s {
        "F32" => (DType::F32, 4),
        "F16" => (DType::F16, 2),
        "BF16" => (DType::BF16, 2),
        "F64" => (DType::F64, 8),
        "U8" => (DType::U8, 1),
        "U32" => (DType::U32, 4),
        "I64" => (DType::I64, 8),
        _ => return None,
    })
}

/// How many bytes the header occupies (8 + its JSON length), from the first 8 bytes.
pub fn header_len(first8: &[u8], file_len: u64) -> Result<u64> {
    let n = u64::from_le_bytes(first8.get(..8).ok_or_else(|| bad("file shorter than 8 bytes"))?.try_into().unwrap());
    if n > MAX_HEADER || n.saturating_add(8) > file_len {
        return Err(bad(format!("header length {n} does not fit a {file_len}-byte file")));
    }
    Ok(8 + n)
}

/// Parses the JSON directory (`header` = the bytes after the 8-byte length), checking every
/// tensor's range against `file_len` and its size against its dtype and shape.
pub fn parse_header(header: &[u8], file_len: u64) -> Result<Vec<StTensor>> {
    let data_start = 8 + header.len() as u64;
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let mut out = Vec::with_capacity(v.len());
    for (name, entry) in v {
        if name == "__metadata__" {
            continue;
        }
        let get = |k: &str| entry.get(k).ok_or_else(|| bad(format!("tensor `{name}` has no `{k}`")));
        let ds = get("dtype")?.as_str().ok_or_else(|| bad(format!("tensor `{name}`: dtype is not a string")))?;
        let (dt, width) = dtype(ds).ok_or_else(|| bad(format!("tensor `{name}`: dtype {ds} is not supported")))?;
        let shape: Vec<usize> = serde_json::from_value(get("shape")?.clone())
            .map_err(|_| bad(format!("tensor `{name}`: shape is not a list of sizes")))?;
        let offs: [u64; 2] = serde_json::from_value(get("data_offsets")?.clone())
            .map_err(|_| bad(format!("tensor `{name}`: data_offsets is not [start, end]")))?;
        let bytes = shape
            .iter()
            .try_fold(width as u64, |a, &d| a.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("tensor `{name}`: size overflows")))?;
        if offs[1] < offs[0] || offs[1] - offs[0] != bytes {
            return Err(bad(format!(
                "tensor `{name}`: {} bytes in data_offsets, {bytes} by shape and dtype",
                offs[1].wrapping_sub(offs[0])
            )));
        }
        let (Some(start), Some(end)) = (data_start.checked_add(offs[0]), data_start.checked_add(offs[1])) else {
            return Err(bad(format!("tensor `{name}`: data_offsets {offs:?} overflow")));
        };
        if end > file_len {
            return Err(bad(format!(
                "tensor `{name}` ends at byte {end}, past the end of the file ({file_len}): truncated?"
            )));
        }
        out.push(StTensor { name, dtype: dt, shape, start, end });
    }
    out.sort_by_key(|t| t.start);
    Ok(out)
}

/// Reads and parses the directory of a safetensors file given random access to it.
pub fn read_directory(src: &dyn crate::gguf::ByteSource) -> Result<Vec<StTensor>> {
    let len = src.len();
    let mut first = [0u8; 8];
    src.read_at(0, &mut first).map_err(|_| bad("file shorter than 8 bytes"))?;
    let hlen = header_len(&first, len)?;
    let mut header = vec![0u8; (hlen - 8) as usize];
    src.read_at(8, &mut header).map_err(|e| bad(format!("reading the header: {e}")))?;
    parse_header(&header, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_ranges() {
        let h = br#"{"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"__metadata__":{"format":"pt"}}"#;
        let t = parse_header(h, 8 + h.len() as u64 + 12).unwrap();
        assert_eq!(t[0].shape, vec![2, 3]);
        assert_eq!(t[0].start, 8 + h.len() as u64);
        assert!(parse_header(h, 8 + h.len() as u64 + 11).unwrap_err().to_string().contains("truncated"));
        let wrong = br#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}}"#;
        assert!(parse_header(wrong, 1000).unwrap_err().to_string().contains("by shape"));
        let huge = br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,12]}}"#;
        assert!(parse_header(huge, 1000).is_err());
        assert!(header_len(&u64::MAX.to_le_bytes(), 100).is_err());
    }

    #[test]
    fn offsets_near_the_top_of_u64_are_refused_as_overflow() {
        let h = format!(r#"{{"a":{{"dtype":"F32","shape":[3],"data_offsets":[{},{}]}}}}"#, u64::MAX - 12, u64::MAX);
        let err = parse_header(h.as_bytes(), 1000).unwrap_err().to_string();
        assert!(err.contains("overflow"), "{err}");
    }
}
