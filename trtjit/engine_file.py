"""Engine files ("plans"): one binary file that is data only.

Layout::

    magic  b"TRTJITPLAN\\x00\\x00"     12 bytes
    u32    format version             little endian
    u64    header length
    header JSON (utf-8)               versions, options, targets, build key, section table
    32 B   SHA-256 of the header
    32 B   HMAC-SHA256 of the header with the signing key (zeros when unsigned)
    sections                          graph JSON, weight bytes, kernel table JSON, ...

Every section carries its SHA-256 in the header, and the header its own, so a truncated or altered file
is refused before anything in it is used. Loading never unpickles and never executes text from the file:
kernels are regenerated from the IR by this trtjit's own code generator, and must reproduce the stored
sources exactly (else the file came from a different code generator and is refused).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from trtjit.errors import EngineError, TrtjitError
from trtjit.ir import DTYPES, Graph, dtype_name

MAGIC = b"TRTJITPLAN\x00\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<12sIQ")
_HASH = 32
WEIGHT_ALIGN = 64  # bytes: each weight's offset in the weights section is a multiple of every dtype's size


class EngineFileError(EngineError):
    """An engine file is corrupted, foreign, unsigned or for another version; the message says which."""


def _versions() -> dict[str, str]:
    import triton

    import trtjit
    return {"trtjit": trtjit.__version__, "triton": triton.__version__, "torch": torch.__version__.split("+")[0]}


def build_key(graph_json: bytes, options: dict[str, Any]) -> str:
    """Identifies what was built: the IR, the options and the compiler versions."""
    h = hashlib.sha256(graph_json)
    h.update(json.dumps(options, sort_keys=True).encode())
    h.update(json.dumps(_versions(), sort_keys=True).encode())
    return h.hexdigest()[:32]


def _weights_blob(graph: Graph) -> tuple[list[dict[str, Any]], bytes]:
    """The weight bytes, each weight starting at a multiple of WEIGHT_ALIGN (zero padding between), so a
    reader can view every weight in place at any dtype."""
    manifest, chunks, off = [], [], 0
    for key, t in sorted(graph.weights().items()):
        data = t.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        pad = -off % WEIGHT_ALIGN
        chunks.append(bytes(pad))
        off += pad
        manifest.append({"name": key, "dtype": dtype_name(t.dtype), "shape": list(t.shape), "offset": off,
                         "nbytes": len(raw)})
        chunks.append(raw)
        off += len(raw)
    return manifest, b"".join(chunks)


def save(engine: Any, path: str | os.PathLike, key: bytes | str | None = None) -> Path:
    """Write ``engine`` to ``path``; sign it when ``key`` is given."""
    graph_json = json.dumps(engine.graph.to_json(), sort_keys=True).encode()
    manifest, blob = _weights_blob(engine.graph)
    kernels = json.dumps([k.to_json() for k in engine.kernels], sort_keys=True).encode()
    options = engine.options.__dict__ | {"dump_dir": None}
    sections = {"graph": graph_json, "weights_manifest": json.dumps(manifest).encode(), "weights": blob,
                "kernels": kernels}
    sections.update(_extra_sections(engine))  # build log; cubin, PTX and launch metadata per target
    table, off = [], 0
    for name, data in sections.items():
        table.append({"name": name, "offset": off, "length": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        off += len(data)
    header = {"format_version": FORMAT_VERSION, "versions": _versions(), "options": options,
              "targets": getattr(engine, "targets", []), "build_key": build_key(graph_json, options),
              "sections": table, "signed": bool(key)}
    hbytes = json.dumps(header, sort_keys=True).encode()
    sig = hmac.new(_key_bytes(key), hbytes, hashlib.sha256).digest() if key else bytes(_HASH)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(hbytes)))
        f.write(hbytes)
        f.write(hashlib.sha256(hbytes).digest())
        f.write(sig)
        for data in sections.values():
            f.write(data)
    return path


def _key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def read(path: str | os.PathLike, key: bytes | str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Validate an engine file and return (header, sections). Raises EngineFileError naming the problem.

    Each section is read once into its own buffer (the weights into a writable ``memoryview`` that ``load``
    views without copying) and hashed there: a 260 MB engine is not copied three times on its way in."""
    p = Path(path)
    if not p.is_file():
        raise EngineFileError(f"{p}: no such engine file")
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size or prefix[:12] != MAGIC:
            raise EngineFileError(f"{p}: not a trtjit engine file (bad magic bytes)")
        _, version, hlen = _PREFIX.unpack(prefix)
        if version > FORMAT_VERSION:
            raise EngineFileError(f"{p}: engine format version {version} is newer than this trtjit reads "
                                  f"({FORMAT_VERSION}); upgrade trtjit")
        if version != FORMAT_VERSION:
            raise EngineFileError(f"{p}: engine format version {version} is not supported (expected "
                                  f"{FORMAT_VERSION})")
        body_start = _PREFIX.size + hlen + 2 * _HASH
        if hlen > size or body_start > size:
            raise EngineFileError(f"{p}: truncated engine file (header claims {hlen} bytes, file has {size})")
        hbytes = f.read(hlen)
        digest, sig = f.read(_HASH), f.read(_HASH)
        if hashlib.sha256(hbytes).digest() != digest:
            raise EngineFileError(f"{p}: engine header checksum mismatch (file corrupted)")
        if key:
            if sig == bytes(_HASH):
                raise EngineFileError(f"{p}: engine file is unsigned, but a signing key is configured")
            if not hmac.compare_digest(sig, hmac.new(_key_bytes(key), hbytes, hashlib.sha256).digest()):
                raise EngineFileError(f"{p}: engine signature does not match the configured key (altered or "
                                      "signed with another key)")
        try:
            header = json.loads(hbytes)
            sections: dict[str, Any] = {}
            for s in header["sections"]:
                off, n = int(s["offset"]), int(s["length"])
                if off < 0 or n < 0 or body_start + off + n > size:
                    raise EngineFileError(f"{p}: truncated engine file (section {s['name']!r} runs past the end)")
                f.seek(body_start + off)
                if s["name"] == "weights":  # uninitialized and writable: load() views it without a copy
                    chunk: bytes | memoryview = memoryview(torch.empty(n, dtype=torch.uint8).numpy())
                    got = f.readinto(chunk)
                else:
                    chunk = f.read(n)
                    got = len(chunk)
                if got != n:
                    raise EngineFileError(f"{p}: truncated engine file (section {s['name']!r} runs past the end)")
                if hashlib.sha256(chunk).hexdigest() != s["sha256"]:
                    raise EngineFileError(f"{p}: checksum mismatch in section {s['name']!r} (file corrupted)")
                sections[s["name"]] = chunk
            end = body_start + max((int(s["offset"]) + int(s["length"]) for s in header["sections"]), default=0)
            if size > end:
                raise EngineFileError(f"{p}: {size - end} unexpected byte(s) after the last section (file "
                                      "corrupted or appended to)")
            if header.get("signed") is False and sig != bytes(_HASH):
                raise EngineFileError(f"{p}: the signature field of this unsigned engine file is not empty (file "
                                      "corrupted)")
        except EngineFileError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise EngineFileError(f"{p}: malformed engine header: {type(e).__name__}: {e}") from None
    missing = {"graph", "weights_manifest", "weights", "kernels"} - set(sections)
    if missing:
        raise EngineFileError(f"{p}: engine file lacks section(s) {sorted(missing)}")
    return header, sections


