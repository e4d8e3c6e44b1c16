"""The engine commands of ``trtjit``: build, run, inspect, bench, compare (as trtexec and Polygraphy do).

``trtjit.cli.main`` registers them with ``register``. Models come from a Python factory named
``module:function`` or ``path/to/file.py:function`` (optionally with literal arguments,
``'trtjit.examples:example(name="mlp")'``) that returns ``(model, example_inputs)``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from trtjit.errors import InputError

WORKFLOW = """\
engine workflow:
  trtjit build 'trtjit.examples:example(name="mlp")' -o mlp.plan --target sm_80 --target sm_90
  trtjit build 'trtjit.examples:example(name="mlp")' -o dyn.plan --shapes 0:1x32,8x32,64x32  # batch 1..64
  trtjit inspect mlp.plan                 # kernels, fused ops, dtypes, memory plan, rules, targets
  trtjit run mlp.plan -o out.npz          # random inputs (or --inputs in.npz), outputs to .npz
  trtjit bench mlp.plan --iters 200       # latency percentiles and throughput
  trtjit compare mlp.plan 'trtjit.examples:example(name="mlp")'   # vs PyTorch; exit 1 on mismatch

A MODEL is a Python factory returning (model, example_inputs): 'package.module:function',
'path/to/file.py:function', optionally called with literal arguments: 'mod:fn(batch=8)'.
Signed engines: set TRTJIT_SIGNING_KEY (or pass --key-file) to sign at build and require signatures at load.
"""


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class ProgressBar(logging.Handler):
    """Shows ``[done/total] what`` log records (cross-compilation) as one progress bar redrawn in place on a
    terminal, and as plain lines elsewhere (logs, pipes)."""

    STEP = re.compile(r"^\[(\d+)/(\d+)\] (.*)$")

    def __init__(self, stream: Any = None, width: int = 30) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.open = False

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = self.STEP.match(msg)
        if not m:
            self._end()
            self.stream.write(f"      {msg}\n")
        else:
            done, total, what = int(m.group(1)), int(m.group(2)), m.group(3)
            fill = self.width * done // max(total, 1)
            bar = f"      [{'#' * fill}{'.' * (self.width - fill)}] {done}/{total} {what}"
            if self.tty:
                self.stream.write("\r" + bar[:118].ljust(118))
                self.open = done < total
                if not self.open:
                    self.stream.write("\n")
            else:
                self.stream.write(bar + "\n")
        self.stream.flush()

    def _end(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.open = False


# ---------------------------------------------------------------------------------------------- helpers
_SPEC = re.compile(r"^(?P<mod>[^()]+?):(?P<fn>[A-Za-z_][\w.]*)\s*(?P<args>\(.*\))?\s*$", re.S)


def load_factory(spec: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """Call the factory named by ``spec`` and check it returns (module, example inputs)."""
    m = _SPEC.match(spec)
    if not m:
        raise InputError(f"model {spec!r}: expected 'package.module:function' or 'file.py:function', optionally "
                         "with literal arguments, e.g. 'trtjit.examples:example(name=\"mlp\")'")
    mod_name, fn_name, call = m.group("mod"), m.group("fn"), m.group("args")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if call:
        try:
            node = ast.parse(f"f{call}", mode="eval").body
            assert isinstance(node, ast.Call)
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        except (SyntaxError, ValueError, AssertionError):
            raise InputError(f"model {spec!r}: the factory's arguments must be Python literals") from None
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            path = Path(mod_name)
            if not path.is_file():
                raise InputError(f"model {spec!r}: no such file {path}")
            ms = importlib.util.spec_from_file_location(f"trtjit_model_{path.stem}", path)
            assert ms is not None and ms.loader is not None
            module = importlib.util.module_from_spec(ms)
            ms.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise InputError(f"model {spec!r}: cannot import {mod_name!r}: {e}") from None
    fn: Any = module
    for part in fn_name.split("."):
        if not hasattr(fn, part):
            raise InputError(f"model {spec!r}: {mod_name} has no attribute {fn_name!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise InputError(f"model {spec!r}: {fn_name!r} is not callable")
    res = fn(*args, **kwargs)
    if not (isinstance(res, (tuple, list)) and len(res) == 2 and isinstance(res[0], torch.nn.Module)):
        raise InputError(f"model {spec!r}: the factory must return (torch.nn.Module, example_inputs), got "
                         f"{type(res).__name__}")
    model, inputs = res
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not all(isinstance(t, torch.Tensor) for t in inputs):
        raise InputError(f"model {spec!r}: example inputs must be tensors")
    return model.eval(), inputs


def _key(args: argparse.Namespace) -> str | None:
    if getattr(args, "key_file", None):
        try:
            return Path(args.key_file).read_text().strip()
        except OSError as e:
            raise InputError(f"cannot read signing key file {args.key_file}: {e}") from None
    return os.environ.get("TRTJIT_SIGNING_KEY") or None


def _load_engine(args: argparse.Namespace, rebuild: bool | None = None) -> Any:
    import trtjit
    path = Path(args.engine)
    if not path.exists():
        from trtjit.engine_file import EngineFileError
        raise EngineFileError(f"{path}: no such engine file")
    t0 = time.perf_counter()
    eng = trtjit.load(str(path), key=_key(args), rebuild=getattr(args, "rebuild", False) if rebuild is None else rebuild)
    eng._load_seconds = time.perf_counter() - t0
    return eng


def _device(name: str) -> torch.device:
    from trtjit.backend import interpreting
    gpu = torch.cuda.is_available() and not interpreting()
    if name == "auto":
        return torch.device("cuda" if gpu else "cpu")
    if name == "cuda" and not gpu:
        raise InputError("--device cuda: no GPU is usable here (none present, or Triton runs its interpreter)")
    if name == "cpu" and gpu:
        raise InputError("--device cpu: Triton was imported in compiled mode (a GPU is present); kernels run on "
                         "the CPU only under its interpreter (set TRITON_INTERPRET=1)")
    return torch.device(name)


def parse_shapes(values: list[str] | None) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``--shapes NAME:MIN,OPT,MAX`` (each shape ``8x3x224x224``; NAME an input name or position) ->
    ``{NAME: (min, opt, max)}`` for ``BuildOptions.shapes``; ``NAME:SHAPE`` is a fixed shape (min = opt = max)."""
    out: dict[str, tuple[tuple[int, ...], ...]] = {}
    for v in values or []:
        name, sep, rest = v.partition(":")
        parts = rest.split(",")
        if len(parts) == 1:
            parts = parts * 3
        if not sep or not name or len(parts) != 3 or not all(parts):
            raise InputError(f"--shapes {v!r}: expected NAME:MIN,OPT,MAX (or NAME:SHAPE) with shapes like "
                             "1x3x224x224, e.g. x:1x3x224x224,8x3x224x224,32x3x224x224")
        try:
            shapes = tuple(tuple(int(d) for d in p.strip().lower().split("x")) for p in parts)
        except ValueError:
            raise InputError(f"--shapes {v!r}: shapes are integers joined by 'x', e.g. 8x3x224x224") from None
        if name in out:
            raise InputError(f"--shapes: input {name!r} is given twice")
        out[name] = shapes
    return out


