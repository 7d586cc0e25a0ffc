// rewardlens for any page: the <reward-scorer> custom element and the RewardScorer JS API.
//
//   <script type="module" src="https://your.host/rewardlens/reward-scorer.js"></script>
//   <reward-scorer model="Skywork/Skywork-Reward-V2-Qwen3-0.6B" prompt="2 + 2?">
//     <reward-response>4</reward-response><reward-response>5</reward-response>
//   </reward-scorer>
//
// Markup made from data (task fields, user text) must be escaped: `scorerMarkup()` below builds
// it, or set the `responses` property from script. Never paste text into `responses='[...]'`.
//
// Both talk to the web app's own engine (the trunk-built Web Worker next to this file: the same
// wasm, the same JSON messages as the app), one worker per page shared by every element and
// scorer, so a model downloads once (and is then served from the browser's Cache API).
// No framework, no build step: this file is copied into `cargo xtask dist` as it is.

import "./kernel-probe.js";

const BASE = new URL(".", import.meta.url);
// The engine worker build this browser runs best (simd128, or simd128 + relaxed-simd).
const KERNEL = globalThis.rewardlensProbeKernel(null, BASE.href);
const DEBOUNCE_MS = 150;
// How long a cancelled job may take to stop by itself; a worker still busy after that (one long
// synchronous step: a template render, a forward pass) is replaced.
const CANCEL_GRACE_MS = 3000;

// The values the engine accepts; anything else is refused here, for that element alone.
const CHOICES = {
  storage: ["auto", "f32", "q8_0", "q4_k"],
  backend: ["auto", "webgpu", "cpu"],
  protocol: ["vllm", "vllm-classify", "nim", "openrlhf", "tei"],
  mode: ["responses", "compact", "steps"],
};

/** Throws `{ code: "bad_attribute" }` naming the first option that is not one of its choices. */
function checkOptions(o) {
  for (const [name, allowed] of Object.entries(CHOICES)) {
    const v = o[name];
    if (v !== undefined && v !== null && v !== "" && !allowed.includes(v)) {
      throw { code: "bad_attribute", message: `${name}="${v}" is not one of ${allowed.join(", ")}` };
    }
  }
  if (o.threshold !== undefined && o.threshold !== null && !Number.isFinite(Number(o.threshold))) {
    throw { code: "bad_attribute", message: `threshold="${o.threshold}" is not a number` };
  }
}

/** The page's one engine: a worker, its queue of jobs, and which model it holds. */
class Engine {
  constructor() {
    this.nextId = 1;
    this.pending = new Map();
    this.loadedKey = null;
    this.loadedInfo = null;
    // Jobs run one after another: a load and the scoring that needs it stay together.
    this.chain = Promise.resolve();
    // The worker is started from a blob so that this file may be served from another origin
    // than the page (a Worker's script must be same-origin); the blob imports the real files.
    // A wasm that fails to start (missing, blocked by CORS) is reported as a failure of job 0.
    const src = `importScripts(${JSON.stringify(KERNEL.script)});` +
      `wasm_bindgen(${JSON.stringify(KERNEL.wasm)}).catch((e) => postMessage(JSON.stringify(` +
      `{ type: "failed", id: 0, error: { code: "engine", message: "the engine did not start: " + e } })));`;
    const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
    this.started = false;
    this.ready = new Promise((resolve, reject) => {
      this.worker = new Worker(url);
      // Everything waiting fails with `err`; the next call starts a fresh engine.
      const fatal = (this.stop = (err, only) => {
        reject(err);
        for (const [id, p] of this.pending) p.reject(id === only ? { code: "cancelled", message: "cancelled" } : err);
        this.pending.clear();
        if (engine === this) engine = null;
        this.worker.terminate();
      });
      this.worker.onerror = (e) => fatal({ code: "engine", message: `the engine stopped: ${e.message || "worker error"}` });
      this.worker.onmessage = (ev) => {
        const msg = JSON.parse(ev.data);
        if (msg.type === "ready") {
          this.started = true;
          return resolve();
        }
        // Job 0 before `ready`: the engine could not start. Requests are always answered with
        // their own id, so a bad one fails alone.
        if (msg.type === "failed" && msg.id === 0 && !this.started) return fatal(msg.error);
        const p = this.pending.get(msg.id);
        if (!p) return;
        if (msg.type === "progress") return p.progress && p.progress(msg);
        this.pending.delete(msg.id);
        if (msg.type === "failed") p.reject(msg.error);
        else if (msg.type === "cancelled") p.reject({ code: "cancelled", message: "cancelled" });
        else p.resolve(msg);
      };
    });
  }

