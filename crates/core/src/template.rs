//! Chat-template rendering that reproduces `transformers`' `apply_chat_template(tokenize=False)`.
//!
//! transformers renders with Jinja2 using `trim_blocks` and `lstrip_blocks`, loop controls,
//! Python string methods, a `tojson` that does not HTML-escape, and exposes the special tokens
//! (`bos_token`, `eos_token`, ...) plus `raise_exception` and `strftime_now`. We set up
//! minijinja the same way so the text is byte-identical.

use crate::{CoreError, Message};
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde_json::Value as Json;

const TEMPLATE_NAME: &str = "chat";

/// Fuel for one render (minijinja's `fuel` feature): about one unit per instruction and one per
/// 64 bytes of data the template creates or processes, so it bounds both the time and the memory
/// of a render (at most ~256 MiB). The Llama 3 and Qwen3 templates use 0.06 to 0.08 fuel per
/// byte rendered, about a quarter of the budget at the 16 MiB output cap; `{% for i in range(100000) %}{% for j in range(100000) %}` or doubling a string
/// in a loop runs out instead of running forever or asking for a TiB.
pub const TEMPLATE_FUEL: u64 = 4_000_000;

/// Longest rendered conversation, in bytes: far beyond any model's context (a 1M-token context
/// is about 4 MiB of text), small enough for the browser to hold and tokenize.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// Stack of the native render thread (see `render`): room for the deepest value the fuel allows.
#[cfg(not(target_arch = "wasm32"))]
const RENDER_STACK: usize = 1 << 30;

/// Widest `tojson(indent=...)`: indentation multiplies with nesting depth.
const MAX_JSON_INDENT: usize = 16;
static SPACES: [u8; MAX_JSON_INDENT] = [b' '; MAX_JSON_INDENT];

/// A model's chat template with the special tokens it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    special_tokens: serde_json::Map<String, Json>,
    bos_token: Option<String>,
}

/// `bos_token` and friends are either plain strings or serialized `AddedToken` objects.
fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
        _ => None,
    }
}

impl ChatTemplate {
    /// Builds the template from `tokenizer_config.json`'s text and, when present, the
    /// `chat_template.jinja` file that newer transformers versions write instead.
    pub fn from_tokenizer_config(tokenizer_config: &str, chat_template_jinja: Option<&str>) -> Result<Self, CoreError> {
        let cfg: Json = serde_json::from_str(tokenizer_config)
            .map_err(|e| CoreError::TokenizerConfig(format!("not valid JSON: {e}")))?;
        let cfg = cfg.as_object().ok_or_else(|| CoreError::TokenizerConfig("expected a JSON object".into()))?;
        let source = match chat_template_jinja {
            Some(s) => s.to_owned(),
            None => match cfg.get("chat_template") {
                Some(Json::String(s)) => s.clone(),
                // A list of named templates: transformers uses the one named "default".
                Some(Json::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(str::to_owned))
                    .ok_or_else(|| {
                        CoreError::TokenizerConfig(
                            "`chat_template` is a list without a template named \"default\"".into(),
                        )
                    })?,
                _ => return Err(CoreError::NoChatTemplate),
            },
        };
        let mut special_tokens = serde_json::Map::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"] {
            if let Some(s) = cfg.get(key).and_then(token_content) {
                special_tokens.insert(key.to_owned(), Json::String(s));
            }
        }
        if let Some(Json::Array(extra)) = cfg.get("additional_special_tokens") {
            let list: Vec<Json> = extra.iter().filter_map(token_content).map(Json::String).collect();
            special_tokens.insert("additional_special_tokens".into(), Json::Array(list));
        }
        let bos_token = cfg.get("bos_token").and_then(token_content);
        let t = Self { source, special_tokens, bos_token };
        // Compile once now so that a broken template is reported at load time.
        t.environment()?;
        Ok(t)
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The beginning-of-sequence token, if the tokenizer config names one.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    fn environment(&self) -> Result<Environment<'_>, CoreError> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| CoreError::Template(describe(&e)))?,
        );
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template(TEMPLATE_NAME, &self.source).map_err(|e| CoreError::Template(describe(&e)))?;
        Ok(env)
    }

    /// Renders `messages` exactly as `apply_chat_template(messages, tokenize=False)` does
    /// (a message with images as a processor's template receives it: see `template_messages`).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, CoreError> {
        // minijinja displays, serializes, compares and drops values recursively, and within the
        // fuel a template can nest a value hundreds of thousands of levels deep (a namespace
        // attribute wrapped in a list on every loop turn): natively, render on a thread whose
        // stack holds that (reserved, only touched as deep as used). In wasm32 such a template
        // traps the worker instead.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let joined = std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("chat-template".into())
                    .stack_size(RENDER_STACK)
                    .spawn_scoped(s, || self.render_here(messages, add_generation_prompt))
                    .map(|h| h.join())
            });
            match joined {
                Ok(Ok(result)) => return result,
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(_) => {} // no thread to be had: render here
            }
        }
        self.render_here(messages, add_generation_prompt)
    }

    fn render_here(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, CoreError> {
        if messages.is_empty() {
            return Err(CoreError::Conversation("the conversation has no messages".into()));
        }
        let env = self.environment()?;
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| CoreError::Template(describe(&e)))?;
        let mut ctx = self.special_tokens.clone();
        ctx.insert("messages".into(), template_messages(messages));
        ctx.insert("add_generation_prompt".into(), Json::Bool(add_generation_prompt));
        let mut out = CappedOutput { buf: Vec::new(), limit: MAX_RENDERED_BYTES, over: false };
        match tmpl.render_captured_to(Value::from(minijinja::value::Serde(&ctx)), &mut out) {
            Ok(_) => {}
            Err(_) if out.over => return Err(CoreError::RenderTooLong { limit: MAX_RENDERED_BYTES }),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                return Err(CoreError::TemplateBudget { fuel: TEMPLATE_FUEL, detail: describe(&e) })
            }
            Err(e) => return Err(CoreError::Template(describe(&e))),
        }
        // minijinja writes only `str`s, and a write cut short ends the render with an error.
        String::from_utf8(out.buf).map_err(|e| CoreError::Template(format!("rendered text is not UTF-8: {e}")))
    }

    /// Fuel a render of `messages` uses (tests and limit tuning).
    pub fn fuel_used(&self, messages: &[Message], add_generation_prompt: bool) -> Result<u64, CoreError> {
        let env = self.environment()?;
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| CoreError::Template(describe(&e)))?;
        let mut ctx = self.special_tokens.clone();
        ctx.insert("messages".into(), template_messages(messages));
        ctx.insert("add_generation_prompt".into(), Json::Bool(add_generation_prompt));
        let captured = tmpl
            .render_captured_to(Value::from(minijinja::value::Serde(&ctx)), std::io::sink())
            .map_err(|e| CoreError::Template(describe(&e)))?;
        Ok(captured.state().fuel_levels().map_or(0, |(used, _)| used))
    }
}