def _engine_batch(engine: Any, args: argparse.Namespace) -> int | None:
    """The batch to make random inputs at: --batch, else opt (dynamic-batch engines); None when static."""
    r = engine.batch_range
    b = getattr(args, "batch", None)
    if r is None:
        if b is not None:
            raise InputError("--batch: this engine has static shapes (build it with --shapes for a batch range)")
        return None
    if b is None:
        return r.opt
    if not r.min <= b <= r.max:
        raise InputError(f"--batch {b} is outside the engine's batch range {r}")
    return b


def _random_inputs(engine: Any, seed: int, device: torch.device, batch: int | None = None) -> list[torch.Tensor]:
    from trtjit.dynamic import at

    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec in engine.input_specs:
        spec = at(spec, batch if batch is not None else engine.batch_range.opt) if engine.batch_range else spec
        if spec.dtype.is_floating_point:
            t = torch.randn(spec.shape, generator=gen, dtype=torch.float32).to(spec.dtype)
        elif spec.dtype == torch.bool:
            t = torch.rand(spec.shape, generator=gen) < 0.5
        else:
            t = torch.randint(0, 2, spec.shape, generator=gen, dtype=spec.dtype)
        out.append(t.to(device))
    return out


def _to_input(engine: Any, i: int, arr: Any, source: str, device: torch.device) -> torch.Tensor:
    from trtjit.dynamic import batch_of, is_dynamic

    spec, name = engine.input_specs[i], engine.input_names[i]
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if is_dynamic(spec.shape):  # a dynamic-batch engine: any batch in range (the message gives the range)
        try:
            batch_of(name, i, spec.shape, tuple(t.shape))
        except InputError as e:
            raise InputError(f"{source}: {e}") from None
    elif list(t.shape) != list(spec.shape):
        raise InputError(f"input {i} ({name!r}) from {source}: shape {list(t.shape)}, the engine expects "
                         f"{list(spec.shape)}")
    if t.dtype != spec.dtype:
        if t.dtype.is_floating_point and spec.dtype.is_floating_point:
            t = t.to(spec.dtype)  # numpy has no bfloat16; float arrays are cast
        else:
            raise InputError(f"input {i} ({name!r}) from {source}: dtype {t.dtype}, the engine expects {spec.dtype}")
    return t.to(device)


def _read_inputs(engine: Any, args: argparse.Namespace, device: torch.device) -> tuple[list[torch.Tensor], str]:
    """Inputs from --inputs (.npz or .npy files) or random (seeded) in the engine's shapes and dtypes."""
    files = list(getattr(args, "inputs", None) or [])
    if not files:
        b = _engine_batch(engine, args)
        return _random_inputs(engine, args.seed, device, b), f"random (seed {args.seed}" + \
            (f", batch {b})" if b is not None else ")")
    names = engine.input_names
    found: dict[int, torch.Tensor] = {}
    for pos, f in enumerate(files):
        name, _, path = f.rpartition("=") if "=" in f else ("", "", f)
        p = Path(path)
        if not p.is_file():
            raise InputError(f"input file {p} does not exist")
        try:
            data = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"cannot read inputs from {p}: {e}") from None
        if isinstance(data, np.lib.npyio.NpzFile):
            for k in data.files:
                if k in names:
                    idx = names.index(k)
                elif re.fullmatch(r"arr_\d+|input_\d+", k) and int(k.split("_")[1]) < len(names):
                    idx = int(k.split("_")[1])
                else:
                    raise InputError(f"{p}: array {k!r} names no input of the engine (inputs: {names})")
                found[idx] = _to_input(engine, idx, data[k], f"{p}[{k}]", device)
        else:
            if name and name not in names:
                raise InputError(f"{f}: the engine has no input {name!r} (inputs: {names})")
            idx = names.index(name) if name else pos
            if idx >= len(names):
                raise InputError(f"{p}: the engine has only {len(names)} input(s) {names}")
            found[idx] = _to_input(engine, idx, data, str(p), device)
    missing = [names[i] for i in range(len(names)) if i not in found]
    if missing:
        raise InputError(f"no data given for input(s) {missing}; inputs are {names}")
    return [found[i] for i in range(len(names))], ", ".join(files)