def load(path: str | os.PathLike, key: bytes | str | None = None, rebuild: bool = False) -> Any:
    """Load an engine file written by ``save``; see the module docstring for what is checked.

    On a GPU, a file that holds kernel binaries (built with ``targets=``) must hold them for this GPU's
    arch, else it is refused naming the archs it has, unless ``rebuild`` lets Triton's JIT compile the
    kernels regenerated from the IR.

    The cyclic garbage collector is paused while loading: the graph, its JSON and the regenerated kernels
    are tens of thousands of new objects, whose allocation triggers collections (on the CPU machine, a full
    one now and then took 0.2 s of bert_base's 0.6 s load)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(path, key, rebuild)
    finally:
        if enabled:
            gc.enable()


def _load(path: str | os.PathLike, key: bytes | str | None, rebuild: bool) -> Any:
    from trtjit.builder import lower
    from trtjit.engine import Engine
    from trtjit.options import BuildOptions

    header, sections = read(path, key)
    vers = _versions()
    if header.get("versions", {}).get("trtjit") != vers["trtjit"]:
        raise EngineFileError(f"{path}: engine built by trtjit {header.get('versions', {}).get('trtjit')}, "
                              f"this is trtjit {vers['trtjit']}; rebuild the engine")
    try:
        manifest = json.loads(sections["weights_manifest"])
        blob = sections["weights"]
        base = torch.frombuffer(blob, dtype=torch.uint8) if len(blob) else torch.empty(0, dtype=torch.uint8)
        weights = {}
        for m in manifest:
            if m["dtype"] not in DTYPES:
                raise EngineFileError(f"{path}: weight {m['name']!r} has unknown dtype {m['dtype']!r}")
            a, n = int(m["offset"]), int(m["nbytes"])
            dt = DTYPES[m["dtype"]]
            shape = [int(s) for s in m["shape"]]
            count = 1
            for s in shape:
                count *= s
            if a < 0 or a + n > len(blob) or count * dt.itemsize != n:
                raise EngineFileError(f"{path}: weight {m['name']!r} does not fit its manifest entry")
            if not n:
                weights[m["name"]] = torch.empty(shape, dtype=dt)
                continue
            raw = base[a:a + n]  # a view of the file's weight bytes; writers align each weight (WEIGHT_ALIGN)
            weights[m["name"]] = (raw if a % dt.itemsize == 0 else raw.clone()).view(dt).reshape(shape)
        graph = Graph.from_json(json.loads(sections["graph"]), weights)
        graph.verify(context="load")
        opts = BuildOptions(**{k: v for k, v in header["options"].items() if k in BuildOptions.__dataclass_fields__})
        stored = json.loads(sections["kernels"])
    except EngineFileError:
        raise
    except TrtjitError as e:
        raise EngineFileError(f"{path}: engine contents are inconsistent: {e}") from None
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise EngineFileError(f"{path}: malformed engine contents: {type(e).__name__}: {e}") from None
    kernels = lower(graph, opts)
    if [k.source for k in kernels] != [s.get("source") for s in stored]:
        raise EngineFileError(f"{path}: the kernels regenerated from the IR differ from the ones stored; the file "
                              "was built by a different trtjit code generator (rebuild it)")
    from trtjit.crosscompile import read_binaries, read_build_log
    from trtjit.cuda_launcher import check_loadable
    engine = Engine(graph, kernels, opts, read_build_log(path, sections))
    engine.binaries = read_binaries(path, header, sections, kernels)
    check_loadable(engine, path, rebuild)
    return engine


def _extra_sections(engine: Any) -> dict[str, bytes]:
    from trtjit.crosscompile import binary_sections, build_log_section
    return build_log_section(engine) | binary_sections(getattr(engine, "binaries", {}))