  /** Sends one job; `signal` (an AbortSignal) cancels it, restarting a worker that is stuck. */
  request(body, progress, signal) {
    return this.ready.then(() => new Promise((resolve, reject) => {
      if (signal && signal.aborted) return reject({ code: "cancelled", message: "cancelled" });
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject, progress });
      this.worker.postMessage({ msg: JSON.stringify({ ...body, id }), files: [] });
      if (signal) {
        signal.addEventListener("abort", () => {
          if (!this.pending.has(id)) return;
          this.worker.postMessage({ msg: JSON.stringify({ type: "cancel", id }), files: [] });
          setTimeout(() => {
            if (this.pending.has(id)) {
              this.stop({ code: "engine_restarted", message: "the engine was restarted to cancel another job" }, id);
            }
          }, CANCEL_GRACE_MS);
        }, { once: true });
      }
    }));
  }

  /** Runs `job` after every job queued before it. */
  serial(job) {
    const run = this.chain.then(job, job);
    this.chain = run.catch(() => {});
    return run;
  }

  /** Makes `options`' model the loaded one (a no-op when it already is). */
  async ensure(options, progress, signal) {
    const key = JSON.stringify(loadKey(options));
    if (this.loadedKey === key) return this.loadedInfo;
    this.loadedKey = null;
    const msg = await this.request(loadMessage(options), progress, signal);
    this.loadedKey = key;
    this.loadedInfo = msg.info;
    return msg.info;
  }
}

let engine = null;

/**
 * Runs `job(engine)` in turn on the page's engine. A job queued behind one that restarted the
 * engine moves to the end of the fresh engine's queue: it neither talks to the stopped worker
 * nor runs between a load and the scoring queued after it there.
 */
function inTurn(job) {
  const e = sharedEngine();
  return e.serial(() => (engine === e ? job(e) : inTurn(job)));
}

function sharedEngine() {
  if (!engine) engine = new Engine();
  return engine;
}

function loadKey(o) {
  return [o.model, o.revision, o.endpoint, o.protocol, o.remoteModel, o.apiKey, o.token, o.storage, o.backend, o.hub]
    .map((v) => v || "");
}

/** A model attribute as the worker takes it: Hub repo ids as they are, paths and URLs absolute. */
function modelSource(model, revision) {
  const m = (model || "").trim();
  if (!m) throw { code: "bad_source", message: "no model given: set the model attribute to a Hub repo id or a URL" };
  const path = m.startsWith("/") || m.startsWith("./") || m.startsWith("../") || m.includes("://");
  if (!path && /^[A-Za-z0-9_-][A-Za-z0-9._-]*\/[A-Za-z0-9._-]+$/.test(m)) {
    return { kind: "hub", repo: m, revision: revision || "main" };
  }
  return { kind: "url", url: new URL(m, document.baseURI).href };
}

function loadMessage(o) {
  const remote = o.endpoint ? {
    endpoint: new URL(o.endpoint, document.baseURI).href,
    protocol: o.protocol || "vllm",
    model: o.remoteModel || (o.model && !o.model.includes("/") ? o.model : "") || "",
    api_key: o.apiKey || "",
  } : null;
  const source = o.model ? modelSource(o.model, o.revision) : { kind: "url", url: remote ? remote.endpoint : "" };
  return {
    type: "load",
    source,
    storage: o.storage || "auto",
    backend: o.backend || "auto",
    token: o.token || null,
    // Set by the embedding page's own code (never by an attribute), so it may get the token.
    hub: o.hub || null,
    hub_from_link: false,
    remote,
    remote_only: !!remote,
  };
}

/**
 * A worker result as the component gives it: the record the worker shaped as `rewardlens score`
 * writes it (input, scores, ranking, attributes, steps, first_bad_step), plus backend and timing.
 */
function withTiming(msg, info) {
  const results = msg.output.results;
  return {
    ...msg.output.record,
    backend: msg.backend,
    timing: { ms: msg.ms, per_response_ms: results.map((r) => r.ms), tokens: results.map((r) => r.tokens) },
    model: info ? info.source : undefined,
  };
}

function isStringList(v) {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}

function asError(e) {
  if (e && e.code && e.message) return e;
  return { code: "engine", message: String((e && e.message) || e) };
}

/**
 * The JavaScript API: `const s = await RewardScorer.load({ model, revision, endpoint, protocol });`
 * then `await s.score({ prompt, responses })` or `await s.score({ conversation })`.
 */
