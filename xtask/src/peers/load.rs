//! `rewardlens serve` under concurrent load: CLIENTS requests at once, each one response of
//! 512 tokens to the same prompt (384 shared tokens, as in the 512 x 16 workload), posted as
//! token ids to vLLM's `/classify`. The server's batcher gathers them into one set of batches,
//! so what this measures is the whole path a remote user sees: HTTP, queueing, batching, the
//! forward pass. Two rounds after a warm-up request; latencies are per request.

use crate::{bin, root};
use anyhow::{bail, Context, Result};
use rewardlens_models::synthetic::bench_ids_shared;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CLIENTS: usize = 16;
pub const TOKENS: usize = 512;

pub struct LoadResult {
    /// Wall seconds per round, from the first request sent to the last answer.
    pub rounds: Vec<f64>,
    /// Every request's latency, all rounds.
    pub latencies: Vec<f64>,
    pub peak_mib: Option<f64>,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn serve_under_load(threads: &str, model: &Path) -> Result<Option<LoadResult>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = Server(
        Command::new(bin())
            .current_dir(root())
            .args(["--threads", threads, "serve", "--port", &port.to_string(), "--model"])
            .arg(model)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting rewardlens serve")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(1800)).build();
    let deadline = Instant::now() + Duration::from_secs(300);
    while agent.get(&format!("{base}/health")).call().is_err() {
        if Instant::now() > deadline {
            bail!("rewardlens serve did not answer /health within 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json"))?)?;
    let vocab = config["vocab_size"].as_u64().context("vocab_size")? as usize;
    let shared = super::shared_prompt(TOKENS, CLIENTS);
    let bodies: Vec<serde_json::Value> =
        (0..CLIENTS).map(|r| serde_json::json!({ "input": bench_ids_shared(TOKENS, r, vocab, shared) })).collect();
    let post = |body: &serde_json::Value| -> Result<()> {
        let v: serde_json::Value = agent
            .post(&format!("{base}/classify"))
            .send_json(body.clone())
            .map_err(|e| anyhow::anyhow!("POST /classify: {e}"))?
            .into_json()?;
        if v["data"][0]["probs"].as_array().is_none_or(|p| p.is_empty()) {
            bail!("/classify answered without scores: {v}");
        }
        Ok(())
    };
    eprintln!("--- rewardlens serve: warm-up request");
    post(&bodies[0])?;
    let mut result = LoadResult { rounds: Vec::new(), latencies: Vec::new(), peak_mib: None };
    for round in 1..=2 {
        eprintln!("--- rewardlens serve: round {round}, {CLIENTS} concurrent requests of {TOKENS} tokens");
        let start = Instant::now();
        let latencies: Vec<Result<f64>> = std::thread::scope(|s| {
            let handles: Vec<_> = bodies
                .iter()
                .map(|b| {
                    s.spawn(|| {
                        let t = Instant::now();
                        post(b).map(|_| t.elapsed().as_secs_f64())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("client thread")).collect()
        });
        result.rounds.push(start.elapsed().as_secs_f64());
        for l in latencies {
            result.latencies.push(l?);
        }
    }
    result.peak_mib = super::vm_hwm_mib(&server.0.id().to_string());
    Ok(Some(result))
}