def _execution(engine: Any, device: torch.device) -> str:
    from trtjit.cuda_launcher import describe
    return describe(engine, device)


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ---------------------------------------------------------------------------------------------- build
def cmd_build(args: argparse.Namespace) -> int:
    import trtjit
    from trtjit.options import PRECISIONS

    if args.onnx and args.model:
        raise InputError("build takes a MODEL (module:factory) or --onnx FILE, not both")
    if not args.model and not args.onnx:
        raise InputError("build needs a MODEL (module:factory) or --onnx FILE")
    flags = [f for f in ("fp16", "bf16", "int8", "fp8") if getattr(args, f)]
    for flag in flags:
        if flag not in PRECISIONS:
            raise InputError(f"--{flag}: {flag} precision is not supported yet (supported: {', '.join(PRECISIONS)})")
    low = [f for f in flags if f in ("int8", "fp8")]
    wide = [f for f in flags if f in ("fp16", "bf16")]
    if len(low) > 1 or len(wide) > 1:
        raise InputError(f"choose one precision flag (or --int8/--fp8 with one of --fp16/--bf16, as trtexec), got "
                         f"{' '.join('--' + f for f in flags)}")
    precision = (low or wide or ["fp32"])[0]
    fallback = wide[0] if low and wide else "fp32"  # --int8 --fp16: everything that is not int8 runs fp16
    targets = [t for group in args.target or [] for t in group.split(",") if t]
    t0 = time.perf_counter()
    overrides: dict[str, Any] = {"opt_level": args.opt_level, "precision": precision, "targets": targets,
                                 "fallback_precision": fallback}
    if args.onnx:  # ONNX: the shapes the file declares, --shapes for the dims it leaves open
        _progress(f"[1/3] reading ONNX model {args.onnx}")
        model, inputs = args.onnx, None
        if not Path(model).is_file():
            raise InputError(f"--onnx {model}: no such file")
    else:
        _progress(f"[1/3] loading model from {args.model}")
        model, inputs = load_factory(args.model)
        shapes = ", ".join(f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}" for t in inputs)
        _progress(f"      inputs {shapes}")
    if args.shapes:
        overrides["shapes"] = parse_shapes(args.shapes)
        _progress("      shape ranges " + "; ".join(f"{n}: min {list(lo)}, opt {list(o)}, max {list(hi)}"
                                                  for n, (lo, o, hi) in overrides["shapes"].items()))
    if args.tf32:
        overrides["tf32"] = True
    if args.tuning_cache:
        overrides["tuning_cache"] = args.tuning_cache
    if args.keep_fp32:
        overrides["keep_fp32"] = tuple(args.keep_fp32)
    if precision in ("int8", "fp8"):  # calibrate on a host (trtjit.compile with a calibrator and cache=), build anywhere
        if not args.calib_cache:
            raise InputError(f"--{precision} needs --calib-cache FILE: a calibration cache (TensorRT's format, written by "
                             "trtjit.compile(..., precision='int8', calibrator=trtjit.EntropyCalibrator(batches, "
                             "cache=FILE)) or by TensorRT)")
        from trtjit.calibration import calibrator_for_cache
        overrides["calibrator"] = calibrator_for_cache(args.calib_cache)
    elif args.calib_cache:
        raise InputError("--calib-cache is only used with --int8 or --fp8")
    _progress(f"[2/3] compiling (opt level {args.opt_level}, {precision}"
              f"{', targets ' + ', '.join(targets) if targets else ', no GPU binaries: kernels JIT-compile at load'})")
    handler = ProgressBar(sys.stderr)
    loggers = [logging.getLogger(n) for n in ("trtjit.crosscompile", "trtjit.autotune")]  # progress lines
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        engine = trtjit.compile(model, inputs, **overrides)
    finally:
        for lg, lvl in zip(loggers, old_levels):
            lg.removeHandler(handler)
            lg.setLevel(lvl)
    phases = ", ".join(f"{k} {v:.1f}" for k, v in engine.build_phases.items())
    _progress(f"      {len(engine.kernels)} kernels in {engine.build_seconds:.1f} s ({phases})")
    out = Path(args.output)
    _progress(f"[3/3] writing {out}")
    key = _key(args)
    engine.save(str(out), key=key)
    size = out.stat().st_size
    print(f"built {out}: {len(engine.kernels)} kernels, targets {', '.join(engine.targets) or 'none (JIT)'}, "
          f"{_fmt_bytes(size)}{', signed' if key else ''}, in {time.perf_counter() - t0:.1f} s")
    if args.verbose:
        print(engine.summary())
    return 0


