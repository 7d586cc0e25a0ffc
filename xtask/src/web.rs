//! The browser app's tool chain and commands: `serve`, `dist`, and the browser tests' set-up.
//!
//! Tools are pinned and installed only when missing: trunk 0.21.14 (the last release that
//! builds with this toolchain, `--locked`), wasm-bindgen-cli equal to Cargo.lock's
//! wasm-bindgen, and binaryen's wasm-opt 132 from npm (Debian's wasm-opt 108 emits broken
//! wasm for this app). Trunk runs offline, so it never downloads a tool itself.

use crate::{ensure_wasm_target, root, run};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

const TRUNK: &str = "0.21.14";
const BINARYEN: &str = "132.0.0";
const TYPESCRIPT: &str = "5.9.3";

/// Type-checks the web component's declarations against their documented usage
/// (`web/component/example.ts`) with tsc --strict; TypeScript comes from npm, installed once.
pub fn check_types() -> Result<()> {
    let dir = root().join("target/tools/typescript");
    let tsc = dir.join("node_modules/.bin/tsc");
    if !tsc.exists() {
        std::fs::create_dir_all(&dir)?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(format!("typescript@{TYPESCRIPT}")))
        .context("installing TypeScript from npm (needs Node.js and npm)")?;
    }
    run(Command::new(tsc)
        .args(["--strict", "--noEmit", "--target", "es2022", "--module", "es2022", "--moduleResolution", "bundler"])
        .args(["--lib", "es2022,dom", "--skipLibCheck", "false"])
        .arg(root().join("web/component/example.ts")))
    .context("the web component's TypeScript declarations do not fit their documented usage")
}

/// wasm-bindgen's version in Cargo.lock: the CLI must match it exactly.
fn locked_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock"))?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_owned());
            }
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

fn version_of(bin: &str) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"))
        .join("bin")
}

/// Installs what is missing and returns the PATH trunk must run with.
pub fn ensure_tools() -> Result<std::ffi::OsString> {
    ensure_wasm_target()?;
    let binaryen = root().join("target/tools/binaryen");
    let wasm_opt_dir = binaryen.join("node_modules/.bin");
    let mut path = vec![wasm_opt_dir.clone(), cargo_bin_dir()];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let path = std::env::join_paths(path)?;
    let with_path = |bin: &str| -> Option<String> {
        let out = Command::new(bin).arg("--version").env("PATH", &path).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };

    if with_path("trunk").is_none_or(|v| v != format!("trunk {TRUNK}")) {
        run(Command::new(crate::cargo_path()).args(["install", "trunk", "--version", TRUNK, "--locked"]))?;
    }
    let wb = locked_wasm_bindgen()?;
    if with_path("wasm-bindgen").is_none_or(|v| v != format!("wasm-bindgen {wb}")) {
        // Its lock file pins a webpki-roots the registry no longer has, hence no --locked.
        run(Command::new(crate::cargo_path()).args(["install", "wasm-bindgen-cli", "--version", &wb]))?;
    }
    if !wasm_opt_dir.join("wasm-opt").exists() {
        std::fs::create_dir_all(&binaryen)?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&binaryen)
            .arg(format!("binaryen@{BINARYEN}")))
        .context("installing binaryen's wasm-opt from npm (needs Node.js and npm)")?;
    }
    let _ = version_of("node").context("Node.js is needed to run binaryen's wasm-opt")?;
    Ok(path)
}

fn trunk(path: &std::ffi::OsString) -> Command {
    let mut c = Command::new("trunk");
    c.env("PATH", path).env("TRUNK_SKIP_VERSION_CHECK", "true").current_dir(root().join("web"));
    c
}

/// Headers that make a page cross-origin isolated (`crossOriginIsolated`, SharedArrayBuffer).
/// The app works without them; `--isolated` serves or writes them for the threaded paths.
pub const ISOLATION_HEADERS: [(&str, &str); 2] =
    [("Cross-Origin-Opener-Policy", "same-origin"), ("Cross-Origin-Embedder-Policy", "require-corp")];

/// The files of the simd128 + relaxed-simd worker, next to trunk's `worker_loader.js`,
/// `worker.js` and `worker_bg.wasm` (trunk names workers by their binary, unhashed).
pub const RELAXED_WORKER_FILES: [&str; 3] = ["worker_relaxed_loader.js", "worker_relaxed.js", "worker_relaxed_bg.wasm"];

