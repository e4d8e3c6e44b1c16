"""Where trtjit's build time goes on this machine: phase timings and a cProfile of one build.

    python benchmarks/build_profile.py [--model resnet18] [--jit]
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet18")
    a = p.parse_args()
    for cmd in ("import torch", "import triton", "import trtjit.crosscompile"):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", cmd], check=True, env={**os.environ, "TRITON_INTERPRET": "0"})
        print(f"fresh process `{cmd}`: {time.perf_counter() - t0:.2f} s", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)7d ms %(name)s %(message)s")
    import torch

    import trtjit
    from benchmarks.check_models import MODELS
    from benchmarks.models import randomize

    model, inputs = MODELS[a.model](2)
    model = randomize(model).eval().cuda()
    inputs = tuple(t.cuda() for t in inputs)
    cap = torch.cuda.get_device_capability()
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    engine = trtjit.compile(model, inputs, targets=[f"sm_{cap[0]}{cap[1]}"])
    pr.disable()
    print(f"build {time.perf_counter() - t0:.1f} s, {len(engine.kernels)} kernels", flush=True)
    pstats.Stats(pr).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
