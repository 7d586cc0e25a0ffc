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
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template(TEMPLATE_NAME, &self.source).map_err(|e| CoreError::Template(describe(&e)))?;
        Ok(env)
    }

    /// Renders `messages` exactly as `apply_chat_template(messages, tokenize=False)` does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, CoreError> {
        if messages.is_empty() {
            return Err(CoreError::Conversation("the conversation has no messages".into()));
        }
        let env = self.environment()?;
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| CoreError::Template(describe(&e)))?;
        let mut ctx = self.special_tokens.clone();
        ctx.insert("messages".into(), serde_json::to_value(messages).expect("messages serialize"));
        ctx.insert("add_generation_prompt".into(), Json::Bool(add_generation_prompt));
        tmpl.render(Value::from(minijinja::value::Serde(&ctx))).map_err(|e| CoreError::Template(describe(&e)))
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
/// the wall clock, so this renders a fixed date (documented in the README).
fn strftime_now(_format: String) -> String {
    "26 Jul 2024".to_owned()
}

/// Python's `json.dumps(x, ensure_ascii=False)` (what transformers' `tojson` does), optionally indented.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