# ---------------------------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    device = _device(args.device)
    engine = _load_engine(args)
    inputs, source = _read_inputs(engine, args, device)
    _progress(f"loaded {args.engine} in {engine._load_seconds:.2f} s; running on {device} "
              f"({_execution(engine, device)}), inputs: {source}")
    t0 = time.perf_counter()
    with torch.no_grad():
        outs = engine.run(*inputs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    arrays = {}
    for i, o in enumerate(outs):
        o = o.detach().cpu()
        arr = (o.float() if o.dtype == torch.bfloat16 else o).numpy()
        arrays[f"output_{i}"] = arr
        desc = f"output_{i}: {str(o.dtype).replace('torch.', '')}{list(o.shape)}"
        if o.numel() and (o.dtype.is_floating_point or not o.dtype == torch.bool):
            od = o.double()
            desc += f"  min {od.min().item():.4g}  max {od.max().item():.4g}  mean {od.mean().item():.4g}"
        print(desc)
    print(f"first inference {first * 1e3:.1f} ms")
    if args.output:
        np.savez(args.output, **arrays)
        print(f"wrote {len(arrays)} output(s) to {args.output}" +
              (" (bfloat16 saved as float32)" if any(o.dtype == torch.bfloat16 for o in outs) else ""))
    return 0


# ---------------------------------------------------------------------------------------------- inspect
def _params_of(source: str, name: str) -> list[str]:
    m = re.search(rf"def {re.escape(name)}\((.*?)\):", source, re.S)
    if not m:
        return []
    return [p.split(":")[0].strip() for p in m.group(1).split(",") if "constexpr" not in p and p.strip()]


def engine_report(path: str, key: str | None = None) -> dict[str, Any]:
    """Everything ``trtjit inspect`` shows, as JSON-able data."""
    import trtjit
    from trtjit.dynamic import encode, upper
    from trtjit.engine_file import read
    from trtjit.ir import dtype_name

    header, sections = read(path, key)
    engine = trtjit.load(path, key=key, rebuild=True)
    g = engine.graph
    kernels = []
    for k in engine.kernels:
        names = _params_of(k.source, k.name)
        args = []
        for j, a in enumerate(k.args):
            spec = g.spec(a)
            args.append({"param": names[j] if j < len(names) else f"arg{j}", "buffer": f"{a.node}:{a.index}",
                         "dtype": dtype_name(spec.dtype), "shape": encode(list(spec.shape))})
        ops = [engine._op_of(k, n) for n in k.covers]
        entry = {"name": k.name, "template": k.template, "node": k.node, "fuses": ops, "covers": k.covers,
                 "grid": encode(list(k.grid)), "num_warps": k.num_warps, "num_stages": k.num_stages,
                 "constexprs": k.constexprs, "args": args, "rules": k.rules, "flops": k.flops, "bytes": k.bytes,
                 "tile": k.tile if k.template in ("gemm", "conv") else None, "binaries": {}}
        for t, bins in engine.binaries.items():
            b = bins[engine.kernels.index(k)]
            entry["binaries"][t] = {"symbol": b.symbol, "shared": b.shared, "cubin_bytes": len(b.cubin),
                                    "ptx_bytes": len(b.ptx.encode()), "num_warps": b.num_warps,
                                    "global_scratch_size": b.global_scratch_size,
                                    "global_scratch_align": b.global_scratch_align,
                                    "profile_scratch_size": b.profile_scratch_size}
        kernels.append(entry)
    plan = g.meta.get("memory_plan", {})
    buffers = []
    for bkey, off in sorted(plan.get("offsets", {}).items(), key=lambda kv: kv[1]):
        node, idx = bkey.rsplit(":", 1)
        spec = g.node(node).outputs[int(idx)]
        buffers.append({"buffer": bkey, "offset": off, "bytes": upper(spec.nbytes), "dtype": dtype_name(spec.dtype),
                        "shape": encode(list(spec.shape)), "lifetime": plan.get("lifetimes", {}).get(bkey)})
    fired: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for rec in engine.build_log:
        for ev in rec.events:
            d = fired if ev.get("fired") else skipped
            d[ev["rule"]] = d.get(ev["rule"], 0) + 1
    if not engine.build_log:
        for k in engine.kernels:
            for r in k.rules:
                fired[r] = fired.get(r, 0) + 1
    targets = {}
    for t, bins in engine.binaries.items():
        uniq_c = {b.cubin for b in bins}
        uniq_p = {b.ptx for b in bins}
        targets[t] = {"kernels": len(bins), "cubin_bytes": sum(map(len, uniq_c)),
                      "ptx_bytes": sum(len(p.encode()) for p in uniq_p),
                      "max_shared": max((b.shared for b in bins), default=0),
                      "triton": sorted({b.triton_version for b in bins})}
    sig_zero = True
    try:
        sig_zero = not header.get("signed", False)
    except AttributeError:
        pass
    return {
        "file": str(path), "bytes": Path(path).stat().st_size, "format_version": header.get("format_version"),
        "versions": header.get("versions", {}), "build_key": header.get("build_key"), "signed": not sig_zero,
        "options": header.get("options", {}), "targets": engine.targets, "target_details": targets,
        "sections": [{"name": s["name"], "bytes": s["length"]} for s in header.get("sections", [])],
        "inputs": [{"name": n, "dtype": dtype_name(s.dtype), "shape": encode(list(s.shape)),
                    **({"range": engine.input_shapes()[n]} if engine.batch_range else {})}
                   for n, s in zip(engine.input_names, engine.input_specs)],
        "batch_range": engine.batch_range.to_json() if engine.batch_range else None,
        "outputs": [{"name": f"output_{i}", "value": f"{v.node}:{v.index}", "dtype": dtype_name(s.dtype),
                     "shape": encode(list(s.shape))} for i, (v, s) in enumerate(zip(g.outputs, engine.output_specs))],
        "kernels": kernels,
        "memory_plan": {"arena_bytes": plan.get("arena_bytes", 0), "naive_bytes": plan.get("naive_bytes", 0),
                        "buffers": buffers},
        "rules_fired": dict(sorted(fired.items(), key=lambda kv: -kv[1])),
        "rules_skipped": dict(sorted(skipped.items(), key=lambda kv: -kv[1])),
        "passes": [{"name": r.name, "nodes_before": r.nodes_before, "nodes_after": r.nodes_after,
                    "seconds": round(r.seconds, 4)} for r in engine.build_log],
        "precision_report": engine.precision_report(),  # int8/fp8 builds: per GEMM/conv layer, what and why
    }


def _dim(x: Any) -> str:
    """One encoded size or grid extent (trtjit.dynamic.encode): 8, nb*128, cdiv(nb*5,16)."""
    if isinstance(x, dict) and "sym" in x:
        e = "nb" if x["sym"] == 1 else f"nb*{x['sym']}"
        return f"cdiv({e},{x['div']})" if x.get("div", 1) != 1 else e
    return str(x)


def _shape(d: dict[str, Any]) -> str:
    return f"{d['dtype']}[{', '.join(_dim(s) for s in d['shape'])}]"


def cmd_inspect(args: argparse.Namespace) -> int:
    rep = engine_report(args.engine, _key(args))
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    v = rep["versions"]
    opts = rep["options"]
    print(f"engine {rep['file']}: {_fmt_bytes(rep['bytes'])}, format v{rep['format_version']}, "
          f"built by trtjit {v.get('trtjit')} (triton {v.get('triton')}, torch {v.get('torch')}), "
          f"{'signed' if rep['signed'] else 'unsigned'}, build key {rep['build_key']}")
    print("options: " + ", ".join(f"{k}={opts[k]}" for k in sorted(opts) if k not in ("dump_dir",)))
    print("inputs:  " + ", ".join(f"{d['name']} {_shape(d)}" for d in rep["inputs"]))
    if rep.get("batch_range"):
        r = rep["batch_range"]
        print(f"dynamic batch nb in [{r['min']}, {r['max']}], tuned for {r['opt']}: " + "; ".join(
            f"{d['name']} min {d['range']['min']} opt {d['range']['opt']} max {d['range']['max']}"
            for d in rep["inputs"] if "range" in d))
    print("outputs: " + ", ".join(f"{d['name']} {_shape(d)}" for d in rep["outputs"]))
    if rep["targets"]:
        for t, d in rep["target_details"].items():
            print(f"target {t}: {d['kernels']} kernels, cubin {_fmt_bytes(d['cubin_bytes'])}, PTX "
                  f"{_fmt_bytes(d['ptx_bytes'])}, max shared memory {d['max_shared']} B, triton {', '.join(d['triton'])}")
    else:
        print("targets: none (kernels are JIT-compiled by Triton on the GPU at first run)")
    print(f"\nkernels ({len(rep['kernels'])}):")
    rows = [("#", "kernel", "template", "fuses", "grid", "warps", "tile", "dtypes")]
    for i, k in enumerate(rep["kernels"]):
        ops = k["fuses"]
        fuses = " + ".join(ops) if len(ops) <= 5 else " + ".join(ops[:5]) + f" (+{len(ops) - 5})"
        dts = sorted({a["dtype"] for a in k["args"]})
        ce = k["constexprs"]
        tile = (f"{ce.get('BLOCK_M')}x{ce.get('BLOCK_N')}x{ce.get('BLOCK_K')}/{k['num_stages']}st {k['tile']}"
                if k["tile"] else "-")
        rows.append((str(i), k["name"], k["template"], fuses, "x".join(map(_dim, k["grid"])), str(k["num_warps"]),
                     tile, ",".join(dts)))
    widths = [min(max(len(r[c]) for r in rows), 48) for c in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c[:48].ljust(w) for c, w in zip(r, widths)).rstrip())
    if args.verbose:
        for k in rep["kernels"]:
            print(f"\n  {k['name']} ({k['template']}, node {k['node']}): rules {k['rules'] or '-'}")
            for a in k["args"]:
                print(f"    {a['param']:<6} {a['buffer']:<40} {_shape(a)}")
            for t, b in k["binaries"].items():
                print(f"    {t}: symbol {b['symbol']}, {b['num_warps']} warps, shared {b['shared']} B, cubin "
                      f"{b['cubin_bytes']} B, global scratch {b['global_scratch_size']} B")
    mp = rep["memory_plan"]
    print(f"\nmemory plan: {len(mp['buffers'])} intermediate buffer(s) in one arena of {mp['arena_bytes']} bytes "
          f"(one buffer per tensor would need {mp['naive_bytes']})")
    if args.verbose:
        for b in mp["buffers"]:
            print(f"  {b['offset']:>10}  {b['bytes']:>10} B  {_shape(b):<24} {b['buffer']}  live {b['lifetime']}")
    if rep["rules_fired"]:
        print("\nrules fired: " + ", ".join(f"{r} x{n}" for r, n in rep["rules_fired"].items()))
    if args.verbose and rep["rules_skipped"]:
        print("rules skipped: " + ", ".join(f"{r} x{n}" for r, n in rep["rules_skipped"].items()))
    if rep["precision_report"]:
        counts: dict[str, int] = {}
        for r in rep["precision_report"]:
            counts[r["precision"]] = counts.get(r["precision"], 0) + 1
        print("\nlayer precision: " + ", ".join(f"{n} {p}" for p, n in counts.items()) + " GEMM/conv layer(s)")
        for r in rep["precision_report"] if args.verbose else []:
            err = "-" if r.get("error") is None else f"{r['error']:.4f}"
            print(f"  {r['layer']:<40} {r['precision']:<5} error {err:<7} {r['reason']}")
    return 0


