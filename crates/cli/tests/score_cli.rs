//! The `rewardlens score` binary against the fixture models' golden values, and its error paths.

mod common;

use common::serve_hub;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODELS: [&str; 6] = ["qwen3-seq", "qwen3-token", "qwen2-seq", "qwen2-token", "llama-seq", "llama-token"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("golden.json")).unwrap()).unwrap()
}

fn rewardlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewardlens")).args(args).output().unwrap()
}

fn score(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "score",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    rewardlens(&args)
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    BufReader::new(std::fs::File::open(p).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    std::fs::write(p, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// The scalar transformers gives a conversation: the pooled first label, or for token
/// classification the last token's first label.
fn expected_score(g: &Value, key: &str) -> f64 {
    let logits = &g["conversations"][key]["logits"];
    let v = if g["architecture"].as_str().unwrap().contains("Token") {
        &logits.as_array().unwrap().last().unwrap()[0]
    } else {
        &logits[0]
    };
    v.as_f64().unwrap()
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() <= 1e-4 * b.abs().max(1.0)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every golden conversation in all four input forms, and preference lists.
fn golden_input(g: &Value) -> Vec<String> {
    let convs = g["conversations"].as_object().unwrap();
    let mut lines: Vec<String> = convs.values().map(|c| json!({"conversation": c["messages"]}).to_string()).collect();
    for c in convs.values() {
        let m = c["messages"].as_array().unwrap();
        if m.len() == 2 {
            lines.push(json!({"instruction": m[0]["content"], "response": m[1]["content"]}).to_string());
        }
    }
    let prompt = &convs["simple"]["messages"][0]["content"];
    let (a, b) = (&convs["simple"]["messages"][1]["content"], &convs["wrong"]["messages"][1]["content"]);
    lines.push(json!({"prompt": prompt, "responses": [a, b, a]}).to_string());
    lines.push(json!({"prompt": prompt, "chosen": a, "rejected": b}).to_string());
    lines.push(json!({"prompt": prompt, "chosen": b, "rejected": a}).to_string());
    // A list of answers a side (RewardBench 2, RM-Bench) with TRL's margin.
    lines.push(json!({"prompt": prompt, "chosen": [a, a], "rejected": [b], "margin": 0.0}).to_string());
    lines
}

#[test]
fn scores_every_fixture_in_every_form() {
    let tmp = tempfile::tempdir().unwrap();
    for name in MODELS {
        let g = golden(name);
        let input = tmp.path().join(format!("{name}.jsonl"));
        let output = tmp.path().join(format!("{name}.out.jsonl"));
        let lines = golden_input(&g);
        write_lines(&input, &lines);
        let o = score(&fixture(name), &input, &output, &["--batch-size", "3"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("pair accuracy") && stderr(&o).contains("mean margin"),
            "{name}: summary: {}",
            stderr(&o)
        );
        let out = read_jsonl(&output);
        assert_eq!(out.len(), lines.len(), "{name}: one output line per input line");
        let convs = g["conversations"].as_object().unwrap();
        let key_of = |response: &Value| {
            convs
                .iter()
                .find(|(_, c)| c["messages"].as_array().unwrap().len() == 2 && c["messages"][1]["content"] == *response)
                .map(|(k, _)| k.clone())
                .unwrap()
        };
        let (simple, wrong) = (expected_score(&g, "simple"), expected_score(&g, "wrong"));
        for (line, o) in lines.iter().zip(&out) {
            let input: Value = serde_json::from_str(line).unwrap();
            for (k, v) in input.as_object().unwrap() {
                assert_eq!(&o[k], v, "{name}: input fields are kept");
            }
            if let Some(conv) = input.get("conversation") {
                let key = convs.iter().find(|(_, c)| c["messages"] == *conv).unwrap().0;
                assert!(
                    close(&o["score"], expected_score(&g, key)),
                    "{name}/{key}: {} vs {}",
                    o["score"],
                    expected_score(&g, key)
                );
            } else if let Some(r) = input.get("response") {
                let key = key_of(r);
                assert!(close(&o["score"], expected_score(&g, &key)), "{name}/{key} instruction form");
            } else if input.get("responses").is_some() {
                let s = o["scores"].as_array().unwrap();
                assert!(close(&s[0], simple) && close(&s[1], wrong) && close(&s[2], simple), "{name}: responses {s:?}");
                // Equal texts may differ in the last bits (different padding), so check by text.
                let best = if simple >= wrong {
                    &convs["simple"]["messages"][1]["content"]
                } else {
                    &convs["wrong"]["messages"][1]["content"]
                };
                let first = o["ranking"][0].as_u64().unwrap() as usize;
                assert_eq!(&input["responses"][first], best, "{name}: ranking");
                assert_eq!(o["ranking"].as_array().unwrap().len(), 3);
            } else if let Some(chosen) = input["chosen"].as_array() {
                let expected = |answers: &[Value]| -> Vec<f64> {
                    answers.iter().map(|a| expected_score(&g, &key_of(a))).collect()
                };
                let (c, r) = (expected(chosen), expected(input["rejected"].as_array().unwrap()));
                for (side, want) in [("chosen_scores", &c), ("rejected_scores", &r)] {
                    let got = o[side].as_array().unwrap();
                    assert!(
                        got.len() == want.len() && got.iter().zip(want.iter()).all(|(g, w)| close(g, *w)),
                        "{name}: {side} {got:?}"
                    );
                }
                let correct = c.iter().all(|c| r.iter().all(|r| c > r));
                assert_eq!(o["correct"], json!(correct), "{name}: correct when every chosen is above every rejected");
                assert_eq!(
                    o["margin_met"],
                    json!(correct),
                    "{name}: a margin of 0 is met by a strict win (no tie here)"
                );
            } else {
                let (c, r) =
                    (expected_score(&g, &key_of(&input["chosen"])), expected_score(&g, &key_of(&input["rejected"])));
                assert!(close(&o["chosen_score"], c) && close(&o["rejected_score"], r), "{name}: pair");
                assert_eq!(o["correct"], json!(c > r), "{name}: correct follows transformers' scores");
            }
            let labels = g["id2label"].as_object().unwrap();
            if labels.len() > 1 && input.get("conversation").is_some() {
                assert_eq!(o["attributes"].as_object().unwrap().len(), labels.len(), "{name}: attributes");
            }
        }
    }
}

#[test]
fn broken_line_is_reported_and_skipped_or_aborts_with_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let ok = json!({"instruction": "Hi", "response": "Hello!"}).to_string();
    write_lines(&input, &[ok.clone(), "{\"instruction\": \"Hi\"".into(), json!({"foo": 1}).to_string(), ok]);
    let out = tmp.path().join("out.jsonl");
    let o = score(&fixture("qwen3-seq"), &input, &out, &[]);
    assert_eq!(o.status.code(), Some(3), "skipped lines give exit 3: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("line 2: not a JSON object"), "{err}");
    assert!(err.contains("line 3: expected one of"), "{err}");
    assert_eq!(read_jsonl(&out).len(), 2);

    let out2 = tmp.path().join("out2.jsonl");
    let o = score(&fixture("qwen3-seq"), &input, &out2, &["--strict"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 2") && stderr(&o).contains("--strict"), "{}", stderr(&o));
}

#[test]
fn over_long_input_errors_or_truncates_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden("llama-seq");
    let input = tmp.path().join("in.jsonl");
    write_lines(&input, &[json!({"conversation": g["conversations"]["long"]["messages"]}).to_string()]);
    let o = score(&fixture("llama-seq"), &input, &tmp.path().join("a.jsonl"), &["--max-tokens", "100"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("exceeds the limit of 100 tokens"), "{}", stderr(&o));
    let out = tmp.path().join("b.jsonl");
    let o = score(&fixture("llama-seq"), &input, &out, &["--max-tokens", "100", "--truncate"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let n = g["conversations"]["long"]["input_ids"].as_array().unwrap().len();
    assert_eq!(read_jsonl(&out)[0]["truncated_tokens"], json!(n - 100));
}

fn copy_model(name: &str, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn unknown_architecture_and_missing_tensor_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    write_lines(&input, &[json!({"instruction": "Hi", "response": "Hello!"}).to_string()]);

    let dir = tmp.path().join("bert");
    copy_model("qwen3-seq", &dir);
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("Qwen3ForSequenceClassification", "BertForSequenceClassification");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let out = tmp.path().join("o1.jsonl");
    let o = score(&dir, &input, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unsupported architecture `BertForSequenceClassification`"), "{}", stderr(&o));
    assert!(!out.exists(), "no output file when the model cannot load");

    let dir = tmp.path().join("missing");
    copy_model("qwen3-seq", &dir);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| n != "score.weight").collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(kept, None).unwrap()).unwrap();
    let o = score(&dir, &input, &tmp.path().join("o2.jsonl"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing tensor `score.weight`"), "{}", stderr(&o));
}

#[test]
fn existing_output_is_kept_and_resume_completes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden("qwen3-seq");
    let input = tmp.path().join("in.jsonl");
    let lines = golden_input(&g);
    write_lines(&input, &lines);
    let full = tmp.path().join("full.jsonl");
    assert!(score(&fixture("qwen3-seq"), &input, &full, &[]).status.success());
    let full_text = std::fs::read_to_string(&full).unwrap();

    // Refuses to overwrite.
    let o = score(&fixture("qwen3-seq"), &input, &full, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&full).unwrap(), full_text, "untouched");

    // An interrupted run: three whole lines and half of the fourth.
    let partial = tmp.path().join("partial.jsonl");
    let mut f = std::fs::File::create(&partial).unwrap();
    let whole: Vec<&str> = full_text.lines().collect();
    for l in &whole[..3] {
        writeln!(f, "{l}").unwrap();
    }
    write!(f, "{}", &whole[3][..20]).unwrap();
    drop(f);
    let o = score(&fixture("qwen3-seq"), &input, &partial, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 already in output"), "{}", stderr(&o));
    // Same lines in the same order; scores equal up to batch-composition rounding.
    let (resumed, full) = (read_jsonl(&partial), read_jsonl(&full));
    assert_eq!(resumed.len(), full.len());
    for (r, f) in resumed.iter().zip(&full) {
        for (k, v) in f.as_object().unwrap() {
            match v {
                Value::Number(n) => assert!((r[k].as_f64().unwrap() - n.as_f64().unwrap()).abs() < 1e-5, "{k}"),
                Value::Array(a) if a.iter().all(Value::is_number) => {
                    for (x, y) in r[k].as_array().unwrap().iter().zip(a) {
                        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5, "{k}");
                    }
                }
                _ if k == "ranking" || k == "correct" || k == "preference_probability" => {}
                _ => assert_eq!(&r[k], v, "{k}"),
            }
        }
    }
}

#[test]
fn hub_repo_ids_download_into_the_hf_cache_and_then_work_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = "tiny-org/llama-seq-rm";
    let (endpoint, auth) = serve_hub(std::fs::canonicalize(fixture("llama-seq")).unwrap(), repo);
    let g = golden("llama-seq");
    let input = tmp.path().join("in.jsonl");
    write_lines(&input, &[json!({"conversation": g["conversations"]["simple"]["messages"]}).to_string()]);
    let hf_home = tmp.path().join("hf");
    let run = |endpoint: &str, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_rewardlens"))
            .args([
                "score",
                "--model",
                repo,
                "--input",
                input.to_str().unwrap(),
                "--output",
                tmp.path().join(out).to_str().unwrap(),
            ])
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", &hf_home)
            .env("HF_TOKEN", "hf_test_token")
            .output()
            .unwrap()
    };
    let o = run(&endpoint, "a.jsonl");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(close(&read_jsonl(&tmp.path().join("a.jsonl"))[0]["score"], expected_score(&g, "simple")));
    let with = &read_jsonl(&tmp.path().join("a.jsonl"))[0]["scored_with"];
    assert_eq!((&with["model"], &with["revision"]), (&json!(repo), &json!("main")), "{with}");
    assert_eq!(with["commit"], "0123456789abcdef0123456789abcdef01234567", "the commit `main` resolved to");
    let snapshot =
        hf_home.join("hub/models--tiny-org--llama-seq-rm/snapshots/0123456789abcdef0123456789abcdef01234567");
    assert!(snapshot.join("model-00002-of-00002.safetensors").is_file(), "shards land in the HF cache");
    assert!(
        auth.lock()
            .unwrap()
            .iter()
            .any(|h| h == "authorization: Bearer hf_test_token" || h == "Authorization: Bearer hf_test_token"),
        "{:?}",
        auth.lock().unwrap()
    );

    // Second run: the endpoint is gone, the cache serves.
    let o = run("http://127.0.0.1:9", "b.jsonl");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        read_jsonl(&tmp.path().join("b.jsonl"))[0]["score"],
        read_jsonl(&tmp.path().join("a.jsonl"))[0]["score"]
    );
}

/// TRL's preference forms, every combination of a string or message-list prompt with string or
/// message-list answers, and the implicit form: each side scores prompt + answer, as
/// transformers scores the whole conversation.
#[test]
fn trl_preference_forms_score_the_prompt_with_each_answer() {
    let tmp = tempfile::tempdir().unwrap();
    for name in MODELS {
        let g = golden(name);
        let convs = &g["conversations"];
        let msgs = |key: &str| convs[key]["messages"].as_array().unwrap().clone();
        let (simple, wrong, multi) = (msgs("simple"), msgs("wrong"), msgs("multi_turn"));
        let text = |m: &Value| m["content"].clone();
        let mut cases: Vec<(Value, &str, &str)> = Vec::new();
        // One user turn: the prompt as a string or as messages, answers as strings or messages.
        let prompts = [text(&simple[0]), json!([simple[0]])];
        let answers = [(text(&simple[1]), text(&wrong[1])), (json!([simple[1]]), json!([wrong[1]]))];
        for p in &prompts {
            for (c, r) in &answers {
                cases.push((json!({"prompt": p, "chosen": c, "rejected": r}), "simple", "wrong"));
                cases.push((json!({"prompt": p, "chosen": r, "rejected": c}), "wrong", "simple"));
            }
            // A prompt given alongside whole conversations is not repeated.
            cases.push((json!({"prompt": p, "chosen": simple, "rejected": wrong}), "simple", "wrong"));
        }
        // Implicit form: whole conversations.
        cases.push((json!({"chosen": simple, "rejected": wrong}), "simple", "wrong"));
        cases.push((json!({"chosen": multi, "rejected": simple}), "multi_turn", "simple"));
        // A multi-turn prompt (system, user, assistant, user) and the last answer.
        let multi_prompt = json!(multi[..4]);
        cases.push((
            json!({"prompt": multi_prompt, "chosen": [multi[4]], "rejected": [multi[4]]}),
            "multi_turn",
            "multi_turn",
        ));
        cases.push((
            json!({"prompt": multi_prompt, "chosen": text(&multi[4]), "rejected": multi}),
            "multi_turn",
            "multi_turn",
        ));

        let input = tmp.path().join(format!("{name}.jsonl"));
        let output = tmp.path().join(format!("{name}.out.jsonl"));
        write_lines(&input, &cases.iter().map(|(l, ..)| l.to_string()).collect::<Vec<_>>());
        let o = score(&fixture(name), &input, &output, &["--batch-size", "4"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let out = read_jsonl(&output);
        assert_eq!(out.len(), cases.len());
        for ((line, c, r), o) in cases.iter().zip(&out) {
            let (ec, er) = (expected_score(&g, c), expected_score(&g, r));
            assert!(close(&o["chosen_score"], ec), "{name} {line}: chosen {} vs transformers {ec}", o["chosen_score"]);
            assert!(
                close(&o["rejected_score"], er),
                "{name} {line}: rejected {} vs transformers {er}",
                o["rejected_score"]
            );
        }
    }
}

/// An interrupted run: the first `n` lines of `full` and half of the next.
fn interrupted(full: &Path, n: usize, dst: &Path) {
    let text = std::fs::read_to_string(full).unwrap();
    let whole: Vec<&str> = text.lines().collect();
    let mut f = std::fs::File::create(dst).unwrap();
    for l in &whole[..n] {
        writeln!(f, "{l}").unwrap();
    }
    write!(f, "{}", &whole[n][..20]).unwrap();
}

#[test]
fn resume_recognises_token_fields_and_refuses_other_models_and_options() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let lines = golden_input(&golden("qwen3-seq"));
    write_lines(&input, &lines);
    let model = fixture("qwen3-seq");
    let full = tmp.path().join("full.jsonl");
    let o = score(&model, &input, &full, &["--token-scores"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = &read_jsonl(&full)[0];
    assert!(first["token_scores"].is_array());
    let with = &first["scored_with"];
    assert_eq!(with["model"], json!(std::fs::canonicalize(&model).unwrap().to_str().unwrap()), "{with}");
    assert_eq!(
        (&with["revision"], &with["token_scores"], &with["max_tokens"]),
        (&json!("main"), &json!(true), &Value::Null)
    );

    // Resuming with the same options skips the three whole lines instead of scoring them again.
    let partial = tmp.path().join("partial.jsonl");
    interrupted(&full, 3, &partial);
    let o = score(&model, &input, &partial, &["--token-scores", "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 already in output"), "{}", stderr(&o));
    let resumed = read_jsonl(&partial);
    assert_eq!(resumed.len(), lines.len(), "no line twice");
    for (r, line) in resumed.iter().zip(&lines) {
        let input: Value = serde_json::from_str(line).unwrap();
        for (k, v) in input.as_object().unwrap() {
            assert_eq!(&r[k], v, "in input order");
        }
    }

    // Another model, another limit, other fields: refused, the file left as it was.
    interrupted(&full, 3, &partial);
    let before = std::fs::read(&partial).unwrap();
    for (m, extra) in [
        (fixture("qwen2-seq"), vec!["--token-scores"]),
        (model.clone(), vec!["--token-scores", "--max-tokens", "50"]),
        (model.clone(), vec![]),
    ] {
        let mut args = extra.clone();
        args.push("--resume");
        let o = score(&m, &input, &partial, &args);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("was scored with") && stderr(&o).contains("line 1"), "{}", stderr(&o));
        assert_eq!(std::fs::read(&partial).unwrap(), before, "{extra:?}: untouched");
    }
    // A line that does not say what scored it is not mixed with new scores either.
    write_lines(&partial, &[json!({"instruction": "Hi", "response": "Hello!", "score": 1.0}).to_string()]);
    let o = score(&model, &input, &partial, &["--resume"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not say what scored it"), "{}", stderr(&o));
}

/// Waits for `child` at most `secs`, killing it past that: a hang is a failure, not a stuck test.
fn wait_bounded(mut child: std::process::Child, secs: u64) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rewardlens did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn input_is_read_once_from_stdin_and_must_be_a_file() {
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let g = golden("qwen3-seq");
    let lines = golden_input(&g);
    let model = fixture("qwen3-seq");
    let spawn = |input: &str, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_rewardlens"))
            .args(["score", "--model", model.to_str().unwrap(), "--input", input])
            .args(["--output", out.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let feed = |child: &mut std::process::Child| {
        let mut stdin = child.stdin.take().unwrap();
        // A refused input may have exited already: a broken pipe then is fine.
        for l in &lines {
            let _ = writeln!(stdin, "{l}");
        }
    };

    // `-`: a pipe, read once.
    let out = tmp.path().join("stdin.jsonl");
    let mut child = spawn("-", &out);
    feed(&mut child);
    let o = wait_bounded(child, 120);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = read_jsonl(&out);
    assert_eq!(got.len(), lines.len(), "every piped line scored");
    let first = g["conversations"].as_object().unwrap().keys().next().unwrap().clone();
    assert!(close(&got[0]["score"], expected_score(&g, &first)), "{first}: {}", got[0]["score"]);

    // A pipe by another name, a directory: refused at once, saying what to do.
    let mut child = spawn("/dev/stdin", &tmp.path().join("devstdin.jsonl"));
    feed(&mut child);
    let o = wait_bounded(child, 60);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a pipe, not a regular file") && stderr(&o).contains("--input -"), "{}", stderr(&o));
    let o = wait_bounded(spawn(tmp.path().to_str().unwrap(), &tmp.path().join("dir.jsonl")), 60);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a directory, not a regular file"), "{}", stderr(&o));
}

#[test]
fn compare_leaves_out_lines_that_could_not_be_scored() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
    let line = |v: Value| v.to_string();
    write_lines(
        &a,
        &[line(json!({"score": 1.0})), line(json!({"error": "HTTP 400"})), line(json!({"scores": [1.0, 2.0]}))],
    );
    write_lines(&b, &[line(json!({"score": 1.5})), line(json!({"score": 3.0})), line(json!({"scores": [1.0, 2.0]}))]);
    let o = rewardlens(&["compare", "--json", "--reference", a.to_str().unwrap(), "--candidate", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((&m["sequences"], &m["lines_with_error"]), (&json!(3), &json!(1)), "{m}");
    assert_eq!(m["max_abs_error"], json!(0.5));
}