export class RewardScorer {
  constructor(options, info) {
    this.options = { ...options };
    this.info = info;
  }

  /** Loads (or reuses) the model; rejects with `{ code, message }`; `options.signal` cancels. */
  static async load(options = {}) {
    checkOptions(options);
    const info = await inTurn((e) => e.ensure(options, options.onProgress, options.signal));
    return new RewardScorer(options, info);
  }

  /**
   * Scores `{ prompt, responses }` or `{ conversation }`; `steps: true` (or a convention name)
   * adds step rewards, as `rewardlens score` does.
   */
  async score(input, opts = {}) {
    checkOptions(this.options);
    const job = input.conversation
      ? { kind: "conversation", messages: input.conversation }
      : { kind: "responses", prompt: input.prompt || "", images: input.images || [], responses: input.responses || [] };
    if (!input.conversation && !Array.isArray(input.responses)) {
      throw { code: "no_input", message: "score() takes { prompt, responses: [...] } or { conversation: [...] }" };
    }
    if (job.images && !isStringList(job.images)) {
      throw { code: "image", message: "images must be a list of data URLs or http(s) URLs" };
    }
    const stepsOpt = opts.steps ?? (this.info && this.info.step_convention ? true : false);
    const steps = stepsOpt ? {
      convention: typeof stepsOpt === "string" ? stepsOpt : null,
      split: opts.split || { by: "blank_lines" },
      tokens: !!opts.tokens,
      threshold: Number(opts.threshold ?? 0.5),
    } : null;
    return inTurn(async (e) => {
      const info = await e.ensure(this.options, opts.onProgress, opts.signal);
      this.info = info;
      const msg = await e.request({ type: "score", job, truncate: !!opts.truncate, steps }, opts.onProgress, opts.signal);
      return withTiming(msg, info);
    });
  }
}

const STYLE = `
:host { display: block; font-family: var(--reward-font, system-ui, sans-serif); color: var(--reward-text, #1b1b1b);
  --good: var(--reward-good, #2e7d32); --bad: var(--reward-bad, #c62828); }
:host([hidden]) { display: none; }
.status { font-size: .85em; color: var(--reward-muted, #555); min-height: 1.2em; }
.error { color: var(--bad); }
ol { list-style: none; margin: 0; padding: 0; }
li { display: grid; grid-template-columns: 2.6em 5.5em 1fr; gap: .5em; align-items: center; padding: .2em 0; }
.rank { font-weight: bold; }
.best .rank::after { content: " ★"; color: var(--good); }
.bar { height: .7em; background: var(--reward-bar-track, #e0e0e0); border-radius: 3px; overflow: hidden; }
.bar > span { display: block; height: 100%; background: var(--reward-bar, var(--good)); }
.text { grid-column: 3; font-size: .85em; color: var(--reward-muted, #555); white-space: pre-wrap; }
.steps { grid-column: 1 / -1; display: flex; flex-wrap: wrap; gap: 3px; }
.step { min-width: 2.8em; text-align: center; border-radius: 4px; padding: 1px 4px; font-size: .85em;
  border: 1px solid rgba(0,0,0,.15); }
.step:focus { outline: 2px solid var(--reward-focus, #1565c0); }
.step.bad { border: 2px solid var(--bad); font-weight: bold; }
.compact { font-size: .9em; }
`;