/// `cargo xtask dist [--isolated]`: the static site in web/dist (release build, wasm-opt'd);
/// with `--isolated`, dist/_headers also asks static hosts for the COOP/COEP headers.
pub fn dist_with(args: &[String]) -> Result<PathBuf> {
    let isolated = flag(args, "--isolated")?;
    let dist = dist()?;
    if isolated {
        let headers = dist.join("_headers");
        let mut text = std::fs::read_to_string(&headers)?;
        text.push_str(
            "\n# cargo xtask dist --isolated: cross-origin isolation (SharedArrayBuffer). Every subresource\n",
        );
        text.push_str("# must then be same-origin or sent with CORS / Cross-Origin-Resource-Policy.\n/*\n");
        for (k, v) in ISOLATION_HEADERS {
            text.push_str(&format!("  {k}: {v}\n"));
        }
        std::fs::write(&headers, text)?;
        eprintln!("dist/_headers asks for cross-origin isolation (COOP same-origin, COEP require-corp)");
    }
    Ok(dist)
}

/// `args` may hold only `name` (a flag); true when it does.
fn flag(args: &[String], name: &str) -> Result<bool> {
    if let Some(other) = args.iter().find(|a| *a != name) {
        bail!("unexpected argument `{other}` (expected at most {name})");
    }
    Ok(!args.is_empty())
}

/// `cargo xtask dist`: the static site in web/dist (release build, wasm-opt'd), both workers.
pub fn dist() -> Result<PathBuf> {
    let path = ensure_tools()?;
    let mut c = trunk(&path);
    c.args(["build", "--release"]);
    eprintln!("$ (cd web && trunk build --release)");
    let status = c.status().context("starting trunk")?;
    if !status.success() {
        bail!("trunk build failed with {status}");
    }
    let dist = root().join("web/dist");
    for f in ["index.html", "worker_loader.js", "worker_bg.wasm", "_headers"].iter().chain(&RELAXED_WORKER_FILES) {
        if !dist.join(f).exists() {
            bail!("trunk's output lacks {f}");
        }
    }
    eprintln!(
        "static site: {} (serve it from any static host; .wasm must be served as application/wasm)",
        dist.display()
    );
    Ok(dist)
}

/// `cargo xtask serve [PORT] [--isolated]`: trunk's development server on 127.0.0.1 (release
/// build: the engine is unusably slow unoptimized), rebuilding on changes. `--isolated` adds
/// the COOP/COEP headers (a generated copy of Trunk.toml with `[serve.headers]`: trunk 0.21
/// has no command-line flag for response headers).
pub fn serve(args: &[String]) -> Result<()> {
    let isolated = args.iter().any(|a| a == "--isolated");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--isolated").collect();
    if rest.len() > 1 || rest.iter().any(|a| a.parse::<u16>().is_err()) {
        bail!("usage: cargo xtask serve [PORT] [--isolated]");
    }
    let path = ensure_tools()?;
    let port = rest.first().map(|p| p.to_string()).unwrap_or_else(|| "8080".into());
    let mut c = trunk(&path);
    if isolated {
        // Next to Trunk.toml, so the relative paths in it (and the hooks' directory) still hold.
        let config = root().join("web/.trunk-isolated.toml");
        let mut text = std::fs::read_to_string(root().join("web/Trunk.toml"))?;
        text.push_str("\n# Generated by `cargo xtask serve --isolated`.\n[serve.headers]\n");
        for (k, v) in ISOLATION_HEADERS {
            text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
        }
        std::fs::write(&config, text)?;
        c.arg("--config").arg(&config);
    }
    c.args(["serve", "--release", "--address", "127.0.0.1", "--port", &port]);
    eprintln!("$ (cd web && trunk serve --release --address 127.0.0.1 --port {port})");
    if isolated {
        eprintln!("with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp");
    }
    eprintln!("open http://127.0.0.1:{port}/ once the build is done");
    let status = c.status().context("starting trunk")?;
    if !status.success() {
        bail!("trunk serve exited with {status}");
    }
    Ok(())
}

