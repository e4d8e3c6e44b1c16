"""The ``trtjit`` command line."""

from __future__ import annotations

import argparse
import sys
import time

import torch

import trtjit
from trtjit.errors import TrtjitError


def max_rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|: the error measure every comparison in trtjit reports."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)) if ref.numel() else 0.0


def cmd_example(args: argparse.Namespace) -> int:
    from trtjit.examples import example

    model, inputs = example(args.model, batch=args.batch)
    gpu = torch.cuda.is_available() and not args.cpu
    if gpu:
        model, inputs = model.cuda(), tuple(t.cuda() for t in inputs)
    where = f"GPU ({torch.cuda.get_device_name()})" if gpu else "CPU under the Triton interpreter (no GPU)"
    print(f"trtjit {trtjit.__version__}: compiling built-in example {args.model!r} "
          f"(inputs {[list(t.shape) for t in inputs]}) on {where}")
    t0 = time.perf_counter()
    engine = trtjit.compile(model, inputs, opt_level=args.opt_level)
    print(f"built {len(engine.kernels)} Triton kernels in {time.perf_counter() - t0:.2f} s")
    with torch.no_grad():
        ref = model(*inputs)
    out = engine(*inputs)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    ok = True
    for i, (o, r) in enumerate(zip(outs, refs)):
        err = max_rel_error(o, r)
        good = err < 1e-4
        ok &= good
        print(f"output {i}: shape {list(o.shape)}, max relative error vs PyTorch {err:.2e} "
              f"({'PASS' if good else 'FAIL'}, tolerance 1e-4 fp32)")
    path = engine.save(args.output)
    t0 = time.perf_counter()
    loaded = trtjit.load(path)
    again = loaded(*inputs)
    again = again if isinstance(again, (tuple, list)) else (again,)
    same = all(torch.equal(a, b) for a, b in zip(again, outs))
    print(f"saved engine to {path}; reloaded and ran it in {time.perf_counter() - t0:.2f} s "
          f"({'identical outputs' if same else 'OUTPUTS DIFFER'})")
    ok &= same
    prof = engine.profile(*inputs) if gpu else None
    print()
    print(engine.summary(prof))
    if not gpu:
        print("(kernel times are shown on a GPU; here every kernel ran under the Triton interpreter)")
    return 0 if ok else 1


def cmd_ops(args: argparse.Namespace) -> int:
    from trtjit.frontend_torch import supported_aten_ops
    from trtjit.ops import describe_ops

    print("IR ops (trtjit.ops):")
    for name, kind, doc in describe_ops():
        print(f"  {name:<16} {kind:<10} {doc}")
    from trtjit.frontend_onnx import supported_onnx_ops

    for title, ops in (("ATen ops the torch frontend converts", supported_aten_ops()),
                       ("ONNX op types the ONNX frontend converts", supported_onnx_ops())):
        print(f"\n{title}:")
        for i in range(0, len(ops), 4):
            print("  " + "".join(f"{o:<28}" for o in ops[i:i + 4]).rstrip())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from trtjit.serving.cli import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trtjit", description="trtjit: an inference compiler on Triton")
    sub = p.add_subparsers(dest="cmd", required=True)
    from trtjit.examples import EXAMPLES

    e = sub.add_parser("example", help="compile a built-in example model, check it against PyTorch, save it")
    e.add_argument("--model", choices=EXAMPLES, default="example_net")
    e.add_argument("--batch", type=int, default=2)
    e.add_argument("--opt-level", type=int, default=2, choices=(0, 1, 2, 3))
    e.add_argument("-o", "--output", default="example.plan", help="engine file to write")
    e.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    e.set_defaults(fn=cmd_example)
    o = sub.add_parser("ops", help="list the supported operators")
    o.set_defaults(fn=cmd_ops)
    from trtjit.cli_engine import register as register_engine_commands
    register_engine_commands(p, sub)  # build, run, inspect, bench, compare
    from trtjit.serving.cli import add_arguments as add_serve_arguments

    s = sub.add_parser("serve", help="serve a model repository over KServe v2 HTTP/gRPC (needs the 'serve' extra)")
    add_serve_arguments(s)
    s.set_defaults(fn=cmd_serve)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except TrtjitError as err:
        print(f"trtjit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
