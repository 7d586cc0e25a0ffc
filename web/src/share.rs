//! Deep links. `?model=<repo id or URL>&revision=…` picks the model; the inputs travel in the
//! URL fragment (`#in=…`, deflated JSON in base64url), which browsers never send to a server,
//! so a shared comparison is scored on the opener's machine without its text leaving it.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Largest inflated fragment accepted: a link is not a file transfer.
const MAX_INFLATED: usize = 1 << 20;

/// What a link carries besides the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SharedInputs {
    pub prompt: String,
    pub responses: Vec<String>,
}

pub fn encode_fragment(inputs: &SharedInputs) -> String {
    let json = serde_json::to_vec(inputs).expect("strings serialize");
    let packed = miniz_oxide::deflate::compress_to_vec(&json, 9);
    format!("in={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(packed))
}

/// Reads a fragment (with or without its `#`); `Ok(None)` when it carries no inputs.
pub fn decode_fragment(fragment: &str) -> Result<Option<SharedInputs>, String> {
    let f = fragment.trim_start_matches('#');
    let Some(data) = f.split('&').find_map(|kv| kv.strip_prefix("in=")) else {
        return Ok(None);
    };
    let packed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|e| format!("the link's inputs are not valid base64url: {e}"))?;
    let json = miniz_oxide::inflate::decompress_to_vec_with_limit(&packed, MAX_INFLATED)
        .map_err(|e| format!("the link's inputs cannot be inflated ({e:?}); was it cut short?"))?;
    serde_json::from_slice(&json).map(Some).map_err(|e| format!("the link's inputs are not valid: {e}"))
}

/// Percent-encodes a query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded query value (`+` is a space, as forms write it).
pub fn query_unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `name`'s value in a query string (with or without its `?`).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| query_unescape(v))
}

/// The query part of a link to `model` at `revision`.
pub fn model_query(model: &str, revision: &str) -> String {
    let mut q = format!("?model={}", query_escape(model));
    if !revision.is_empty() && revision != "main" {
        q.push_str(&format!("&revision={}", query_escape(revision)));
    }
    q
}

/// Whether a model named by a link waits for the user's go-ahead before anything downloads:
/// everything except files on the page's own origin (which the site itself serves, as the
/// benchmark links do). A Hub repo or another host's URL is confirmed first.
pub fn linked_model_needs_confirmation(model: &str, page_origin: &str) -> bool {
    let m = model.trim();
    // URL parsers read `\` as `/` and drop tabs and newlines, so `/\evil.example` or
    // `/\t/evil.example` would resolve to another host: such a name is never "our own path".
    if m.chars().any(|c| c == '\\' || c.is_control() || c.is_whitespace()) {
        return true;
    }
    let own_path = (m.starts_with('/') && !m.starts_with("//")) || m.starts_with("./");
    let own_url = !page_origin.is_empty()
        && m.strip_prefix(page_origin.trim_end_matches('/')).is_some_and(|rest| rest.starts_with('/'));
    !(own_path || own_url)
}

/// `?bench=` takes at most this many lengths,
pub const MAX_BENCH_LENGTHS: usize = 16;
/// each at most this many tokens,
pub const MAX_BENCH_TOKENS: usize = 32768;
/// and `?iters=` at most this many timed passes per length.
pub const MAX_BENCH_ITERS: usize = 50;
/// Most sequences a benchmark pass may hold.
pub const MAX_BENCH_BATCH: usize = 16;

