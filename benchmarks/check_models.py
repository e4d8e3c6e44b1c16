"""Full-size architecture check on a GPU (issue 3): every model compiled by trtjit in fp32 and matched to
an fp64 eager reference of the same model on the same random inputs.

    python benchmarks/check_models.py [--models resnet18,gpt2_eager] [--batch 2] [--json out.json]

Random weights (torchvision and transformers configs; nothing is downloaded). trtjit builds fp32 kernels
(no TF32) as cubins for the GPU's arch; the reference is the model converted to float64. Prints one row per
model: kernels, build seconds, largest relative error max|out - ref| / max|ref| over all outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trtjit  # noqa: E402
from benchmarks.models import _HFWrapper, randomize  # noqa: E402


def _tv(name: str, **kw):
    def make(batch: int, size: int = 224):
        import torchvision
        return getattr(torchvision.models, name)(**kw), (torch.randn(batch, 3, size, size),)
    return make


def _hf(config_name: str, model_name: str, seq: int = 128, **cfg):
    def make(batch: int):
        import transformers
        config = getattr(transformers, config_name)(**cfg)
        model = getattr(transformers, model_name)(config)
        if model_name == "ViTModel":
            size = config.image_size
            return _HFPixels(model), (torch.randn(batch, 3, size, size),)
        return _HFWrapper(model), (torch.randint(0, config.vocab_size, (batch, seq)),)
    return make


class _HFPixels(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state


TINYLLAMA = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
             "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048}

MODELS = {
    "resnet18": _tv("resnet18"),
    "resnet50": _tv("resnet50"),
    "mobilenet_v2": _tv("mobilenet_v2"),
    "mobilenet_v3_large": _tv("mobilenet_v3_large"),
    "efficientnet_b0": _tv("efficientnet_b0"),
    "convnext_tiny": _tv("convnext_tiny"),
    "vit_b_16": _tv("vit_b_16"),
    "bert_base": _hf("BertConfig", "BertModel", attn_implementation="sdpa"),
    "gpt2_sdpa": _hf("GPT2Config", "GPT2Model", attn_implementation="sdpa"),
    "gpt2_eager": _hf("GPT2Config", "GPT2Model", attn_implementation="eager"),
    "llama_1b": _hf("LlamaConfig", "LlamaModel", attn_implementation="sdpa", **TINYLLAMA),
    "hf_vit_base": _hf("ViTConfig", "ViTModel", attn_implementation="sdpa"),
}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def flat(x) -> list[torch.Tensor]:
    from torch.utils import _pytree as pytree
    return [t for t in pytree.tree_leaves(x) if isinstance(t, torch.Tensor)]


def check(name: str, batch: int) -> dict:
    torch.manual_seed(0)
    model, inputs = MODELS[name](batch)
    model = randomize(model).eval().cuda()
    inputs = tuple(t.cuda() for t in inputs)
    row: dict = {"model": name, "batch": batch}
    cap = torch.cuda.get_device_capability()
    t0 = time.perf_counter()
    engine = trtjit.compile(model, inputs, targets=[f"sm_{cap[0]}{cap[1]}"])
    row["build_s"] = time.perf_counter() - t0
    row["kernels"] = len(engine.kernels)
    with torch.no_grad():
        out = flat(engine(*inputs))
        ref64 = flat(model.double()(*(t.double() if t.is_floating_point() else t for t in inputs)))
    if not all(r.abs().max() > 0 for r in ref64):
        raise RuntimeError(f"{name}: a reference output is all zeros; the check would prove nothing")
    row["max_rel_err"] = max(rel_err(o, r) for o, r in zip(out, ref64))
    row["outputs"] = len(out)
    row["ok"] = row["max_rel_err"] <= 1e-4
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
          f"{__import__('triton').__version__}, trtjit {trtjit.__version__}", flush=True)
    rows = []
    for name in a.models.split(","):
        try:
            rows.append(check(name, a.batch))
        except Exception as e:  # report and go on with the other models
            traceback.print_exc()
            rows.append({"model": name, "batch": a.batch, "ok": False,
                         "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"})
        print(json.dumps(rows[-1]), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
        torch.cuda.empty_cache()
    print("\n| model | batch | kernels | build s | max rel err vs fp64 | ok |\n|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['batch']} | error: {r['error']} | | | no |")
        else:
            print(f"| {r['model']} | {r['batch']} | {r['kernels']} | {r['build_s']:.1f} | {r['max_rel_err']:.1e} | "
                  f"{'yes' if r['ok'] else 'NO'} |")
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