# ---------------------------------------------------------------------------------------------- bench
def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def cmd_bench(args: argparse.Namespace) -> int:
    device = _device(args.device)
    engine = _load_engine(args)
    inputs, source = _read_inputs(engine, args, device)
    cuda = device.type == "cuda"
    iters = args.iters or (100 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    if args.cuda_graph and not cuda:
        raise InputError("--cuda-graph needs a GPU")
    mode = _execution(engine, device)
    _progress(f"loaded {args.engine} in {engine._load_seconds:.2f} s; {device}, {mode}; inputs {source}")
    t0 = time.perf_counter()
    with torch.no_grad():
        engine.run(*inputs)
    if cuda:
        torch.cuda.synchronize()
    first_ms = (time.perf_counter() - t0) * 1e3
    _progress(f"first inference {first_ms:.1f} ms; warming up ({warmup}) and timing {iters} iterations")
    with torch.no_grad():
        for _ in range(warmup):
            engine.run(*inputs)
        step = lambda: engine.run(*inputs)  # noqa: E731
        if args.cuda_graph:
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                engine.run(*inputs)
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(graph):
                engine.run(*inputs)
            step = graph.replay
        times = []
        if cuda:
            evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
            torch.cuda.synchronize()
            w0 = time.perf_counter()
            for a, b in evs:
                a.record()
                step()
                b.record()
            torch.cuda.synchronize()
            wall = time.perf_counter() - w0
            times = [a.elapsed_time(b) for a, b in evs]
        else:
            w0 = time.perf_counter()
            for _ in range(iters):
                t = time.perf_counter()
                step()
                times.append((time.perf_counter() - t) * 1e3)
            wall = time.perf_counter() - w0
    batch = inputs[0].shape[0] if inputs and inputs[0].dim() else 1
    res = {"engine": args.engine, "device": str(device), "execution": mode, "cuda_graph": bool(args.cuda_graph),
           "iters": iters, "load_s": round(engine._load_seconds, 4), "first_inference_ms": round(first_ms, 4),
           "mean_ms": sum(times) / len(times), "min_ms": min(times), "max_ms": max(times),
           **{f"p{q}_ms": _percentile(times, q) for q in (50, 90, 95, 99)},
           "throughput_per_s": iters / wall, "batch": batch, "samples_per_s": iters * batch / wall}
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{args.engine} on {device} ({mode}{', CUDA graph' if args.cuda_graph else ''}), {iters} iterations")
    print(f"  latency ms: mean {res['mean_ms']:.3f}  min {res['min_ms']:.3f}  p50 {res['p50_ms']:.3f}  "
          f"p90 {res['p90_ms']:.3f}  p95 {res['p95_ms']:.3f}  p99 {res['p99_ms']:.3f}  max {res['max_ms']:.3f}")
    print(f"  throughput: {res['throughput_per_s']:.1f} inferences/s ({res['samples_per_s']:.1f} samples/s at batch "
          f"{batch}); load {engine._load_seconds:.2f} s, first inference {first_ms:.1f} ms")
    if not cuda:
        print("  (CPU: kernels run under Triton's interpreter; these times say nothing about GPU speed)")
    return 0


# ---------------------------------------------------------------------------------------------- compare
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 2e-2}


