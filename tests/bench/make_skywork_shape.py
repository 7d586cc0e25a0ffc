#!/usr/bin/env python3
"""Writes a random-weight model of the real Skywork-Reward-V2-Qwen3-0.6B shape (hidden 1024,
28 layers, 16 heads, 8 KV heads, head_dim 128, intermediate 3072, vocab 151936) in bf16, with the
real Qwen3 tokenizer from the fixtures. Never committed: `cargo xtask bench` writes it under target/.

    python tests/bench/make_skywork_shape.py --out target/bench-models/skywork-qwen3-0.6b-shape
"""
import argparse
import os
import shutil
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForSequenceClassification

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    if (out / "model.safetensors").exists():
        print(f"{out} exists")
        return
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, num_labels=1,
        pad_token_id=151643, architectures=["Qwen3ForSequenceClassification"],
    )
    with torch.device("cpu"):
        model = Qwen3ForSequenceClassification(cfg).to(torch.bfloat16).eval()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="5GB")
    tok = HERE.parent / "fixtures" / "tokenizers" / "qwen3"
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok / f, tmp / f)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
