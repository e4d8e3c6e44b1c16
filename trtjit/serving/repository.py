"""The model repository: ``ROOT/<model>/[config.json]`` and ``ROOT/<model>/<version>/model.plan``.

Models are loaded (all their served versions, every instance) or unloaded at run time. A reload builds
the new versions completely before it swaps them in; the old ones finish their queued requests in the
background. A failed reload leaves the old versions serving.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from trtjit.serving.config import ModelConfig
from trtjit.serving.errors import ServingError, invalid, not_found
from trtjit.serving.metrics import StatsTable
from trtjit.serving.model import ModelVersion

log = logging.getLogger("trtjit.serving")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


@dataclass
class LoadedModel:
    name: str
    config: ModelConfig
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    def resolve(self, version: str) -> ModelVersion:
        if version in ("", None):
            return self.versions[max(self.versions)]
        if not str(version).isdigit() or int(version) not in self.versions:
            raise not_found(f"model {self.name!r} has no version {version!r} (versions served: "
                            f"{', '.join(str(v) for v in sorted(self.versions))})")
        return self.versions[int(version)]


class ModelRepository:
    def __init__(self, root: str | Path, stats: StatsTable | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise invalid(f"model repository {self.root} is not a directory")
        self.stats = stats or StatsTable()
        self._models: dict[str, LoadedModel] = {}
        self._states: dict[str, tuple[str, str]] = {}
        self._load_lock = threading.Lock()

    # ------------------------------------------------------------------ look-ups
    def names(self) -> list[str]:
        """Model directories in the repository."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def get(self, name: str) -> LoadedModel:
        m = self._models.get(name)
        if m is None:
            state, reason = self._states.get(name, ("", ""))
            if state:
                raise not_found(f"model {name!r} is not ready (state {state}{': ' + reason if reason else ''})")
            raise not_found(f"unknown model {name!r} (models loaded: {', '.join(sorted(self._models)) or 'none'})")
        return m

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        return self.get(name).resolve(version)

    def loaded(self) -> list[LoadedModel]:
        return [self._models[n] for n in sorted(self._models)]

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        out = []
        for name in sorted(set(self.names()) | set(self._models) | set(self._states)):
            m = self._models.get(name)
            if m is not None:
                out += [{"name": name, "version": str(v), "state": "READY", "reason": ""} for v in sorted(m.versions)]
            elif not ready_only:
                state, reason = self._states.get(name, ("UNAVAILABLE", "not loaded"))
                out.append({"name": name, "version": "", "state": state, "reason": reason})
        return out

    # ------------------------------------------------------------------ load / unload (blocking)
    def load(self, name: str, config_override: str | None = None) -> LoadedModel:
        if not isinstance(name, str) or not _NAME.match(name) or not (self.root / name).is_dir():
            raise not_found(f"model {name!r} is not in the repository {self.root}")
        with self._load_lock:
            prev_state = self._states.get(name)
            self._states[name] = ("LOADING", "")
            try:
                model = self._build(name, config_override)
            except Exception as e:
                reason = str(e) if isinstance(e, ServingError) else f"{type(e).__name__}: {e}"
                if name in self._models:
                    self._states[name] = prev_state or ("READY", "")
                else:
                    self._states[name] = ("UNAVAILABLE", reason)
                if isinstance(e, ServingError):
                    raise
                log.exception("loading model %s failed", name)
                raise invalid(f"failed to load model {name!r}: {reason}") from None
            old = self._models.get(name)
            self._models[name] = model
            self._states[name] = ("READY", "")
        log.info("loaded model %s versions %s", name, sorted(model.versions))
        if old is not None:
            threading.Thread(target=self._close, args=(old,), daemon=True).start()
        return model

    def _build(self, name: str, config_override: str | None) -> LoadedModel:
        d = self.root / name
        cfg = ModelConfig.from_dir(d, config_override)
        available = sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)
        chosen = cfg.select_versions(available)
        if not chosen:
            raise invalid(f"model {name!r} has no version to serve in {d} (version directories found: "
                          f"{available or 'none'}; version policy {cfg.version_policy})")
        model = LoadedModel(name, cfg)
        try:
            for v in chosen:
                model.versions[v] = ModelVersion(name, v, d / str(v), cfg, self.stats.get(name, str(v)))
        except BaseException:
            self._close(model)
            raise
        return model

    def unload(self, name: str, timeout: float | None = 60.0) -> None:
        """Stop serving ``name``; its queued requests finish first."""
        with self._load_lock:
            m = self._models.pop(name, None)
            if m is None:
                raise not_found(f"model {name!r} is not loaded")
            self._states[name] = ("UNLOADING", "")
        self._close(m, timeout)
        with self._load_lock:
            if name not in self._models:
                self._states[name] = ("UNAVAILABLE", "unloaded")
        log.info("unloaded model %s", name)

    @staticmethod
    def _close(model: LoadedModel, timeout: float | None = 60.0) -> None:
        for v in model.versions.values():
            v.close(wait=False)
        for v in model.versions.values():
            v.close(wait=True, timeout=timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        for name in list(self._models):
            try:
                self.unload(name, timeout)
            except ServingError:
                pass