def _fits(engine: Any, example: tuple[torch.Tensor, ...]) -> bool:
    """Whether the factory's example inputs are inputs the engine takes (any batch in a dynamic range)."""
    from trtjit.dynamic import batch_of

    if len(example) != len(engine.input_specs) or [t.dtype for t in example] != [s.dtype for s in engine.input_specs]:
        return False
    try:
        for i, (t, s, n) in enumerate(zip(example, engine.input_specs, engine.input_names)):
            batch_of(n, i, s.shape, tuple(t.shape))
    except InputError:
        return False
    return True


def cmd_compare(args: argparse.Namespace) -> int:
    from trtjit.cli import max_rel_error

    device = _device(args.device)
    engine = _load_engine(args)
    if bool(args.model) == bool(args.onnx):
        raise InputError("compare needs the reference: a MODEL (module:factory) or --onnx FILE (onnxruntime)")
    _progress(f"loaded {args.engine} in {engine._load_seconds:.2f} s; loading reference model {args.model or args.onnx}")
    model, example = load_factory(args.model) if args.model else (None, ())
    if args.inputs:
        inputs, source = _read_inputs(engine, args, device)
    elif _fits(engine, example) and not args.random:
        inputs, source = [t.to(device) for t in example], "the factory's example inputs"
    else:
        b = _engine_batch(engine, args)
        inputs, source = _random_inputs(engine, args.seed, device, b), f"random (seed {args.seed})"
    precision = engine.options.precision
    tol = args.rtol if args.rtol is not None else (5e-3 if engine.options.tf32 and precision == "fp32"
                                                   else TOLERANCES.get(precision, 1e-2))
    refname = "onnxruntime" if args.onnx else "PyTorch"
    _progress(f"running engine ({_execution(engine, device)}) and {refname} on {device} with {source}")
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # an fp32 reference
    try:
        if args.onnx:
            outs, ref = _run_onnxruntime(engine, args.onnx, inputs)
        else:
            outs, ref = _run_both(engine, model, inputs, device, args.fp64_reference)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    if len(ref) != len(outs):
        print(f"FAIL: the engine has {len(outs)} outputs, the model {len(ref)}")
        return 1
    ok = True
    print(f"{'output':<10} {'shape':<20} {'dtype':<10} {'max abs err':>12} {'max rel err':>12}  tolerance")
    for i, (o, r) in enumerate(zip(outs, ref)):
        shape_ok = tuple(o.shape) == tuple(r.shape)
        if not shape_ok:
            print(f"output_{i:<3} shape {list(o.shape)} vs {refname} {list(r.shape)}: FAIL")
            ok = False
            continue
        abs_err = float((o.double() - r.double()).abs().max()) if o.numel() else 0.0
        rel = max_rel_error(o, r)
        good = rel <= tol or abs_err <= args.atol
        finite = bool(torch.isfinite(o.double()).all()) or not bool(torch.isfinite(r.double()).all())
        good = good and finite
        ok &= good
        print(f"output_{i:<3} {str(list(o.shape)):<20} {str(o.dtype).replace('torch.', ''):<10} {abs_err:>12.3e} "
              f"{rel:>12.3e}  {tol:.0e}  {'PASS' if good else 'FAIL'}{'' if finite else ' (non-finite values)'}")
    print(f"PASS: engine matches {refname}" if ok else f"FAIL: engine output differs from {refname} beyond tolerance")
    return 0 if ok else 1


