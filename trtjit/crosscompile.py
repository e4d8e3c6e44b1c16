"""Cross-compilation: cubin + PTX of every generated kernel for GPU archs this machine need not have.

Triton picks interpreter or compiler when it is imported, and an interpreting process (no GPU) cannot
compile; so ``compile_kernels`` runs ``trtjit/xc_worker.py`` as a script in subprocesses with
``TRITON_INTERPRET=0`` (it imports Triton alone: no torch, so a worker starts in a fraction of a second). A job is JSON (on stdin, or a file named on the command line): the kernels'
generated sources, their pointer argument dtypes, constexprs and launch options, and the targets. The
worker compiles each (kernel, target) with ``triton.compile`` for a ``GPUTarget`` and writes the cubin,
the PTX and the launch metadata (symbol, warps, shared memory, scratch sizes, which parameters are
constexpr and therefore not passed) to the result file. Only trtjit's own generated sources are
compiled: the parent process generated them from the IR a moment before.

Engine files keep these per target in three checksummed sections (``binaries/<arch>/meta``, ``.../cubin``,
``.../ptx``); ``read_binaries`` validates them against the kernels regenerated from the IR.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from trtjit.errors import BuildError, KernelCompileError
from trtjit.xc_worker import LAUNCH_FIELDS as _LAUNCH_FIELDS
from trtjit.xc_worker import arch_number, source_hash  # noqa: F401  (re-exported)

log = logging.getLogger("trtjit.crosscompile")

SECTION_PREFIX = "binaries/"


@dataclass
class KernelBinary:
    """One kernel compiled for one GPU arch, and everything needed to launch it without Triton."""

    kernel: str                 # trtjit's kernel name (KernelSpec.name)
    target: str                 # "sm_90"
    symbol: str                 # the function's name inside the cubin
    cubin: bytes
    ptx: str
    params: list[list[str]]     # [name, triton type] of each passed parameter, in order (constexprs excluded):
    #                             pointers, then ["nb", "i32"] for a dynamic-batch kernel (trtjit.dynamic)
    constexprs: dict[str, Any]  # compiled in, not passed
    source_sha256: str          # of the kernel source it was compiled from
    num_warps: int = 4
    num_ctas: int = 1
    num_stages: int = 2
    shared: int = 0             # dynamic shared memory bytes
    global_scratch_size: int = 0
    global_scratch_align: int = 1
    profile_scratch_size: int = 0
    profile_scratch_align: int = 1
    launch_cooperative_grid: bool = False
    launch_pdl: bool = False
    tmem_size: int = 0
    triton_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """Everything but the binaries (JSON)."""
        d = {k: getattr(self, k) for k in ("kernel", "target", "symbol", "params", "constexprs", "source_sha256",
                                           "triton_version", *_LAUNCH_FIELDS)}
        d["cubin_bytes"] = len(self.cubin)
        d["ptx_bytes"] = len(self.ptx.encode())
        return d

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta(), "cubin_b64": base64.b64encode(self.cubin).decode(), "ptx": self.ptx}

    @staticmethod
    def from_json(d: dict[str, Any]) -> KernelBinary:
        return _binary_from_result(d)


# ---------------------------------------------------------------------------------------------- parent side
def arg_dtypes(graph: Any, kernel: Any) -> list[str]:
    """The dtype names of the buffers ``kernel`` is launched on: a binary is compiled for them, so they belong
    to every key that stands for one (binary sharing here, the tuning cache's kernel key)."""
    from trtjit.ir import dtype_name
    return [dtype_name(graph.spec(a).dtype) for a in kernel.args]


def _job_kernels(graph: Any, kernels: list[Any]) -> list[dict[str, Any]]:
    return [{"name": k.name, "source": k.source, "arg_dtypes": arg_dtypes(graph, k),
             "constexprs": k.constexprs, "num_warps": k.num_warps, "num_stages": k.num_stages,
             "batch_arg": bool(getattr(k, "batch_arg", False)), "maxnreg": int(getattr(k, "maxnreg", 0))}
            for k in kernels]


def compile_kernels(graph: Any, kernels: list[Any], targets: tuple[str, ...] | list[str],
                    workers: int | None = None) -> dict[str, list[KernelBinary]]:
    """Compile every kernel for every target in worker subprocesses; {target: [KernelBinary per kernel]}.

    Progress goes to the ``trtjit.crosscompile`` logger (INFO per kernel). A kernel Triton cannot
    compile raises KernelCompileError (a BuildError) naming the kernel and the target.
    """
    targets = list(targets)
    if not targets or not kernels:
        return {t: [] for t in targets}
    # kernels identical up to their name and comments (repeated blocks) compile once and share the binary
    from trtjit.codegen.common import kernel_identity

    # The pointer dtypes belong to the key: a cubin is compiled for them (Triton's JIT specializes on them too),
    # and two kernels of one source may read buffers of different types (an int32 and an int64 index gather).
    jobs = _job_kernels(graph, kernels)
    first: dict[tuple, int] = {}
    rep = [first.setdefault((kernel_identity(k.source, k.name), json.dumps(k.constexprs, sort_keys=True),
                             k.num_warps, k.num_stages, tuple(jobs[i]["arg_dtypes"])), i)
           for i, k in enumerate(kernels)]
    # Longest first, dealt round-robin: GEMM and attention kernels take seconds to compile, a pointwise one a
    # fraction, and the build waits for the slowest worker. A worker starts in ~0.3 s (it imports Triton only),
    # so one per core pays off down to a task or two each.
    tasks = sorted(((i, t) for t in targets for i in sorted(set(rep))), key=lambda it: -len(kernels[it[0]].source))
    n = workers or max(1, min(_usable_cpus(), 16, len(tasks)))
    shards = [tasks[s::n] for s in range(n) if tasks[s::n]]
    t0 = time.perf_counter()
    log.info("cross-compiling %d kernels (%d distinct) for %s in %d worker process(es)", len(kernels),
             len(set(rep)), ", ".join(targets), len(shards))
    results: dict[tuple[int, str], KernelBinary] = {}
    counter = {"done": 0, "total": len(tasks)}
    with tempfile.TemporaryDirectory(prefix="trtjit-xc-") as tmp:
        procs = []
        for s, shard in enumerate(shards):
            job = {"targets": targets, "kernels": {str(i): jobs[i] for i, _ in shard},
                   "tasks": [[i, t] for i, t in shard]}
            out = os.path.join(tmp, f"result{s}.json")
            procs.append((_start_worker(job, out, counter), out, shard))
        errors = []
        for (proc, reader), out, _shard in procs:
            proc.wait()
            reader.join()
            res = _read_result(out, proc, reader)
            if not res.get("ok"):
                errors.append(res)
                continue
            for r in res["results"]:
                b = _binary_from_result(r)
                results[(int(r["index"]), b.target)] = b
    if errors:
        e = errors[0]
        raise KernelCompileError(f"cross-compilation failed for kernel {e.get('kernel', '?')!r} on "
                                 f"{e.get('target', '?')}: {e.get('error', 'unknown error')}",
                                 kernel=str(e.get("kernel", "?")), target=str(e.get("target", "?")))
    out_map: dict[str, list[KernelBinary]] = {}
    for t in targets:
        out_map[t] = []
        for i, k in enumerate(kernels):
            if (rep[i], t) not in results:
                raise BuildError(f"cross-compilation returned no binary for kernel {k.name!r} on {t}")
            b = results[(rep[i], t)]
            if rep[i] != i:
                b = replace(b, kernel=k.name, source_sha256=source_hash(k.source))
            out_map[t].append(b)
    log.info("cross-compiled %d kernel binaries in %.1f s", len(tasks), time.perf_counter() - t0)
    return out_map


def _usable_cpus() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xc_worker.py")


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TRITON_INTERPRET"] = "0"
    return env


def _start_worker(job: dict[str, Any], out: str, counter: dict[str, int]) -> tuple[subprocess.Popen, Any]:
    # the worker runs as a plain script: it imports Triton only, not torch or trtjit (seconds per process)
    proc = subprocess.Popen([sys.executable, _WORKER, "-", "--out", out],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=_worker_env(), text=True)
    tail: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            if line.startswith("trtjit-xc: "):
                counter["done"] += 1
                log.info("[%d/%d] %s", counter["done"], counter["total"], line[len("trtjit-xc: "):])
            elif line:
                tail.append(line)
                del tail[:-40]

    reader = threading.Thread(target=pump, daemon=True)
    reader.tail = tail  # type: ignore[attr-defined]
    reader.start()
    assert proc.stdin is not None

    def feed() -> None:  # in a thread: the pipe blocks until the worker reads, and workers start in parallel
        try:
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
        except BrokenPipeError:
            pass

    threading.Thread(target=feed, daemon=True).start()
    return proc, reader


def _read_result(out: str, proc: subprocess.Popen, reader: Any) -> dict[str, Any]:
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        tail = "\n".join(getattr(reader, "tail", [])[-15:])
        return {"ok": False, "kernel": "?", "target": "?",
                "error": f"worker process exited with status {proc.returncode} and no result:\n{tail}"}


def _binary_from_result(r: dict[str, Any]) -> KernelBinary:
    m = r["meta"]
    return KernelBinary(kernel=m["kernel"], target=m["target"], symbol=m["symbol"],
                        cubin=base64.b64decode(r["cubin_b64"]), ptx=r["ptx"], params=m["params"],
                        constexprs=m["constexprs"], source_sha256=m["source_sha256"],
                        triton_version=m.get("triton_version", ""),
                        **{k: m[k] for k in _LAUNCH_FIELDS})


# ---------------------------------------------------------------------------------------------- engine files
def binary_sections(binaries: dict[str, list[KernelBinary]]) -> dict[str, bytes]:
    """The engine-file sections holding ``binaries`` (three per target)."""
    sections: dict[str, bytes] = {}
    for target, bins in sorted(binaries.items()):
        metas: list[dict[str, Any]] = []
        blobs: dict[str, dict[bytes, int]] = {"cubin": {}, "ptx": {}}  # identical binaries are stored once
        for b in bins:
            m = b.meta()
            for part, data in (("cubin", b.cubin), ("ptx", b.ptx.encode())):
                seen = blobs[part]
                if data not in seen:
                    seen[data] = sum(len(d) for d in seen)
                m[f"{part}_range"] = [seen[data], len(data)]
            metas.append(m)
        sections[f"{SECTION_PREFIX}{target}/meta"] = json.dumps(metas, sort_keys=True).encode()
        sections[f"{SECTION_PREFIX}{target}/cubin"] = b"".join(blobs["cubin"])
        sections[f"{SECTION_PREFIX}{target}/ptx"] = b"".join(blobs["ptx"])
    return sections


def build_log_section(engine: Any) -> dict[str, bytes]:
    """The pass log (rules fired and skipped) as an engine-file section, so ``trtjit inspect`` can show it."""
    import dataclasses
    recs = [dataclasses.asdict(r) for r in getattr(engine, "build_log", [])]
    return {"build_log": json.dumps(recs, default=str).encode()} if recs else {}


def read_build_log(path: Any, sections: dict[str, bytes]) -> list[Any]:
    from trtjit.engine_file import EngineFileError
    from trtjit.passmanager import PassRecord

    if "build_log" not in sections:
        return []
    try:
        return [PassRecord(**r) for r in json.loads(sections["build_log"])]
    except (ValueError, TypeError) as e:
        raise EngineFileError(f"{path}: malformed build log section: {type(e).__name__}: {e}") from None


def read_binaries(path: Any, header: dict[str, Any], sections: dict[str, bytes],
                  kernels: list[Any]) -> dict[str, list[KernelBinary]]:
    """The binaries of an engine file, checked against the header's ``targets`` and the kernels regenerated
    from the IR. Raises EngineFileError naming what does not fit."""
    from trtjit.engine_file import EngineFileError
    from trtjit.options import TARGETS

    targets = header.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) and t in TARGETS for t in targets):
        raise EngineFileError(f"{path}: engine header lists malformed targets {targets!r}")
    listed = {f"{SECTION_PREFIX}{t}/{part}" for t in targets for part in ("meta", "cubin", "ptx")}
    present = {s for s in sections if s.startswith(SECTION_PREFIX)}
    if listed - present:
        raise EngineFileError(f"{path}: engine header lists targets {targets} but section(s) "
                              f"{sorted(listed - present)} are missing")
    if present - listed:
        raise EngineFileError(f"{path}: engine file has binary section(s) {sorted(present - listed)} for targets "
                              f"its header does not list ({targets})")
    out: dict[str, list[KernelBinary]] = {}
    for t in targets:
        try:
            metas = json.loads(sections[f"{SECTION_PREFIX}{t}/meta"])
            cubin_blob = sections[f"{SECTION_PREFIX}{t}/cubin"]
            ptx_blob = sections[f"{SECTION_PREFIX}{t}/ptx"]
            if not isinstance(metas, list) or len(metas) != len(kernels):
                raise EngineFileError(f"{path}: {t} holds {len(metas) if isinstance(metas, list) else '?'} kernel "
                                      f"binaries for {len(kernels)} kernels")
            bins = []
            for k, m in zip(kernels, metas):
                bins.append(_check_meta(path, t, k, m, cubin_blob, ptx_blob))
            out[t] = bins
        except EngineFileError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
            raise EngineFileError(f"{path}: malformed {t} binary metadata: {type(e).__name__}: {e}") from None
    return out


