//! Images in input lines go to multimodal reward servers as each protocol carries them: a
//! request-capturing server on loopback checks the exact vLLM (`image_url` parts) and LightRFT
//! (`images` of bare base64) bodies `rewardlens score` sends, for images given as paths
//! (relative to the input file), URLs and data URLs; a local text-only model refuses them.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(path)
}

/// `rewardlens score --input INPUT --output OUT` with `args`.
fn score(input: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .arg("score")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn data_url(mime: &str, file: &str) -> String {
    format!("data:{mime};base64,{}", STANDARD.encode(std::fs::read(fixture(file)).unwrap()))
}

type Captured = Arc<Mutex<Vec<(String, Value)>>>;

/// Records every POST (route, JSON body) and answers it in its protocol's shape with a score
/// that counts what arrived: images + messages/10 (vLLM), images + 0.5 per query (LightRFT).
/// Serves `GET /blue.jpg` as an image URL to download.
fn capturing_server() -> (String, Captured) {
    let captured: Captured = Arc::default();
    let seen = captured.clone();
    let url = common::stand_in_server(move |req| {
        if req.method == "GET" && req.target == "/blue.jpg" {
            return (200, "image/jpeg", std::fs::read(fixture("images/blue.jpg")).unwrap());
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let answer = match req.target.as_str() {
            "/pooling" => {
                let msgs = body["messages"].as_array().unwrap();
                let images = msgs
                    .iter()
                    .filter_map(|m| m["content"].as_array())
                    .flatten()
                    .filter(|p| p["type"] == "image_url")
                    .count();
                let score = images as f64 + msgs.len() as f64 / 10.0;
                json!({"data": [{"index": 0, "object": "pooling", "data": [score]}]})
            }
            _ => {
                let rewards: Vec<f64> = body["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_array().map_or(0, Vec::len) as f64 + 0.5)
                    .collect();
                json!({"rewards": rewards})
            }
        };
        seen.lock().unwrap().push((req.target, body));
        (200, "application/json", answer.to_string().into_bytes())
    });
    (url, captured)
}

/// The input: a prompt image by relative path with a response that is itself an image, a
/// conversation whose image is a URL, and a data URL on a preference pair.
fn input(dir: &Path, server: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("pics")).unwrap();
    std::fs::copy(fixture("images/red.png"), dir.join("pics/red.png")).unwrap();
    std::fs::copy(fixture("images/blue.jpg"), dir.join("blue.jpg")).unwrap();
    let lines = [
        json!({"prompt": "What colour is this?", "images": ["pics/red.png"],
               "responses": ["Red.", {"content": "Like this.", "images": ["blue.jpg"]}]}),
        json!({"conversation": [{"role": "user", "content": "And this?", "images": [format!("{server}/blue.jpg")]},
                                {"role": "assistant", "content": "Blue."}]}),
        json!({"prompt": "Name the colour.", "images": [data_url("image/png", "images/red.png")],
               "chosen": "Red.", "rejected": "Green."}),
    ];
    let path = dir.join("in.jsonl");
    std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    path
}

fn read_jsonl(p: &Path) -> Vec<Map<String, Value>> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn vllm_gets_image_url_parts_with_the_files_bytes() {
    let (url, captured) = capturing_server();
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), &url);
    let out = dir.path().join("out.jsonl");
    let o = score(&input, &out, &["--endpoint", &url, "--protocol", "vllm", "--model", "vl-rm"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (red, blue) = (data_url("image/png", "images/red.png"), data_url("image/jpeg", "images/blue.jpg"));
    let image = |u: &str| json!({"type": "image_url", "image_url": {"url": u}});
    let text = |t: &str| json!({"type": "text", "text": t});
    let user = |images: &[&str], t: &str| {
        let mut parts: Vec<Value> = images.iter().map(|u| image(u)).collect();
        parts.push(text(t));
        json!({"role": "user", "content": parts})
    };
    let body =
        |messages: Value| json!({"model": "vl-rm", "task": "classify", "use_activation": false, "messages": messages});
    let mut got: Vec<Value> = captured
        .lock()
        .unwrap()
        .iter()
        .map(|(r, b)| {
            assert_eq!(r, "/pooling");
            b.clone()
        })
        .collect();
    let want = vec![
        body(json!([user(&[&red], "What colour is this?"), {"role": "assistant", "content": "Red."}])),
        body(
            json!([user(&[&red], "What colour is this?"), {"role": "assistant", "content": [image(&blue), text("Like this.")]}]),
        ),
        body(json!([user(&[&blue], "And this?"), {"role": "assistant", "content": "Blue."}])),
        body(json!([user(&[&red], "Name the colour."), {"role": "assistant", "content": "Red."}])),
        body(json!([user(&[&red], "Name the colour."), {"role": "assistant", "content": "Green."}])),
    ];
    // One request per conversation (no canary: one endpoint); they may arrive in any order.
    let key = |v: &Value| v.to_string();
    got.sort_by_key(key);
    let mut want = want;
    want.sort_by_key(key);
    assert_eq!(got, want);
    let lines = read_jsonl(&out);
    assert_eq!(lines[0]["scores"], json!([1.2, 2.2]), "the answers' scores, in order");
    assert_eq!(lines[1]["score"], json!(1.2));
    assert_eq!((lines[2]["chosen_score"].clone(), lines[2]["rejected_score"].clone()), (json!(1.2), json!(1.2)));
    assert_eq!(lines[0]["images"], json!(["pics/red.png"]), "the input line is kept as given");
}

#[test]
fn lightrft_gets_queries_and_bare_base64_images() {
    let (url, captured) = capturing_server();
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), &url);
    // A served model's folder whose template writes a placeholder per image (as Qwen2-VL's).
    let model = dir.path().join("vl");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("models/qwen3-seq").join(f), model.join(f)).unwrap();
    }
    std::fs::write(
        model.join("chat_template.jinja"),
        "{% for m in messages %}<{{ m.role }}>{% if m.content is string %}{{ m.content }}{% else %}\
         {% for c in m.content %}{% if c.type == 'image' %}<image>{% else %}{{ c.text }}{% endif %}{% endfor %}\
         {% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let o = score(
        &input,
        &out,
        &["--endpoint", &url, "--protocol", "openrlhf", "--template", model.to_str().unwrap(), "--batch-size", "8"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b64 = |f: &str| STANDARD.encode(std::fs::read(fixture(f)).unwrap());
    let (red, blue) = (b64("images/red.png"), b64("images/blue.jpg"));
    let got: Vec<Value> = captured
        .lock()
        .unwrap()
        .iter()
        .map(|(r, b)| {
            assert_eq!(r, "/get_reward");
            b.clone()
        })
        .collect();
    let all = json!({
        "queries": ["<user><image>What colour is this?<assistant>Red.",
                    "<user><image>What colour is this?<assistant><image>Like this.",
                    "<user><image>And this?<assistant>Blue.",
                    "<user><image>Name the colour.<assistant>Red.",
                    "<user><image>Name the colour.<assistant>Green."],
        "prompts": ["<user><image>What colour is this?<assistant>", "<user><image>What colour is this?<assistant>",
                    "<user><image>And this?<assistant>", "<user><image>Name the colour.<assistant>",
                    "<user><image>Name the colour.<assistant>"],
        "images": [[red], [red, blue], [blue], [red], [red]]});
    assert_eq!(got, [all], "one request, the batch of all five answers");
    let lines = read_jsonl(&out);
    assert_eq!(lines[0]["scores"], json!([1.5, 2.5]));
    assert_eq!(lines[1]["score"], json!(1.5));
}

#[test]
fn a_local_model_and_text_only_protocols_refuse_images_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), "http://127.0.0.1:9");
    let out = dir.path().join("out.jsonl");
    let model = fixture("models/qwen3-seq");
    let o = score(&input, &out, &["--model", model.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("line 1: this model reads text only: the conversation carries 1 image(s) (message 1)"),
        "{err}"
    );
    assert!(err.contains("3 skipped"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "", "no line scored on its text alone");

    // A missing file and a file that is no image, named with the line.
    std::fs::write(dir.path().join("notes.png"), "not an image").unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{}\n",
            json!({"prompt": "q", "responses": ["a"], "images": ["missing.png"]}),
            json!({"prompt": "q", "responses": ["a"], "images": ["notes.png"]})
        ),
    )
    .unwrap();
    let (url, _) = capturing_server();
    let out = dir.path().join("out2.jsonl");
    let o = score(&bad, &out, &["--endpoint", &url, "--protocol", "vllm"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("line 1: image `missing.png`: cannot read") && err.contains("missing.png"), "{err}");
    assert!(err.contains("line 2: image `notes.png`: not a PNG, JPEG, GIF or WebP image"), "{err}");
}