def _run_onnxruntime(engine: Any, path: str, inputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The engine's outputs and onnxruntime's (CPU) for the same inputs, matched by the ONNX output names."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("--onnx: comparing against onnxruntime needs the onnxruntime package") from None
    if not Path(path).is_file():
        raise InputError(f"--onnx {path}: no such file")
    with torch.no_grad():
        outs = engine.run(*inputs)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in sess.get_inputs()}
    feed = {n: t.detach().cpu().numpy() for n, t in zip(engine.input_names, inputs) if n in feed_names}
    missing = feed_names - set(feed)
    if missing:
        raise InputError(f"--onnx {path}: the model's inputs {sorted(missing)} are not inputs of the engine "
                         f"({engine.input_names}); was it built from another model?")
    names = [o.name for o in sess.get_outputs()]
    want = engine.output_names if set(engine.output_names) <= set(names) else names
    ref = sess.run(want, feed)
    return outs, [torch.from_numpy(np.ascontiguousarray(r)).to(o.device) for r, o in zip(ref, outs)]


def _run_both(engine: Any, model: torch.nn.Module, inputs: list[torch.Tensor], device: torch.device,
              fp64: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    with torch.no_grad():
        outs = engine.run(*inputs)
        ref_model, ref_inputs = model.to(device), inputs
        if fp64:
            ref_model = ref_model.double()
            ref_inputs = [t.double() if t.is_floating_point() else t for t in inputs]
        return outs, pytree.tree_leaves(ref_model(*ref_inputs))


# ---------------------------------------------------------------------------------------------- parser
def register(parser: argparse.ArgumentParser, sub: Any) -> None:
    """Add build, run, inspect, bench and compare to the ``trtjit`` parser."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (parser.epilog + "\n\n" if parser.epilog else "") + WORKFLOW
    fmt = argparse.RawDescriptionHelpFormatter

    def engine_args(p: argparse.ArgumentParser, inputs: bool = True) -> None:
        p.add_argument("engine", help="engine file (.plan) written by `trtjit build` or Engine.save")
        p.add_argument("--key-file", help="file holding the signing key (default: $TRTJIT_SIGNING_KEY); "
                                          "unsigned or altered engines are then refused")
        p.add_argument("--rebuild", action="store_true",
                       help="if the engine has no binary for this GPU's arch, JIT-compile its kernels from the IR")
        if inputs:
            p.add_argument("--inputs", nargs="+", metavar="FILE",
                           help="inputs: .npz (arrays named after the inputs, or arr_0...) or .npy files in input "
                                "order, or NAME=FILE.npy; default: random")
            p.add_argument("--seed", type=int, default=0, help="seed of random inputs (default 0)")
            p.add_argument("--batch", type=int, metavar="N",
                           help="batch size of random inputs for an engine built with --shapes (default: its opt)")
            p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                           help="where to run (default: the GPU if any, else the CPU under Triton's interpreter)")

    b = sub.add_parser("build", help="compile a model into an engine file", formatter_class=fmt,
                       description="Compile a PyTorch model into an engine file (like trtexec --saveEngine).",
                       epilog="example:\n  trtjit build 'trtjit.examples:example(name=\"mlp\")' -o mlp.plan "
                              "--target sm_90\n  trtjit build mymodels.py:resnet --fp16 -o resnet.plan")
    b.add_argument("model", nargs="?", help="Python factory returning (model, example_inputs): module:function or "
                                            "file.py:function, optionally with literal arguments")
    b.add_argument("--onnx", metavar="FILE", help="build from an ONNX file instead (input shapes: declared in the "
                                                   "file, or --shapes)")
    b.add_argument("-o", "--output", default="model.plan", help="engine file to write (default model.plan)")
    b.add_argument("--opt-level", type=int, default=2, choices=(0, 1, 2, 3),
                   help="0: one kernel per op; 1: fold and clean up; 2: also fuse (default); 3: also time "
                        "candidate GEMM/conv tiles on the GPU (slower build)")
    b.add_argument("--tuning-cache", metavar="FILE",
                   help="tuning cache to reuse tiles from (and, at --opt-level 3, to add measured tiles to)")
    b.add_argument("--target", action="append", metavar="SM",
                   help="GPU arch to cross-compile cubin + PTX for (sm_80, sm_90, ...); repeat or comma-separate. "
                        "No GPU needed. Without it kernels are JIT-compiled on the GPU at load")
    prec = b.add_argument_group("precision (default fp32)")
    for flag, what in (("fp16", "store tensors in float16, compute in fp32 inside kernels"),
                       ("bf16", "store tensors in bfloat16, compute in fp32 inside kernels"),
                       ("int8", "int8 GEMM/conv with the scales of --calib-cache"),
                       ("fp8", "fp8 (e4m3) GEMMs with the scales of --calib-cache (sm_89/sm_90 and newer)")):
        prec.add_argument(f"--{flag}", action="store_true", help=what)
    prec.add_argument("--calib-cache", metavar="FILE",
                      help="int8 calibration cache (TensorRT text format) written by a calibrated build or TensorRT")
    prec.add_argument("--tf32", action="store_true", help="let fp32 GEMMs use TF32 tensor cores")
    prec.add_argument("--keep-fp32", action="append", metavar="NAME",
                      help="node name, prefix or op type that stays fp32 under --fp16/--bf16/--int8 (repeatable)")
    b.add_argument("--key-file", help="sign the engine with the key in this file (default: $TRTJIT_SIGNING_KEY)")
    b.add_argument("--shapes", action="append", metavar="NAME:MIN,OPT,MAX",
                   help="a batch range for input NAME (its name in forward(), or its position 0, 1, ...): three "
                        "shapes, e.g. x:1x3x224x224,8x3x224x224,32x3x224x224. One engine then serves every batch "
                        "from MIN to MAX, tuned for OPT; only the batch dim may vary, the same for every input "
                        "given; repeat for several inputs. NAME:SHAPE gives a fixed shape (ONNX inputs with open "
                        "dims). Default: the example inputs' shapes (ONNX: the shapes the file declares)")
    b.add_argument("-v", "--verbose", action="store_true", help="print the kernel table")
    b.set_defaults(fn=cmd_build)

    r = sub.add_parser("run", help="run an engine on inputs from .npy/.npz or random; write outputs to .npz",
                       formatter_class=fmt, description="Run an engine once and print/write its outputs.",
                       epilog="example:\n  trtjit run mlp.plan --inputs x.npy -o out.npz")
    engine_args(r)
    r.add_argument("-o", "--output", metavar="FILE.npz", help="write the outputs here (output_0, output_1, ...)")
    r.set_defaults(fn=cmd_run)

    i = sub.add_parser("inspect", help="show an engine's kernels, fused ops, dtypes, memory plan, rules, targets",
                       formatter_class=fmt, description="Describe an engine file without running it "
                                                        "(like TensorRT's engine inspector).")
    engine_args(i, inputs=False)
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("-v", "--verbose", action="store_true",
                   help="per-kernel buffers and binaries, every planned buffer, rules skipped")
    i.set_defaults(fn=cmd_inspect)

    be = sub.add_parser("bench", help="measure latency percentiles and throughput", formatter_class=fmt,
                        description="Time repeated inferences of an engine (CUDA events on a GPU).",
                        epilog="example:\n  trtjit bench mlp.plan --iters 500 --cuda-graph")
    engine_args(be)
    be.add_argument("--iters", type=int, help="timed iterations (default 100 on a GPU, 3 under the interpreter)")
    be.add_argument("--warmup", type=int, help="untimed iterations first (default 10 on a GPU, 1 on the CPU)")
    be.add_argument("--cuda-graph", action="store_true", help="capture one inference in a CUDA graph and replay it")
    be.add_argument("--json", action="store_true", help="machine-readable output")
    be.set_defaults(fn=cmd_bench)

    c = sub.add_parser("compare", help="check an engine against PyTorch or onnxruntime, output by output (exit 1 on "
                                       "mismatch)",
                       formatter_class=fmt,
                       description="Run an engine and the PyTorch model it was built from (or onnxruntime on its "
                                   "ONNX file, --onnx) on the same inputs and compare every output by "
                                   "max|engine - reference| / max|reference|.",
                       epilog="example:\n  trtjit compare mlp.plan 'trtjit.examples:example(name=\"mlp\")' --rtol 1e-4")
    engine_args(c)
    c.add_argument("model", nargs="?", help="the factory the engine was built from (module:function or file.py:function)")
    c.add_argument("--onnx", metavar="FILE", help="compare against onnxruntime running this ONNX file instead")
    c.add_argument("--rtol", type=float, help="max relative error (default by precision: fp32 1e-4, tf32 5e-3, "
                                              "fp16 1e-2, bf16 2e-2)")
    c.add_argument("--atol", type=float, default=0.0, help="also pass an output whose max abs error is below this")
    c.add_argument("--random", action="store_true", help="use random inputs rather than the factory's examples")
    c.add_argument("--fp64-reference", action="store_true", help="run the PyTorch reference in float64")
    c.set_defaults(fn=cmd_compare)
