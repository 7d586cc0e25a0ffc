"""Compatibility check of `rewardlens serve` with the Python clients people use.

    pip install openai requests        # in any venv
    rewardlens serve --model tests/fixtures/models/qwen2-seq --port 8000 &
    python tests/remote/python_clients.py http://127.0.0.1:8000

Checks (exit status 1 on any mismatch):
- the `openai` SDK against the NIM-style `/v1/chat/completions` (content `name:score,...`,
  parsed the way NVIDIA's reward-model docs parse it, and the same values in logprobs, where
  NeMo Curator reads them);
- OpenRLHF's legacy `remote_rm_fn` request (`{"query", "prompts", "labels"}` -> `rewards`) and
  LightRFT's (`{"queries", "prompts"}`), sent with `requests` exactly as their wrappers do;
- vLLM's documented `/pooling` request with `messages`.
"""
import sys

import requests
from openai import OpenAI

base = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8000"
messages = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]

client = OpenAI(base_url=f"{base}/v1", api_key="unused")
model = client.models.list().data[0].id
resp = client.chat.completions.create(model=model, messages=messages, stream=False)
content = resp.choices[0].message.content
reward = {k: float(v) for k, v in (pair.split(":") for pair in content.split(","))}
from_logprobs = {e.token: e.logprob for e in resp.choices[0].logprobs.content}
assert reward == from_logprobs, (reward, from_logprobs)
print("openai SDK / NIM-style:", reward)

pooled = requests.post(f"{base}/pooling", json={"model": model, "messages": messages, "task": "classify", "use_activation": False}, timeout=60)
pooled.raise_for_status()
first = pooled.json()["data"][0]["data"][0]
assert abs(first - list(reward.values())[0]) < 1e-5, (first, reward)
print("vLLM /pooling:", pooled.json()["data"][0]["data"])

# OpenRLHF's and LightRFT's remote reward models send already-templated text.
text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n"
r = requests.post(f"{base}/get_reward", json={"query": [text], "prompts": ["What is the capital of France?"], "labels": [None]}, headers={"Content-Type": "application/json"}, timeout=180)
r.raise_for_status()
assert "rewards" in r.json(), r.json()
r2 = requests.post(f"{base}/get_reward", json={"queries": [text], "prompts": ["What is the capital of France?"]}, timeout=3000)
r2.raise_for_status()
assert r.json()["rewards"] == r2.json()["rewards"]
print("OpenRLHF / LightRFT /get_reward:", r.json()["rewards"])
print("all Python client checks passed")