/// The render's output, refusing to grow past `limit` bytes (the render stops at that write).
struct CappedOutput {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other(format!("rendered text exceeds {} bytes", self.limit)));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Charges the render's fuel for bytes of JSON as they are produced, so serializing stops as
/// soon as the budget is gone (a list holding one long string many times costs the template
/// little to build, but its JSON is as long as all the copies).
struct FuelMeter<'a, 'b, 'c> {
    state: &'a minijinja::State<'b, 'c>,
    unpaid: u64,
    error: Option<JinjaError>,
}

impl std::io::Write for FuelMeter<'_, '_, '_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // As minijinja's own tojson: a fuel per 4 bytes of serialized output.
        self.unpaid += data.len() as u64;
        if self.unpaid >= 4 {
            if let Err(e) = self.state.consume_fuel(self.unpaid / 4) {
                self.error = Some(e);
                return Err(std::io::Error::other("out of fuel"));
            }
            self.unpaid %= 4;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn describe(e: &JinjaError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

fn raise_exception(msg: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, format!("template raised: {msg}")))
}

/// Templates print today's date with `strftime_now("%d %b %Y")`; scores must not depend on
/// the wall clock, so this renders a fixed date (documented in docs/user/models.md).
fn strftime_now(_format: String) -> String {
    "26 Jul 2024".to_owned()
}

/// Python's `json.dumps(x, ensure_ascii=False)` (what transformers' `tojson` does), optionally indented.
fn tojson(state: &minijinja::State, value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    if indent.is_some_and(|n| n > MAX_JSON_INDENT) {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("tojson indent is limited to {MAX_JSON_INDENT}"),
        ));
    }
    // Pay for the text (compact, then once more for the indented form's whitespace) before
    // building it.
    let mut meter = FuelMeter { state, unpaid: 0, error: None };
    if serde_json::to_writer(&mut meter, &value).is_err() {
        return Err(meter.error.take().unwrap_or_else(|| JinjaError::new(ErrorKind::BadSerialization, "tojson")));
    }
    if let Some(n) = indent {
        let fmt = serde_json::ser::PrettyFormatter::with_indent(&SPACES[..n]);
        let mut ser = serde_json::Serializer::with_formatter(&mut meter, fmt);
        if serde::Serialize::serialize(&value, &mut ser).is_err() {
            return Err(meter.error.take().unwrap_or_else(|| JinjaError::new(ErrorKind::BadSerialization, "tojson")));
        }
    }
    let json: Json =
        serde_json::to_value(&value).map_err(|e| JinjaError::new(ErrorKind::BadSerialization, e.to_string()))?;
    let text = match indent {
        None => python_compact_json(&json),
        Some(n) => {
            let mut buf = Vec::new();
            let indent = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&indent);
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&json, &mut ser)
                .map_err(|e| JinjaError::new(ErrorKind::BadSerialization, e.to_string()))?;
            String::from_utf8(buf).expect("serde_json writes UTF-8")
        }
    };
    Ok(Value::from_safe_string(text))
}