/// `cargo xtask relaxed-worker`, run by trunk as a post_build hook (web/Trunk.toml), so
/// `trunk build` and `trunk serve` both get it: the engine worker again, compiled with
/// `+simd128,+relaxed-simd`, wasm-bindgen'd and wasm-opt'd as trunk does its own worker, and
/// put into trunk's staging dir with its own loader. Its own target dir, because different
/// rustflags would otherwise rebuild the shared one each time; cargo makes an unchanged build
/// a no-op, and the bindgen/wasm-opt output is reused while the wasm is unchanged.
pub fn relaxed_worker() -> Result<()> {
    let staging = std::env::var_os("TRUNK_STAGING_DIR")
        .map(PathBuf::from)
        .context("TRUNK_STAGING_DIR is not set: `relaxed-worker` runs as trunk's post_build hook")?;
    let release = std::env::var("TRUNK_PROFILE").as_deref() != Ok("debug");
    let path = ensure_tools()?;
    let profile = if release { "release" } else { "debug" };
    let target_dir = root().join("target/relaxed");
    let mut build = crate::cargo();
    build.args(["build", "--target", "wasm32-unknown-unknown", "-p", "rewardlens-web", "--bin", "worker"]);
    if release {
        build.arg("--release");
    }
    // RUSTFLAGS replaces .cargo/config.toml's target rustflags, so simd128 is named again.
    build.env("CARGO_TARGET_DIR", &target_dir).env("RUSTFLAGS", "-C target-feature=+simd128,+relaxed-simd");
    run(&mut build)?;
    let wasm = target_dir.join("wasm32-unknown-unknown").join(profile).join("worker.wasm");
    let out = target_dir.join("web").join(profile);
    let bindgen = out.join("bindgen");
    let (js, opt) = (bindgen.join("worker_relaxed.js"), out.join("worker_relaxed_bg.wasm"));
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = matches!((modified(&wasm), modified(&opt), modified(&js)), (Some(w), Some(o), Some(_)) if o >= w);
    if !fresh {
        std::fs::create_dir_all(&bindgen)?;
        run(Command::new("wasm-bindgen")
            .env("PATH", &path)
            .args(["--target", "no-modules", "--no-typescript", "--out-name", "worker_relaxed", "--out-dir"])
            .arg(&bindgen)
            .arg(&wasm))?;
        let bound = bindgen.join("worker_relaxed_bg.wasm");
        let tmp = out.join("worker_relaxed_bg.wasm.part");
        if release {
            // The same level as trunk's worker (index.html's data-wasm-opt="3").
            run(Command::new("wasm-opt")
                .env("PATH", &path)
                .args(["-O3", "--enable-simd", "--enable-relaxed-simd"])
                .arg(&bound)
                .arg("-o")
                .arg(&tmp))?;
        } else {
            std::fs::copy(&bound, &tmp)?;
        }
        // Written last and whole: a failed step leaves no output that looks fresh.
        std::fs::rename(&tmp, &opt)?;
    }
    std::fs::copy(&js, staging.join("worker_relaxed.js"))?;
    std::fs::copy(&opt, staging.join("worker_relaxed_bg.wasm"))?;
    // As trunk's data-loader-shim for a no-modules worker.
    std::fs::write(
        staging.join("worker_relaxed_loader.js"),
        "importScripts(\"./worker_relaxed.js\");wasm_bindgen(\"./worker_relaxed_bg.wasm\");",
    )?;
    Ok(())
}

/// Files the browser tests load that are built rather than committed: a GGUF of a fixture.
pub fn browser_fixtures() -> Result<PathBuf> {
    let dir = root().join("target/browser-fixtures");
    std::fs::create_dir_all(&dir)?;
    let gguf = dir.join("qwen3-seq.q8_0.gguf");
    if !gguf.exists() {
        run(Command::new(crate::bin())
            .args(["quantize", "--type", "q8_0", "--model", "tests/fixtures/models/qwen3-seq", "--out"])
            .arg(&gguf))?;
    }
    Ok(dir)
}

/// Chromium and chromedriver must be there for the browser tests (`.ci/run` installs them).
pub fn check_browser() -> Result<()> {
    for (bin, pkg) in [("chromium", "chromium"), ("chromedriver", "chromium-driver")] {
        if version_of(bin).is_none() {
            bail!("`{bin}` not found: install Debian's {pkg} package (`.ci/run` does)");
        }
    }
    Ok(())
}

/// Rows `| tokens | batch | median s | tokens/s |` of `rewardlens bench` output: (tokens, tokens/s).
fn native_rows(out: &str) -> Vec<(usize, f64)> {
    out.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            Some((cells.first()?.parse().ok()?, cells.get(3)?.parse().ok()?))
        })
        .collect()
}

