"""Per-model configuration: ``REPOSITORY/<model>/config.json``.

The keys are a subset of Triton Inference Server's model configuration (in its JSON form), plus
``instance_count`` and ``warmup`` as shorthands::

    {
      "max_batch_size": 8,                      # 0: no batching, requests must match the engine's shapes
      "dynamic_batching": {
        "preferred_batch_size": [4, 8],
        "max_queue_delay_microseconds": 2000,
        "default_queue_policy": {"default_timeout_microseconds": 0, "allow_timeout_override": true,
                                 "max_queue_size": 0}
      },
      "instance_count": 2,                      # or "instance_group": [{"count": 2, "kind": "KIND_GPU"}]
      "version_policy": {"all": {}},            # or {"latest": {"num_versions": 1}}, {"specific": {"versions": [1]}}
      "default_model_filename": "model.plan",
      "output": [{"name": "logits"}],           # names of the engine's outputs, in order (default output_0, ...)
      "warmup": true                            # run each engine once at load time
    }

Every key is optional; without a config file a model is served unbatched, one instance, all versions.
Unknown keys are refused (a typo would otherwise silently change nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtjit.serving.errors import ServingError, invalid

_TOP_KEYS = {"name", "platform", "backend", "max_batch_size", "dynamic_batching", "instance_count",
             "instance_group", "version_policy", "default_model_filename", "input", "output", "warmup",
             "parameters"}
_DB_KEYS = {"preferred_batch_size", "max_queue_delay_microseconds", "default_queue_policy", "preserve_ordering"}
_POLICY_KEYS = {"default_timeout_microseconds", "allow_timeout_override", "max_queue_size", "timeout_action"}


def _int(where: str, v: Any, lo: int = 0) -> int:
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():  # protobuf JSON writes 64-bit ints as strings
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise invalid(f"{where} must be an integer >= {lo}, got {v!r}")
    return v


def _dict(where: str, v: Any, allowed: set[str]) -> dict:
    if not isinstance(v, dict):
        raise invalid(f"{where} must be an object, got {type(v).__name__}")
    unknown = set(v) - allowed
    if unknown:
        raise invalid(f"{where}: unknown key(s) {sorted(unknown)} (known: {sorted(allowed)})")
    return v


@dataclass
class DynamicBatching:
    preferred_batch_size: list[int] = field(default_factory=list)
    max_queue_delay_microseconds: int = 0
    default_timeout_microseconds: int = 0  # 0: requests never time out in the queue
    allow_timeout_override: bool = True
    max_queue_size: int = 0  # 0: unbounded

    def to_json(self) -> dict[str, Any]:
        return {"preferred_batch_size": list(self.preferred_batch_size),
                "max_queue_delay_microseconds": self.max_queue_delay_microseconds,
                "default_queue_policy": {"timeout_action": "REJECT",
                                         "default_timeout_microseconds": self.default_timeout_microseconds,
                                         "allow_timeout_override": self.allow_timeout_override,
                                         "max_queue_size": self.max_queue_size}}


@dataclass
class InstanceGroup:
    count: int = 1
    kind: str = "KIND_AUTO"
    gpus: list[int] = field(default_factory=list)


@dataclass
class ModelConfig:
    name: str
    max_batch_size: int = 0
    dynamic_batching: DynamicBatching | None = None
    instance_groups: list[InstanceGroup] = field(default_factory=lambda: [InstanceGroup()])
    version_policy: dict[str, Any] = field(default_factory=lambda: {"all": {}})
    default_model_filename: str = "model.plan"
    inputs: list[dict[str, Any]] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    warmup: bool = True
    source: str = "default"  # where this came from (a path, "default", "load request")

    @property
    def instance_count(self) -> int:
        return sum(g.count * max(len(g.gpus), 1) for g in self.instance_groups)

    # ------------------------------------------------------------------ parsing
    @staticmethod
    def parse(name: str, raw: Any, source: str = "config") -> ModelConfig:
        """Validate a config object; errors name the key and the source."""
        try:
            return ModelConfig._parse(name, raw, source)
        except ServingError as e:
            raise invalid(f"model {name!r}: bad configuration in {source}: {e}") from None

    @staticmethod
    def _parse(name: str, raw: Any, source: str) -> ModelConfig:
        d = _dict("the configuration", raw, _TOP_KEYS)
        cfg = ModelConfig(name=name, source=source)
        if "name" in d and d["name"] != name:
            raise invalid(f"'name' is {d['name']!r} but the model's directory is {name!r}")
        for key in ("platform", "backend"):
            if key in d and d[key] not in ("trtjit", "trtjit_plan"):
                raise invalid(f"{key!r} is {d[key]!r}; this server runs only trtjit engines "
                              "('trtjit_plan')")
        cfg.max_batch_size = _int("'max_batch_size'", d.get("max_batch_size", 0))
        if "dynamic_batching" in d and d["dynamic_batching"] is not None:
            db = _dict("'dynamic_batching'", d["dynamic_batching"], _DB_KEYS)
            pol = _dict("'dynamic_batching.default_queue_policy'", db.get("default_queue_policy", {}), _POLICY_KEYS)
            pref = db.get("preferred_batch_size", [])
            if not isinstance(pref, list):
                raise invalid("'dynamic_batching.preferred_batch_size' must be a list of integers")
            pref = sorted({_int("'dynamic_batching.preferred_batch_size'", p, 1) for p in pref})
            if pol.get("timeout_action", "REJECT") != "REJECT":
                raise invalid("'default_queue_policy.timeout_action' supports only REJECT")
            allow = pol.get("allow_timeout_override", True)
            if not isinstance(allow, bool):
                raise invalid("'default_queue_policy.allow_timeout_override' must be true or false")
            cfg.dynamic_batching = DynamicBatching(
                preferred_batch_size=pref,
                max_queue_delay_microseconds=_int("'dynamic_batching.max_queue_delay_microseconds'",
                                                  db.get("max_queue_delay_microseconds", 0)),
                default_timeout_microseconds=_int("'default_queue_policy.default_timeout_microseconds'",
                                                  pol.get("default_timeout_microseconds", 0)),
                allow_timeout_override=allow,
                max_queue_size=_int("'default_queue_policy.max_queue_size'", pol.get("max_queue_size", 0)))
            if cfg.max_batch_size == 0:
                raise invalid("'dynamic_batching' needs 'max_batch_size' > 0")
            big = [p for p in pref if p > cfg.max_batch_size]
            if big:
                raise invalid(f"preferred batch size(s) {big} exceed 'max_batch_size' {cfg.max_batch_size}")
        if "instance_count" in d and "instance_group" in d:
            raise invalid("give 'instance_count' or 'instance_group', not both")
        if "instance_count" in d:
            cfg.instance_groups = [InstanceGroup(count=_int("'instance_count'", d["instance_count"], 1))]
        if "instance_group" in d:
            groups = d["instance_group"]
            if not isinstance(groups, list) or not groups:
                raise invalid("'instance_group' must be a non-empty list")
            cfg.instance_groups = []
            for i, g in enumerate(groups):
                g = _dict(f"'instance_group[{i}]'", g, {"name", "count", "kind", "gpus"})
                kind = g.get("kind", "KIND_AUTO")
                if kind not in ("KIND_AUTO", "KIND_GPU", "KIND_CPU"):
                    raise invalid(f"'instance_group[{i}].kind' must be KIND_AUTO, KIND_GPU or KIND_CPU, got {kind!r}")
                gpus = g.get("gpus", [])
                if not isinstance(gpus, list):
                    raise invalid(f"'instance_group[{i}].gpus' must be a list of device indices")
                cfg.instance_groups.append(InstanceGroup(count=_int(f"'instance_group[{i}].count'", g.get("count", 1), 1),
                                                         kind=kind, gpus=[_int("gpu index", x) for x in gpus]))
        if "version_policy" in d:
            vp = _dict("'version_policy'", d["version_policy"], {"all", "latest", "specific"})
            if len(vp) != 1:
                raise invalid("'version_policy' must have exactly one of 'all', 'latest', 'specific'")
            if "latest" in vp:
                _int("'version_policy.latest.num_versions'", _dict("'version_policy.latest'", vp["latest"],
                                                                   {"num_versions"}).get("num_versions"), 1)
            if "specific" in vp:
                vs = _dict("'version_policy.specific'", vp["specific"], {"versions"}).get("versions")
                if not isinstance(vs, list) or not vs:
                    raise invalid("'version_policy.specific.versions' must be a non-empty list")
                for v in vs:
                    _int("a version in 'version_policy.specific.versions'", v, 1)
            cfg.version_policy = vp
        fname = d.get("default_model_filename", "model.plan")
        if not isinstance(fname, str) or not fname or "/" in fname or "\\" in fname or fname.startswith("."):
            raise invalid(f"'default_model_filename' must be a plain file name, got {fname!r}")
        cfg.default_model_filename = fname
        for key in ("input", "output"):
            ents = d.get(key, [])
            if not isinstance(ents, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                                     for e in ents):
                raise invalid(f"{key!r} must be a list of objects with a 'name'")
            for i, e in enumerate(ents):
                _dict(f"'{key}[{i}]'", e, {"name", "data_type", "dims"})
        cfg.inputs = list(d.get("input", []))
        cfg.output_names = [e["name"] for e in d.get("output", [])]
        if len(set(cfg.output_names)) != len(cfg.output_names):
            raise invalid(f"'output' names repeat: {cfg.output_names}")
        w = d.get("warmup", True)
        if not isinstance(w, bool):
            raise invalid("'warmup' must be true or false")
        cfg.warmup = w
        return cfg

    @staticmethod
    def from_dir(model_dir: Path, override: str | None = None) -> ModelConfig:
        """The config of ``model_dir`` (``config.json``), or ``override`` (JSON text of a load request)."""
        name = model_dir.name
        if override is not None:
            text, source = override, "the load request's 'config'"
        else:
            p = model_dir / "config.json"
            if not p.is_file():
                return ModelConfig(name=name)
            text, source = p.read_text(encoding="utf-8", errors="replace"), str(p)
        try:
            raw = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise invalid(f"model {name!r}: {source} is not valid JSON: {e}") from None
        return ModelConfig.parse(name, raw, source)

    def select_versions(self, available: list[int]) -> list[int]:
        """The versions the version policy serves, of the ones present."""
        avail = sorted(available)
        if "latest" in self.version_policy:
            return avail[-int(self.version_policy["latest"]["num_versions"]):]
        if "specific" in self.version_policy:
            want = {int(v) for v in self.version_policy["specific"]["versions"]}
            return [v for v in avail if v in want]
        return avail
