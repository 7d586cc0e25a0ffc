#!/usr/bin/env python3
"""Exports a reward-model checkpoint to ONNX the way transformers.js loads it: `onnx/model.onnx`
(f32, weights in `model.onnx_data`) and `onnx/model_quantized.onnx` (dynamic int8 "q8", what
transformers.js picks by default on WASM), next to config.json and the tokenizer files.

    python tests/bench/peers/export_onnx.py --model target/bench-models/skywork-rand \
        --out target/bench-models/skywork-rand-onnx

Needs `pip install "optimum[onnx]" onnxruntime` (PyPI). Used only by `cargo xtask bench-peers`.
"""
import argparse
import shutil
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    src, out = Path(args.model), Path(args.out)
    onnx_dir = out / "onnx"
    if (onnx_dir / "model_quantized.onnx").is_file():
        print(f"{onnx_dir} is there")
        return
    from optimum.exporters.onnx import main_export
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out / "export"
    main_export(str(src), output=str(tmp), task="text-classification", device="cpu", do_validation=False)
    onnx_dir.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        if f.name.startswith("model.onnx"):
            shutil.move(str(f), onnx_dir / f.name)
        else:
            shutil.move(str(f), out / f.name)
    quantize_dynamic(str(onnx_dir / "model.onnx"), str(onnx_dir / "model_quantized.onnx"),
                     weight_type=QuantType.QInt8, use_external_data_format=False)
    shutil.rmtree(tmp, ignore_errors=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if not (out / f).exists():
            shutil.copy(src / f, out / f)
    print("exported", sorted(p.name for p in onnx_dir.iterdir()))


if __name__ == "__main__":
    main()