def _check_meta(path: Any, target: str, k: Any, m: dict[str, Any], cubin_blob: bytes, ptx_blob: bytes) -> KernelBinary:
    from trtjit.engine_file import EngineFileError

    def bad(what: str) -> EngineFileError:
        return EngineFileError(f"{path}: {target} binary of kernel {k.name!r}: {what}")

    if m["kernel"] != k.name or m["target"] != target:
        raise bad(f"is labelled {m['kernel']!r} for {m['target']!r}")
    if m["source_sha256"] != source_hash(k.source):
        raise bad("was compiled from a different source than the kernel regenerated from the IR (rebuild it)")
    from trtjit.dynamic import ARG

    params = m["params"]
    batch = [[ARG, "i32"]] if getattr(k, "batch_arg", False) else []
    if (not isinstance(params, list) or len(params) != len(k.args) + len(batch) or params[len(k.args):] != batch
            or not all(isinstance(p, list) and len(p) == 2 and str(p[1]).startswith("*") for p in params[:len(k.args)])):
        raise bad(f"its parameters {params!r} do not match the kernel's {len(k.args)} pointer arguments"
                  f"{' and its batch argument' if batch else ''}")
    if m["constexprs"] != k.constexprs:
        raise bad(f"constexprs {m['constexprs']} differ from the kernel's {k.constexprs}")
    ints = {f: m[f] for f in ("num_warps", "num_ctas", "num_stages", "shared", "global_scratch_size",
                              "global_scratch_align", "profile_scratch_size", "profile_scratch_align", "tmem_size")}
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in ints.values()):
        raise bad(f"launch metadata {ints} is not all non-negative integers")
    for f in ("global_scratch_align", "profile_scratch_align"):
        v = ints[f]
        if v < 1 or v & (v - 1) or v > 1024:
            raise bad(f"{f}={v} is not a power of two")
    w = ints["num_warps"]  # a power of two, or whole warpgroups (a warp-specialized kernel: 4 + 4 + 1 -> 12)
    if not (1 <= w <= 32 and (w & (w - 1) == 0 or w % 4 == 0)):
        raise bad(f"num_warps={w} is not a power of two or a multiple of 4 up to 32")
    if not isinstance(m["symbol"], str) or not m["symbol"]:
        raise bad("has no kernel symbol")
    (ca, cn), (pa, pn) = m["cubin_range"], m["ptx_range"]
    if not all(isinstance(v, int) and v >= 0 for v in (ca, cn, pa, pn)) or ca + cn > len(cubin_blob) \
            or pa + pn > len(ptx_blob) or cn == 0:
        raise bad("its cubin/PTX byte ranges do not fit the sections")
    return KernelBinary(kernel=k.name, target=target, symbol=m["symbol"], cubin=bytes(cubin_blob[ca:ca + cn]),
                        ptx=ptx_blob[pa:pa + pn].decode(), params=params, constexprs=m["constexprs"],
                        source_sha256=m["source_sha256"], triton_version=str(m.get("triton_version", "")),
                        launch_cooperative_grid=bool(m["launch_cooperative_grid"]), launch_pdl=bool(m["launch_pdl"]),
                        **ints)
