//! `cargo xtask bench-kernels`: rewardlens-kernels' GEMMs alone in headless Chromium, once per
//! engine worker build (simd128, simd128 + relaxed-simd), in GMAC/s: the shapes of the 0.6B's
//! linear layers (int8, Q8_0's per-group scales and per-channel ones) and of its attention (f32).
//! A bare wasm module (tests/bench/kernels) and a page that times it; nothing else runs.

use crate::{cargo, root, run};
use anyhow::{bail, Context, Result};
use rewardlens_browser_tests::{Browser, StaticServer};
use serde_json::json;
use std::time::Duration;

/// (name, target features) of the two worker builds.
const BUILDS: [(&str, &str); 2] = [("simd128", "+simd128"), ("relaxed-simd", "+simd128,+relaxed-simd")];

pub fn bench_kernels() -> Result<()> {
    let www = root().join("target/kernel-bench/www");
    std::fs::create_dir_all(&www)?;
    std::fs::copy(root().join("tests/bench/kernels/kernels.html"), www.join("kernels.html"))?;
    for (name, features) in BUILDS {
        let target_dir = root().join("target/kernel-bench").join(name);
        run(cargo()
            .args(["build", "--release", "--target", "wasm32-unknown-unknown", "--manifest-path"])
            .arg(root().join("tests/bench/kernels/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", format!("-C target-feature={features}")))?;
        let wasm = target_dir.join("wasm32-unknown-unknown/release/kernel_bench.wasm");
        std::fs::copy(&wasm, www.join(format!("{name}.wasm")))
            .with_context(|| format!("copying {}", wasm.display()))?;
    }
    let srv = StaticServer::start(vec![("/".into(), www)], false);
    let browser = Browser::start();
    browser.goto(&format!("{}/kernels.html", srv.url));
    browser.set_script_timeout(Duration::from_secs(600));
    let builds: Vec<&str> = BUILDS.iter().map(|b| b.0).collect();
    let rows = browser.script_async(
        "const done = arguments[arguments.length - 1];
         benchKernels(arguments[0]).then(done, e => done({ error: String(e) }));",
        json!([builds]),
    );
    let Some(rows) = rows.as_array() else { bail!("kernel bench page: {rows}") };
    println!("Kernels alone in headless Chromium, GMAC/s (best of 3 after a warm-up; `cargo xtask bench-kernels`):\n");
    println!("| build | kernel | m × n × k | GMAC/s |\n| --- | --- | --- | ---: |");
    for r in rows {
        let f = |k: &str| r[k].as_u64().unwrap_or(0);
        let s = |k: &str| r[k].as_str().unwrap_or("?").to_string();
        let g = r["gmacs"].as_f64().unwrap_or(f64::NAN);
        let digits = if g < 10.0 { 2 } else { 1 };
        println!("| {} | {} | {} × {} × {} | {g:.digits$} |", s("build"), s("kernel"), f("m"), f("n"), f("k"));
    }
    Ok(())
}