/// The benchmark a link asks for (`?bench=128,512&iters=3`), within the limits above: a link
/// cannot keep the engine busy without end.
pub fn bench_request(query: &str) -> Result<Option<(Vec<usize>, usize, usize)>, String> {
    let Some(list) = query_param(query, "bench") else { return Ok(None) };
    let lengths = list
        .split(',')
        .filter(|n| !n.trim().is_empty())
        .map(|n| match n.trim().parse::<usize>() {
            Ok(v) if (1..=MAX_BENCH_TOKENS).contains(&v) => Ok(v),
            _ => Err(format!("?bench= lengths are 1 to {MAX_BENCH_TOKENS} tokens, not `{}`", n.trim())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if lengths.is_empty() || lengths.len() > MAX_BENCH_LENGTHS {
        return Err(format!("?bench= takes 1 to {MAX_BENCH_LENGTHS} lengths, not {}", lengths.len()));
    }
    let iters = match query_param(query, "iters") {
        None => 3,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_BENCH_ITERS).contains(&n) => n,
            _ => return Err(format!("?iters= is 1 to {MAX_BENCH_ITERS}, not `{v}`")),
        },
    };
    let batch = match query_param(query, "batch") {
        None => 1,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_BENCH_BATCH).contains(&n) => n,
            _ => return Err(format!("?batch= is 1 to {MAX_BENCH_BATCH} sequences, not `{v}`")),
        },
    };
    Ok(Some((lengths, iters, batch)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_round_trips_unicode_and_markup() {
        let inputs = SharedInputs {
            prompt: "Résumé of 2+2? <script>alert(1)</script>".into(),
            responses: vec!["4".into(), "five 🖐".into(), String::new()],
        };
        let frag = encode_fragment(&inputs);
        assert!(frag.chars().all(|c| c.is_ascii_alphanumeric() || "=-_".contains(c)), "{frag}");
        assert_eq!(decode_fragment(&format!("#{frag}")).unwrap(), Some(inputs));
        assert_eq!(decode_fragment("#other=1").unwrap(), None);
        assert!(decode_fragment("#in=!!!").unwrap_err().contains("base64url"));
        assert!(decode_fragment(&format!("#{}", &frag[..frag.len() / 2])).is_err());
    }

    #[test]
    fn query_values_round_trip() {
        let q = model_query("https://h.org/a b/m.gguf?x=1&y", "v1.0");
        assert_eq!(query_param(&q, "model").unwrap(), "https://h.org/a b/m.gguf?x=1&y");
        assert_eq!(query_param(&q, "revision").unwrap(), "v1.0");
        assert_eq!(query_param("?model=a%2Fb&x", "model").unwrap(), "a/b");
        assert_eq!(query_param("?model=a+b%", "model").unwrap(), "a b%");
        assert_eq!(query_param("?m=1", "model"), None);
    }

    #[test]
    fn linked_models_from_elsewhere_wait_for_the_user() {
        let origin = "http://127.0.0.1:8080";
        assert!(!linked_model_needs_confirmation("/models/skywork-rand", origin));
        assert!(!linked_model_needs_confirmation("./m.gguf", origin));
        assert!(!linked_model_needs_confirmation("http://127.0.0.1:8080/fixtures/m", origin));
        assert!(linked_model_needs_confirmation("Skywork/Skywork-Reward-V2-Qwen3-0.6B", origin));
        assert!(linked_model_needs_confirmation("https://evil.example/m.gguf", origin));
        assert!(linked_model_needs_confirmation("//evil.example/m.gguf", origin));
        assert!(linked_model_needs_confirmation("http://127.0.0.1:8080.evil.example/m", origin));
        // What URL parsers turn into another host: `\` read as `/`, tabs and newlines dropped.
        assert!(linked_model_needs_confirmation("/\\evil.example/m.gguf", origin));
        assert!(linked_model_needs_confirmation("/\t/evil.example/m", origin));
        assert!(linked_model_needs_confirmation("/\n/evil.example/m", origin));
        assert!(linked_model_needs_confirmation("http://127.0.0.1:8080/\\evil.example/m", origin));
    }

    #[test]
    fn bench_links_are_bounded() {
        assert_eq!(bench_request("?model=m").unwrap(), None);
        assert_eq!(bench_request("?bench=128,512&iters=2").unwrap(), Some((vec![128, 512], 2, 1)));
        assert_eq!(bench_request("?bench=64").unwrap(), Some((vec![64], 3, 1)));
        assert_eq!(bench_request("?bench=64&batch=4").unwrap(), Some((vec![64], 3, 4)));
        assert!(bench_request("?bench=64&batch=0").unwrap_err().contains("batch"));
        assert!(bench_request("?bench=64&batch=17").unwrap_err().contains("batch"));
        assert!(bench_request("?bench=100000000").unwrap_err().contains("32768"));
        assert!(bench_request("?bench=0").is_err());
        let many = ["8"; 17].join(",");
        assert!(bench_request(&format!("?bench={many}")).unwrap_err().contains("16"));
        assert!(bench_request("?bench=8&iters=1000000").unwrap_err().contains("iters"));
        assert!(bench_request("?bench=").is_err());
    }
}
