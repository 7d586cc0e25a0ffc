// Compile-only usage of reward-scorer.d.ts (tsc --strict --noEmit): if the declarations and this
// documented usage drift apart, `cargo xtask test` fails.
import { RewardScorer, scorerMarkup, type ScoreResult, type ErrorDetail } from "./reward-scorer.js";

export async function rankAnswers(prompt: string, responses: string[]): Promise<number[]> {
  const scorer = await RewardScorer.load({
    model: "Skywork/Skywork-Reward-V2-Qwen3-0.6B",
    revision: "main",
    backend: "auto",
    onProgress: (p) => console.log(`${p.stage}: ${p.done}/${p.total ?? "?"}`),
  });
  const out: ScoreResult = await scorer.score({ prompt, responses });
  const conv = await scorer.score(
    { conversation: [{ role: "user", content: prompt }, { role: "assistant", content: responses[0] }] },
    { steps: "prefix", split: { by: "separator", value: ";" }, threshold: 0.2 },
  );
  console.log(conv.score, conv.step_scores, scorer.info.backend);
  return out.ranking ?? [];
}

/** A multimodal reward model behind a vLLM endpoint: the picture goes with the prompt. */
export async function rankCaptions(picture: string, captions: string[]): Promise<number[]> {
  const scorer = await RewardScorer.load({ endpoint: "http://127.0.0.1:8000", protocol: "vllm", model: "vl-rm" });
  const out = await scorer.score({ prompt: "Describe the picture.", images: [picture], responses: captions });
  return out.ranking ?? [];
}

export function watch(): void {
  const el = document.querySelector("reward-scorer");
  if (!el) return;
  el.responses = ["A", "B"];
  el.images = ["data:image/png;base64,iVBORw0KGgo="];
  el.mode = "steps";
  el.addEventListener("reward-scored", (e) => console.log(e.detail.scores, e.detail.backend, e.detail.timing.ms));
  el.addEventListener("reward-error", (e: CustomEvent<ErrorDetail>) => console.warn(e.detail.code, e.detail.message));
  el.addEventListener("reward-progress", (e) => console.log(e.detail.stage));
  void el.score().then((r) => r?.ranking);
  // A job that takes too long can be cancelled; so can an element's scoring.
  const stop = new AbortController();
  setTimeout(() => stop.abort(), 10_000);
  void RewardScorer.load({ model: "owner/name", signal: stop.signal })
    .then((s) => s.score({ prompt: "p", responses: ["r"] }, { signal: stop.signal }))
    .catch((e: ErrorDetail) => e.code === "cancelled");
  el.cancel();
  const html: string = scorerMarkup({ model: "owner/name", prompt: "p", responses: ["it's <b>fine</b>"] });
  console.log(html);
  const created = document.createElement("reward-scorer");
  created.model = "https://example.org/model.gguf";
}
