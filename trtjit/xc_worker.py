"""The cross-compilation worker: compiles trtjit's generated kernels for GPU targets with ``triton.compile``.

``trtjit.crosscompile`` runs this file as a plain script (``python .../trtjit/xc_worker.py JOB --out RESULT``)
with ``TRITON_INTERPRET=0``. As a script it imports nothing from trtjit, and so neither torch: a worker is up
in a fraction of a second instead of the seconds ``import torch`` takes, which dominated builds on machines
with few effective cores. The package imports this module too (``load_kernel``, ``source_hash``,
``LAUNCH_FIELDS``), so there is one copy of each.
"""

from __future__ import annotations

import base64
import hashlib
import json
import linecache
import os
import sys
import time
from typing import Any

BATCH_ARG = "nb"  # the runtime batch argument of dynamic-batch kernels (trtjit.dynamic.ARG; no trtjit import here)
PDL_ARG = "PDL"  # programmatic dependent launch constexpr of the templates (trtjit.codegen.common.PDL)
PDL_MIN_ARCH = 90  # griddepcontrol needs sm_90
LAUNCH_FIELDS = ("num_warps", "num_ctas", "num_stages", "shared", "global_scratch_size", "global_scratch_align",
                 "profile_scratch_size", "profile_scratch_align", "launch_cooperative_grid", "launch_pdl",
                 "tmem_size")


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def arch_number(target: str) -> int:
    return int(target.split("_", 1)[1])


def load_kernel(name: str, source: str) -> Any:
    """A ``@triton.jit`` function from generated source, registered in linecache so Triton can read it."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    filename = f"<trtjit-kernel {name} {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": f"trtjit_kernels.{name}"}
    exec(compile(source, filename, "exec"), namespace)  # trtjit's own generated code, never read from a file
    return namespace[name]


def compile_one(kern: dict[str, Any], target: str) -> dict[str, Any]:
    """Compile one job kernel for ``target`` ("sm_90"); the result holds cubin, PTX and launch metadata."""
    import triton
    from triton._utils import canonicalize_dtype
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = load_kernel(kern["name"], kern["source"])
    gluon = getattr(fn, "is_gluon", lambda: False)()  # a Gluon kernel (codegen.gluon_gemm): sm_90 only
    if gluon:
        from triton.experimental.gluon._runtime import GluonASTSource as ASTSource  # noqa: N814
        if arch_number(target) != 90:
            raise RuntimeError(f"kernel {kern['name']} is a Gluon Hopper kernel: it compiles for sm_90 only, "
                               f"not {target}")
    if not isinstance(fn, triton.runtime.jit.JITFunction):
        raise RuntimeError(f"expected a compiled triton.jit function, got {type(fn).__name__} (is TRITON_INTERPRET "
                           "off in this process?)")
    names = list(fn.arg_names)
    # Templates take a PDL constexpr (griddepcontrol prologue). It is compiled in, True where the arch has
    # programmatic dependent launch, and recorded as ``launch_pdl`` rather than among the kernel's constexprs.
    pdl = PDL_ARG in names and arch_number(target) >= PDL_MIN_ARCH
    constexprs = dict(kern["constexprs"], **({PDL_ARG: pdl} if PDL_ARG in names else {}))
    passed = [n for n in names if n not in constexprs]
    scalars = {BATCH_ARG} if kern.get("batch_arg") else set()  # the runtime batch: an unspecialized i32
    pointers = [n for n in passed if n not in scalars]
    if len(pointers) != len(kern["arg_dtypes"]) or not scalars <= set(passed):
        raise RuntimeError(f"kernel takes {len(passed)} non-constexpr arguments {passed}, job gives "
                           f"{len(kern['arg_dtypes'])} buffers{' and the batch' if scalars else ''}")
    ptr_types = {n: "*" + canonicalize_dtype(dt) for n, dt in zip(pointers, kern["arg_dtypes"])}
    ptr_types.update({n: "i32" for n in scalars})
    signature = {n: ("constexpr" if n in constexprs else ptr_types[n]) for n in names}
    # Pointers are assumed 16-byte aligned (as Triton's JIT specializes them); the engine makes sure they are.
    # The batch gets no divisibility hint, so one binary serves every batch.
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n not in constexprs and n not in scalars}
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", arch_number(target), 32),
                              options={"num_warps": kern["num_warps"], "num_stages": kern["num_stages"],
                                       **({"maxnreg": kern["maxnreg"]} if kern.get("maxnreg") else {})})
    md = compiled.metadata._asdict()
    meta = {"kernel": kern["name"], "target": target, "symbol": md["name"],
            "params": [[n, ptr_types[n]] for n in passed], "constexprs": dict(kern["constexprs"]),
            "source_sha256": source_hash(kern["source"]), "triton_version": triton.__version__}
    for f in LAUNCH_FIELDS:
        v = md.get(f, 0 if f not in ("num_ctas",) else 1)
        meta[f] = bool(v) if f.startswith("launch_") else int(v or 0)
    meta["launch_pdl"] = pdl
    for f in ("global_scratch_align", "profile_scratch_align"):
        meta[f] = max(1, meta[f])
    return {"meta": meta, "cubin_b64": base64.b64encode(compiled.asm["cubin"]).decode(),
            "ptx": compiled.asm["ptx"]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="trtjit/xc_worker.py",
                                description="Compile trtjit kernels for GPU targets (run by trtjit itself).")
    p.add_argument("job", help="job JSON file, or - for standard input")
    p.add_argument("--out", required=True, help="where to write the result JSON")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        result: dict[str, Any] = {"ok": False, "error": "cross-compilation must run with TRITON_INTERPRET=0"}
    else:
        job = json.load(sys.stdin) if args.job == "-" else json.load(open(args.job))
        result = {"ok": True, "results": []}
        for i, target in job["tasks"]:
            kern = job["kernels"][str(i)]
            t0 = time.perf_counter()
            try:
                r = compile_one(kern, target)
            except Exception as e:  # report which kernel and target, with Triton's message
                msg = str(e).strip() or type(e).__name__
                result = {"ok": False, "kernel": kern["name"], "target": target, "error": f"{type(e).__name__}: {msg}"}
                break
            r["index"] = i
            result["results"].append(r)
            print(f"trtjit-xc: {kern['name']} {target} ({len(base64.b64decode(r['cubin_b64']))} bytes cubin, "
                  f"{time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, args.out)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