/// Python's default separators are `", "` and `": "`.
fn python_compact_json(v: &Json) -> String {
    match v {
        Json::Array(a) => {
            format!("[{}]", a.iter().map(python_compact_json).collect::<Vec<_>>().join(", "))
        }
        Json::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", Json::String(k.clone()), python_compact_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// The messages as transformers hands them to a template. A message with images gets its
/// content as parts, one `{"type": "image"}` per image and then its text, as multimodal
/// processors give it (their templates write an image placeholder for each); the image data
/// itself never reaches the template.
fn template_messages(messages: &[Message]) -> Json {
    Json::Array(
        messages
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).expect("messages serialize");
                if let Json::Object(o) = &mut v {
                    if let Some(Json::Array(images)) = o.remove("images") {
                        let mut parts: Vec<Json> =
                            images.iter().map(|_| serde_json::json!({"type": "image"})).collect();
                        parts.push(serde_json::json!({"type": "text", "text": m.content}));
                        o.insert("content".into(), Json::Array(parts));
                    }
                }
                v
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_reach_the_template_as_parts_like_a_processor_gives_them() {
        // The part loop of Qwen2-VL's template: a placeholder per image, then the text.
        let source = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content is string %}{{ m.content }}\
            {% else %}{% for c in m.content %}{% if c.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>\
            {% elif 'text' in c %}{{ c.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}";
        let cfg = serde_json::json!({ "chat_template": source }).to_string();
        let t = ChatTemplate::from_tokenizer_config(&cfg, None).unwrap();
        let mut prompt = Message::user("What is shown?");
        prompt.images = vec!["data:image/png;base64,AAAA".into(), "b.jpg".into()];
        let out = t.render(&[prompt, Message::assistant("A cat.")], false).unwrap();
        let pad = "<|vision_start|><|image_pad|><|vision_end|>";
        assert_eq!(
            out,
            format!("<|im_start|>user\n{pad}{pad}What is shown?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n")
        );
        assert!(!out.contains("AAAA"), "image data never reaches the template");
    }

    #[test]
    fn renders_with_trim_and_special_tokens() {
        let cfg = r#"{"bos_token": {"content": "<s>"}, "chat_template": "{{ bos_token }}{% for m in messages %}\n[{{ m.role }}]{{ m.content | trim }}\n{% endfor %}"}"#;
        let t = ChatTemplate::from_tokenizer_config(cfg, None).unwrap();
        let out = t.render(&[Message::user(" hi "), Message::assistant("yo")], false).unwrap();
        assert_eq!(out, "<s>[user]hi\n[assistant]yo\n");
    }

    #[test]
    fn python_string_methods_and_errors() {
        let cfg = r#"{"chat_template": "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0].content.split('|')[-1].lstrip('x') }}"}"#;
        let t = ChatTemplate::from_tokenizer_config(cfg, None).unwrap();
        assert_eq!(t.render(&[Message::user("a|xxb")], false).unwrap(), "b");
        let err = t.render(&[Message::assistant("a")], false).unwrap_err().to_string();
        assert!(err.contains("first must be user"), "{err}");
    }

    #[test]
    fn tojson_is_python_style() {
        let cfg = r#"{"chat_template": "{{ {'a': '<é>', 'b': [1, 2]} | tojson }}"}"#;
        let t = ChatTemplate::from_tokenizer_config(cfg, None).unwrap();
        assert_eq!(t.render(&[Message::user("x")], false).unwrap(), r#"{"a": "<é>", "b": [1, 2]}"#);
    }

    #[test]
    fn missing_template_is_an_error() {
        let err = ChatTemplate::from_tokenizer_config("{}", None).unwrap_err();
        assert!(matches!(err, CoreError::NoChatTemplate));
        let err = ChatTemplate::from_tokenizer_config(r#"{"chat_template": "{% for %}"}"#, None).unwrap_err();
        assert!(matches!(err, CoreError::Template(_)), "{err}");
    }

    fn template(src: &str) -> ChatTemplate {
        let cfg = serde_json::json!({ "chat_template": src }).to_string();
        ChatTemplate::from_tokenizer_config(&cfg, None).unwrap()
    }

    #[test]
    fn endless_loops_run_out_of_fuel() {
        // 10^10 iterations: without fuel this never ends.
        let t = template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        let err = t.render(&[Message::user("x")], false).unwrap_err();
        assert!(matches!(err, CoreError::TemplateBudget { fuel: TEMPLATE_FUEL, .. }), "{err}");
        assert!(err.to_string().contains(&TEMPLATE_FUEL.to_string()), "{err}");
    }

    #[test]
    fn doubling_a_string_runs_out_of_fuel_before_allocating() {
        // 2^40 bytes if it ran to the end.
        let t = template(
            "{% set ns = namespace(s=messages[0].content) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        );
        let err = t.render(&[Message::user("ab")], false).unwrap_err();
        assert!(matches!(err, CoreError::TemplateBudget { .. }), "{err}");
        let t = template("{{ (messages[0].content * 1000000000000) | length }}");
        let err = t.render(&[Message::user("ab")], false).unwrap_err();
        assert!(matches!(err, CoreError::TemplateBudget { .. }), "{err}");
    }

    #[test]
    fn tojson_pays_for_repeated_strings() {
        // One 100 kB string 100000 times: 10 GB of JSON from a list the template built cheaply.
        let t = template("{{ ([messages[0].content] * 100000) | tojson }}");
        let err = t.render(&[Message::user("x".repeat(100_000))], false).unwrap_err();
        assert!(matches!(err, CoreError::TemplateBudget { .. }), "{err}");
        let t = template("{{ [1, [2]] | tojson(indent=100) }}");
        assert!(t.render(&[Message::user("x")], false).unwrap_err().to_string().contains("indent"));
        let t = template("{{ [1, [2]] | tojson(indent=2) }}");
        assert_eq!(t.render(&[Message::user("x")], false).unwrap(), "[\n  1,\n  [\n    2\n  ]\n]");
    }

    #[test]
    fn rendered_length_is_capped() {
        // 20 MiB of output for little fuel.
        let t = template("{% for i in range(20480) %}{{ messages[0].content }}{% endfor %}");
        let err = t.render(&[Message::user("y".repeat(1024))], false).unwrap_err();
        assert!(matches!(err, CoreError::RenderTooLong { limit: MAX_RENDERED_BYTES }), "{err}");
        assert!(err.to_string().contains(&MAX_RENDERED_BYTES.to_string()), "{err}");
        let ok = t.render(&[Message::user("y".repeat(512))], false).unwrap();
        assert_eq!(ok.len(), 20480 * 512);
    }

    #[test]
    fn real_templates_stay_far_below_the_budget() {
        // Qwen3's template (the heaviest of the fixtures: think-tag splitting, a reverse scan
        // for the last query) over 13 MiB of conversation in 300 turns, near the output cap.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tokenizers");
        for name in ["qwen3", "llama3"] {
            let cfg = std::fs::read_to_string(format!("{dir}/{name}/tokenizer_config.json")).unwrap();
            let t = ChatTemplate::from_tokenizer_config(&cfg, None).unwrap();
            let text = "word ".repeat(9000);
            let messages: Vec<Message> = (0..300)
                .map(|i| if i % 2 == 0 { Message::user(text.clone()) } else { Message::assistant(text.clone()) })
                .collect();
            let rendered = t.render(&messages, false).unwrap();
            assert!(rendered.len() > 12 << 20, "{name}: {}", rendered.len());
            let used = t.fuel_used(&messages, false).unwrap();
            assert!(used < TEMPLATE_FUEL / 2, "{name} used {used} fuel");
        }
    }

    #[test]
    fn deeply_nested_values_do_not_overflow_the_stack() {
        // Each loop turn nests the value one level deeper; displaying, serializing, comparing and
        // finally dropping it all recurse. The last template nests as deep as the fuel allows.
        let turns = "{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}";
        let nest = format!("{{% set ns = namespace(x=[]) %}}{turns}{turns}");
        for tail in ["{{ ns.x | length }}", "{{ ns.x }}", "{{ ns.x | tojson }}", "{{ ns.x == ns.x }}"] {
            let t = template(&format!("{nest}{tail}"));
            match t.render(&[Message::user("x")], false) {
                Ok(text) => assert!(!text.is_empty()),
                Err(e) => {
                    assert!(matches!(e, CoreError::TemplateBudget { .. }), "{tail}: {e}");
                    assert!(tail != "{{ ns.x | length }}", "{e}");
                }
            }
        }
        let t = template(&format!("{nest}{}", turns.repeat(10)));
        let err = t.render(&[Message::user("x")], false).unwrap_err();
        assert!(matches!(err, CoreError::TemplateBudget { .. }), "{err}");
    }
}