/// `cargo xtask bench-web`: the Skywork-Reward-V2-Qwen3-0.6B shape (random weights) scored on
/// the same token ids natively and in headless Chromium (wasm32 + simd128, one thread), as
/// q8_0 GGUF and as the bf16 checkpoint (f32 in memory). Writes target/bench-web.md.
pub fn bench_web() -> Result<()> {
    use rewardlens_browser_tests::{Browser, StaticServer};
    let dist = dist()?;
    run(crate::cargo().args(["build", "--release", "-p", "rewardlens-cli"]))?;
    let model = crate::skywork_shape()?;
    let models = root().join("target/bench-models");
    let gguf = models.join("skywork-q8_0.gguf");
    if !gguf.is_file() {
        run(Command::new(crate::bin())
            .args(["quantize", "--type", "q8_0", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&gguf))?;
    }
    let iters = "2";
    // f32 in wasm is slow enough that 2048 tokens would take most of an hour.
    let variants = [
        ("q8_0 GGUF", "/models/skywork-q8_0.gguf", gguf.clone(), "128,512,2048"),
        ("f32 (bf16 checkpoint)", "/models/skywork-rand", model, "128,512"),
    ];
    let srv = StaticServer::start(vec![("/models/".into(), models), ("/".into(), dist)], true);
    let mut table = String::from(
        "| weights | tokens | native 1 thread tok/s | native 2 threads tok/s | Chromium wasm tok/s | wasm / native 1 thread |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (label, url, path, lengths) in variants {
        let mut native = Vec::new();
        for threads in ["1", "2"] {
            eprintln!("--- native {label}, {threads} thread(s)");
            let out = Command::new(crate::bin())
                .args(["--threads", threads, "bench", "--lengths", lengths, "--iters", iters, "--model"])
                .arg(&path)
                .current_dir(root())
                .output()?;
            if !out.status.success() {
                bail!("native bench failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            eprint!("{text}");
            native.push(native_rows(&text));
        }
        eprintln!("--- headless Chromium {label}");
        let b = Browser::start();
        b.goto(&format!("{}/?model={url}&bench={lengths}&iters={iters}", srv.url));
        if let Err(e) = b.wait_for_either("#bench", "#error", std::time::Duration::from_secs(3600)) {
            bail!("the browser benchmark failed: {e}");
        }
        let toks = b.attrs("#bench .bench-row", "data-tokens");
        let ms = b.attrs("#bench .bench-row", "data-ms");
        eprintln!("{}", b.text("#model-info"));
        for (i, (t, m)) in toks.iter().zip(&ms).enumerate() {
            let tokens: usize = t.parse()?;
            let wasm = tokens as f64 / (m.parse::<f64>()? / 1000.0);
            let n1 = native[0].get(i).map(|r| r.1).unwrap_or(f64::NAN);
            let n2 = native[1].get(i).map(|r| r.1).unwrap_or(f64::NAN);
            let row = format!("| {label} | {tokens} | {n1:.1} | {n2:.1} | {wasm:.1} | {:.2} |\n", wasm / n1);
            eprint!("{row}");
            table.push_str(&row);
        }
    }
    // WebGPU in the same Chromium: here a software adapter (SwiftShader), so a check that the
    // path runs end to end, not a GPU speed figure. f16 and q8_0 weights from the checkpoint.
    table.push_str(
        "\n| WebGPU weights | tokens | Chromium WebGPU tok/s | ms per response | adapter |\n|---|---:|---:|---:|---|\n",
    );
    for storage in ["auto", "q8_0"] {
        eprintln!("--- headless Chromium WebGPU, storage {storage}");
        let b = Browser::start_with_webgpu();
        let url = format!("{}/?model=/models/skywork-rand&backend=webgpu&storage={storage}&bench=128&iters=1", srv.url);
        b.goto(&url);
        if let Err(e) = b.wait_for_either("#bench", "#error", std::time::Duration::from_secs(3600)) {
            bail!("the WebGPU benchmark failed: {e}");
        }
        let backend = b.text("#model-backend");
        for (t, m) in b.attrs("#bench .bench-row", "data-tokens").iter().zip(b.attrs("#bench .bench-row", "data-ms")) {
            let (tokens, ms): (usize, f64) = (t.parse()?, m.parse()?);
            let weights = if storage == "auto" { "f16" } else { storage };
            let row =
                format!("| {weights} | {tokens} | {:.1} | {ms:.0} | {backend} |\n", tokens as f64 / (ms / 1000.0));
            eprint!("{row}");
            table.push_str(&row);
        }
    }
    println!("{table}");
    std::fs::write(root().join("target/bench-web.md"), &table)?;
    Ok(())
}
