// Types of reward-scorer.js: the <reward-scorer> element, its events, and the RewardScorer API.
// Checked by `cargo xtask test` (tsc --strict against web/component/example.ts).

/** Where the model comes from and where it runs. */
export interface LoadOptions {
  /** A Hugging Face repo id (`owner/name`), or the URL of a checkpoint folder or GGUF file. */
  model?: string;
  /** Hub revision: branch, tag or commit (default `main`). */
  revision?: string;
  /** Score on a remote endpoint instead (vLLM, NIM, OpenRLHF, TEI). */
  endpoint?: string;
  protocol?: "vllm" | "vllm-classify" | "nim" | "openrlhf" | "tei";
  /** The served model's name on the endpoint (default: `model` when it is not a repo id). */
  remoteModel?: string;
  apiKey?: string;
  /** How the weights are held: `auto`, `f32`, `q8_0`, `q4_k`. */
  storage?: "auto" | "f32" | "q8_0" | "q4_k";
  /** `auto` (WebGPU when available), `webgpu`, `cpu`. */
  backend?: "auto" | "webgpu" | "cpu";
  /** A Hugging Face token for gated repos (kept in memory). */
  token?: string;
  /** A Hub mirror with huggingface.co's URL layout (it gets `token`, as huggingface.co does). */
  hub?: string;
  onProgress?: (p: ProgressDetail) => void;
  /** Cancels the load (rejects with code `cancelled`; a stuck engine is restarted after 3 s). */
  signal?: AbortSignal;
}

export interface Message {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  /** Images before the text: data URLs, or http(s) URLs the page may fetch (CORS). Only a
   * multimodal reward model behind `endpoint` scores them; a model in the tab refuses them. */
  images?: string[];
}

export type ScoreInput =
  | { prompt: string; responses: string[]; /** Images with the prompt (see `Message.images`). */ images?: string[] }
  | { conversation: Message[] };

/** How answers split into steps (the CLI's --step-split). */
export type StepSplit =
  | { by: "blank_lines" }
  | { by: "lines" }
  | { by: "step_markers" }
  | { by: "separator"; value: string }
  | { by: "regex"; value: string };

export interface ScoreOptions {
  /** Step rewards: true (the model's convention, else prefix scores) or a convention name. */
  steps?: boolean | "qwen" | "shepherd" | "value" | "prefix";
  split?: StepSplit;
  /** `first_bad_step` is the first step below this (default 0.5). */
  threshold?: number;
  /** Per-token scores of the answer. */
  tokens?: boolean;
  /** Cut over-long inputs instead of failing. */
  truncate?: boolean;
  onProgress?: (p: ProgressDetail) => void;
  /** Cancels the job (rejects with code `cancelled`; a stuck engine is restarted after 3 s). */
  signal?: AbortSignal;
}

export interface Timing {
  /** The whole job, in milliseconds. */
  ms: number;
  per_response_ms: number[];
  tokens: number[];
}

/** The CLI's output shape, plus the backend and timing. */
export interface ScoreResult {
  prompt?: string;
  responses?: string[];
  /** One per response, in input order. */
  scores?: number[];
  /** Response indices, best first. */
  ranking?: number[];
  conversation?: Message[];
  score?: number;
  /** Multi-label models: `{label: value}` per response. */
  attributes?: Record<string, number> | Record<string, number>[];
  step_convention?: string;
  steps?: string[] | (string[] | null)[];
  step_scores?: number[] | (number[] | null)[];
  first_bad_step?: number | null | (number | null)[];
  step_error?: string;
  /** Tokens cut off the end (`truncate: true` only, when some were): per response, or one number. */
  truncated_tokens?: number | number[];
  /** `WebGPU: …`, `WASM CPU (simd128)` or `Remote (…)`. */
  backend: string;
  timing: Timing;
  model?: string;
}

/** What the worker says about a loaded model. */
export interface ModelInfo {
  source: string;
  architecture: string;
  labels: string[];
  parameters: number;
  storage: string;
  backend: string;
  step_convention?: string | null;
  gpu_fallback_reason?: string | null;
  fallback_reason?: string | null;
  [key: string]: unknown;
}

export interface ProgressDetail {
  stage: string;
  done: number;
  total: number | null;
  /** Bytes (downloads) or items per second. */
  rate: number;
}

export interface ErrorDetail {
  /**
   * e.g. `not_found`, `cors`, `corrupted`, `too_large`, `unsupported_architecture`, `no_model`,
   * `bad_attribute` (an attribute that is not one of its choices), `cancelled`, `engine_restarted`.
   */
  code: string;
  message: string;
}

export declare class RewardScorer {
  readonly options: LoadOptions;
  info: ModelInfo;
  /** Loads the model (once per page: later calls with the same options reuse it). */
  static load(options?: LoadOptions): Promise<RewardScorer>;
  score(input: ScoreInput, options?: ScoreOptions): Promise<ScoreResult>;
}

/** `s` with `& < > " '` escaped (HTML text and quoted attribute values). */
export declare function escapeHtml(s: string): string;
/** Escaped `<reward-scorer>` markup with `<reward-response>` children, for tools that take HTML strings. */
export declare function scorerMarkup(o: { model: string; prompt?: string; responses: string[]; mode?: string }): string;

export declare class RewardScorerElement extends HTMLElement {
  model: string;
  revision: string;
  endpoint: string;
  protocol: string;
  prompt: string;
  /** Images with the prompt (the `images` attribute: a JSON list of data URLs or http(s) URLs). */
  images: string[];
  responses: string[];
  mode: "responses" | "steps" | "compact";
  /** The last `reward-scored` detail. */
  readonly result: ScoreResult | null;
  score(): Promise<ScoreResult | null>;
  load(): Promise<ModelInfo>;
  /** Stops this element's scoring; `reward-error` fires with code `cancelled`. */
  cancel(): void;
  addEventListener<K extends keyof RewardScorerEventMap>(
    type: K,
    listener: (this: RewardScorerElement, ev: RewardScorerEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

export declare class RewardResponseElement extends HTMLElement {}

export interface RewardScorerEventMap extends HTMLElementEventMap {
  "reward-progress": CustomEvent<ProgressDetail>;
  "reward-scored": CustomEvent<ScoreResult>;
  "reward-error": CustomEvent<ErrorDetail>;
}

declare global {
  interface HTMLElementTagNameMap {
    "reward-scorer": RewardScorerElement;
    "reward-response": RewardResponseElement;
  }
  interface HTMLElementEventMap {
    "reward-progress": CustomEvent<ProgressDetail>;
    "reward-scored": CustomEvent<ScoreResult>;
    "reward-error": CustomEvent<ErrorDetail>;
  }
}