/** `<reward-scorer>`: scores its responses with the page's shared engine and shows them. */
export class RewardScorerElement extends HTMLElement {
  static get observedAttributes() {
    return ["model", "revision", "endpoint", "protocol", "prompt", "images", "responses", "mode", "storage", "backend", "threshold"];
  }

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this.shadowRoot.innerHTML = `<style>${STYLE}</style><div part="container" class="container">` +
      `<div part="status" class="status" role="status" aria-live="polite"></div>` +
      `<div part="results" class="results"></div></div>`;
    this._status = this.shadowRoot.querySelector(".status");
    this._results = this.shadowRoot.querySelector(".results");
    this._props = {};
    this._timer = null;
    this._last = null;
    this._observer = new MutationObserver(() => this._schedule());
  }

  connectedCallback() {
    this._observer.observe(this, { childList: true, subtree: true, characterData: true });
    this._schedule();
  }

  disconnectedCallback() {
    this._observer.disconnect();
    clearTimeout(this._timer);
  }

  attributeChangedCallback(name, old, value) {
    if (old !== value) this._schedule();
  }

  // Properties mirror the attributes; `responses` takes an array.
  get model() { return this._props.model ?? this.getAttribute("model") ?? ""; }
  set model(v) { this._props.model = v; this._schedule(); }
  get revision() { return this._props.revision ?? this.getAttribute("revision") ?? ""; }
  set revision(v) { this._props.revision = v; this._schedule(); }
  get endpoint() { return this._props.endpoint ?? this.getAttribute("endpoint") ?? ""; }
  set endpoint(v) { this._props.endpoint = v; this._schedule(); }
  get protocol() { return this._props.protocol ?? this.getAttribute("protocol") ?? ""; }
  set protocol(v) { this._props.protocol = v; this._schedule(); }
  get prompt() { return this._props.prompt ?? this.getAttribute("prompt") ?? ""; }
  set prompt(v) { this._props.prompt = v; this._schedule(); }
  get images() {
    if (this._props.images) return this._props.images;
    const attr = this.getAttribute("images");
    if (attr === null) return [];
    const parsed = JSON.parse(attr);
    if (!isStringList(parsed)) throw new Error("not a list of strings");
    return parsed;
  }
  set images(v) { this._props.images = v; this._schedule(); }
  get mode() { return this._props.mode ?? this.getAttribute("mode") ?? "responses"; }
  set mode(v) { this._props.mode = v; this._schedule(); }
  get responses() {
    if (this._props.responses) return this._props.responses;
    const attr = this.getAttribute("responses");
    if (attr !== null) {
      const parsed = JSON.parse(attr);
      if (!Array.isArray(parsed) || parsed.some((r) => typeof r !== "string")) throw new Error("not a list of strings");
      return parsed;
    }
    return [...this.querySelectorAll("reward-response")].map((r) => r.textContent.trim());
  }
  set responses(v) { this._props.responses = v; this._schedule(); }
  /** The last `reward-scored` detail. */
  get result() { return this._last; }

  _options() {
    const o = {
      model: this.model, revision: this.revision, endpoint: this.endpoint, protocol: this.protocol,
      storage: this.getAttribute("storage") || undefined, backend: this.getAttribute("backend") || undefined,
    };
    checkOptions({ ...o, mode: this.mode, threshold: this.getAttribute("threshold") ?? undefined });
    return o;
  }

  /** Stops this element's scoring (a stuck engine is restarted); it fires `reward-error` with code `cancelled`. */
  cancel() {
    if (this._abort) this._abort.abort();
  }

  _schedule() {
    clearTimeout(this._timer);
    if (!this.isConnected) return;
    this._timer = setTimeout(() => this.score().catch(() => {}), DEBOUNCE_MS);
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  _progress() {
    return (p) => {
      const detail = { stage: p.stage, done: p.done, total: p.total ?? null, rate: p.rate };
      this._status.textContent = p.total ? `${p.stage}: ${p.done} / ${p.total}` : `${p.stage}…`;
      this._emit("reward-progress", detail);
    };
  }

  _fail(e) {
    const err = asError(e);
    if (err.code === "cancelled") {
      this._status.textContent = "cancelled";
      this._emit("reward-error", err);
      throw err;
    }
    this._status.textContent = "";
    this._results.replaceChildren(el("p", { class: "error", part: "error", role: "alert" }, `${err.message}`));
    this._emit("reward-error", err);
    throw err;
  }

  /** Loads the model without scoring. */
  async load() {
    try {
      const s = await RewardScorer.load({ ...this._options(), onProgress: this._progress() });
      this._status.textContent = `${s.info.source} loaded`;
      return s.info;
    } catch (e) {
      return this._fail(e);
    }
  }

  /** Scores now (attribute and property changes also re-score, debounced). */
  async score() {
    clearTimeout(this._timer);
    let responses, images;
    try {
      responses = this.responses;
    } catch (e) {
      return this._fail({ code: "bad_responses", message: `the responses attribute must be a JSON list of strings (${e.message})` });
    }
    try {
      images = this.images;
    } catch (e) {
      return this._fail({ code: "image", message: `the images attribute must be a JSON list of data URLs or URLs (${e.message})` });
    }
    if (!this.model && !this.endpoint) return this._fail({ code: "no_model", message: "set the model attribute" });
    let options;
    try {
      options = this._options();
    } catch (e) {
      return this._fail(e);
    }
    if (!responses.length) {
      this._results.replaceChildren();
      this._status.textContent = "no responses to score";
      return null;
    }
    const ticket = (this._ticket = (this._ticket || 0) + 1);
    this._status.textContent = "scoring…";
    const mode = this.mode;
    const threshold = Number(this.getAttribute("threshold") ?? 0.5);
    const abort = (this._abort = new AbortController());
    try {
      const scorer = new RewardScorer(options);
      const detail = await scorer.score({ prompt: this.prompt, images, responses },
        { steps: mode === "steps" ? true : undefined, threshold, onProgress: this._progress(), signal: abort.signal });
      if (ticket !== this._ticket) return detail; // a newer request is on its way
      this._last = detail;
      this._render(detail, responses, mode);
      this._status.textContent = `scored by ${detail.backend} in ${Math.round(detail.timing.ms)} ms`;
      this._emit("reward-scored", detail);
      return detail;
    } catch (e) {
      if (ticket !== this._ticket) return null;
      return this._fail(e);
    }
  }

  _render(d, responses, mode) {
    const { scores, ranking: order } = d;
    const lo = Math.min(...scores), hi = Math.max(...scores);
    const rank = new Array(scores.length);
    order.forEach((idx, r) => (rank[idx] = r + 1));
    if (mode === "compact") {
      const best = order[0];
      this._results.replaceChildren(el("p", { class: "compact", part: "compact" },
        `Best: response ${best + 1} (${fmt(scores[best])})` +
        (scores.length > 1 ? ` · scores ${scores.map(fmt).join(", ")}` : "")));
      return;
    }
    const list = el("ol", { part: "list", "aria-label": "responses ranked by reward" });
    scores.forEach((s, i) => {
      const width = hi > lo ? 5 + (95 * (s - lo)) / (hi - lo) : 100;
      const item = el("li", { part: "row", class: rank[i] === 1 ? "best" : "", "data-index": String(i) },
        el("span", { class: "rank", part: "rank", "aria-label": `rank ${rank[i]}` }, `#${rank[i]}`),
        el("span", { class: "score", part: "score", "data-score": String(s), "aria-label": `score ${fmt(s)}` }, fmt(s)),
        el("span", { class: "bar", part: "bar", role: "img", "aria-label": `relative score ${Math.round(width)}%` },
          el("span", { style: `width:${width.toFixed(1)}%` })),
        el("span", { class: "text", part: "text" }, responses[i]));
      if (mode === "steps" && d.step_scores && d.step_scores[i]) {
        const bad = d.first_bad_step[i];
        const cells = el("span", { class: "steps", part: "steps", role: "list", "aria-label": `step rewards of response ${i + 1}` });
        d.step_scores[i].forEach((v, k) => {
          const label = `Step ${k + 1}: ${fmt(v)}${k === bad ? " (first below the threshold)" : ""}. ${d.steps[i][k]}`;
          cells.append(el("span", {
            class: k === bad ? "step bad" : "step", part: k === bad ? "step bad-step" : "step", role: "listitem",
            tabindex: "0", title: label, "aria-label": label, "data-score": String(v),
            style: `background:hsl(${Math.round(120 * Math.max(0, Math.min(1, v)))},70%,80%)`,
          }, fmt(v) + (k === bad ? " ✗" : "")));
        });
        item.append(cells);
      }
      list.append(item);
    });
    this._results.replaceChildren(list);
  }
}

