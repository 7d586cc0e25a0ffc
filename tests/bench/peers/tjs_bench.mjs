// transformers.js (npm @huggingface/transformers, onnxruntime-node) on the same token ids as
// `rewardlens bench` (rewardlens_models::synthetic::bench_ids_shared), printing one JSON line per
// workload: {"peer", "dtype", "threads", "tokens", "batch", "median_ms", "load_ms",
// "first_ms" (process start to the first scores), "rss_mib" (peak)}.
// A workload is TOKENSxBATCH[:SHARED] (SHARED leading tokens common to every row).
//
//   node tests/bench/peers/tjs_bench.mjs MODEL_DIR q8|fp32 THREADS 64x1,512x4:384 ITERS [WARMUP]
import path from "node:path";

const [dir, dtype = "q8", threads = "1", workloads = "64x1", iters = "3", warmup = "1"] = process.argv.slice(2);
const tjs = await import(process.env.TJS_MODULE || "@huggingface/transformers");
const { AutoModelForSequenceClassification, PreTrainedModel, Tensor, env } = tjs;
env.allowRemoteModels = false;
env.localModelPath = path.dirname(path.resolve(dir));
const t0 = performance.now();
const opts = { dtype, device: "cpu", session_options: { intraOpNumThreads: Number(threads), interOpNumThreads: 1 } };
// transformers.js has no Qwen3ForSequenceClassification class; its base class runs the exported
// graph as it is (input_ids, attention_mask, position_ids -> logits).
let model;
let loader = "AutoModelForSequenceClassification";
try {
  model = await AutoModelForSequenceClassification.from_pretrained(path.basename(dir), opts);
} catch (e) {
  loader = "PreTrainedModel";
  model = await PreTrainedModel.from_pretrained(path.basename(dir), opts);
}
const loadMs = performance.now() - t0;
const vocab = model.config.vocab_size;
const benchIds = (n, row) => Array.from({ length: n }, (_, i) => ((i * 7919 + row * 104729 + 13) % (vocab - 1000)) + 100);
const sharedIds = (n, row, shared) => [...benchIds(n, 0).slice(0, shared), ...benchIds(n, row).slice(shared)];
let firstMs = null;

for (const w of workloads.split(",")) {
  const [nb, sharedArg = "0"] = w.split(":");
  const [n, b] = nb.split("x").map(Number);
  const shared = Math.min(Number(sharedArg), n);
  const ids = [];
  for (let r = 0; r < b; r++) ids.push(...sharedIds(n, r, shared));
  const input_ids = new Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [b, n]);
  const attention_mask = new Tensor("int64", new BigInt64Array(b * n).fill(1n), [b, n]);
  const pos = [];
  for (let r = 0; r < b; r++) for (let i = 0; i < n; i++) pos.push(BigInt(i));
  const position_ids = new Tensor("int64", BigInt64Array.from(pos), [b, n]);
  const feeds = { input_ids, attention_mask };
  if (model.sessions.model.inputNames.includes("position_ids")) feeds.position_ids = position_ids;
  const run = () => (loader === "PreTrainedModel" ? model.sessions.model.run(Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, v.ort_tensor ?? v]))) : model(feeds));
  const times = [];
  for (let i = 0; i < Number(warmup) + Number(iters); i++) {
    const t = performance.now();
    await run();
    if (i >= Number(warmup)) times.push(performance.now() - t);
    // performance.now() counts from the process start.
    firstMs ??= performance.now();
  }
  times.sort((a, c) => a - c);
  const rss = process.resourceUsage().maxRSS / 1024;
  console.log(JSON.stringify({ peer: `transformers.js ${tjs.env.version} (Node, onnxruntime-node; ${loader})`, dtype, threads: Number(threads),
    tokens: n, batch: b, median_ms: times[Math.floor(times.length / 2)], load_ms: loadMs, first_ms: firstMs, rss_mib: Math.round(rss) }));
}