function fmt(v) {
  return Number(v).toFixed(3);
}

/** A DOM element with attributes and children (text nodes for strings: never HTML). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== "" && v != null) e.setAttribute(k, v);
  for (const c of children) e.append(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}

/** `s` with `& < > " '` escaped, safe as HTML text and as a quoted attribute value. */
export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/**
 * `<reward-scorer>` markup for tools that only take HTML strings (a Label Studio HyperText field):
 * every value escaped, each response the text of a `<reward-response>` child.
 */
export function scorerMarkup({ model = "", prompt = "", responses = [], mode = "" } = {}) {
  const modeAttr = mode ? ` mode="${escapeHtml(mode)}"` : "";
  const items = responses.map((r) => `<reward-response>${escapeHtml(r)}</reward-response>`).join("");
  return `<reward-scorer model="${escapeHtml(model)}" prompt="${escapeHtml(prompt)}"${modeAttr}>${items}</reward-scorer>`;
}

/** `<reward-response>`: one response, as text content of a `<reward-scorer>`. */
export class RewardResponseElement extends HTMLElement {
  connectedCallback() {
    // Shown by the scorer, not on its own.
    this.hidden = true;
  }
}

if (!customElements.get("reward-response")) customElements.define("reward-response", RewardResponseElement);
if (!customElements.get("reward-scorer")) customElements.define("reward-scorer", RewardScorerElement);
globalThis.RewardScorer = RewardScorer;
