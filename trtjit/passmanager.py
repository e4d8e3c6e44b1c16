"""Runs passes: verification after each (tests, debug), a log of what each changed, graph dumps."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtjit.errors import GraphError, TrtjitError
from trtjit.ir import Graph
from trtjit.options import BuildOptions


@dataclass
class PassRecord:
    """What one pass did: nodes added and removed, rules fired or skipped (with reasons)."""

    name: str
    nodes_before: int = 0
    nodes_after: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fired(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["fired"]]

    def summary(self) -> str:
        rules: dict[str, int] = {}
        for e in self.fired:
            rules[e["rule"]] = rules.get(e["rule"], 0) + 1
        fired = ", ".join(f"{r} x{n}" for r, n in rules.items()) or "no rule fired"
        return (f"{self.name}: {self.nodes_before} -> {self.nodes_after} nodes "
                f"(+{len(self.added)} -{len(self.removed)}); {fired}")


@dataclass
class PassContext:
    options: BuildOptions = field(default_factory=BuildOptions)
    log: list[PassRecord] = field(default_factory=list)
    _current: PassRecord | None = None
    timer: Callable[[Any], float] | None = None  # autotune: ms of a KernelSpec (default: timed on the GPU)
    tuning_arch: str | None = None  # autotune: the arch tiles are tuned for (default: the GPU's, else targets[0])

    def fired(self, rule: str, node: str, detail: str = "") -> None:
        if self._current is not None:
            self._current.events.append({"rule": rule, "node": node, "fired": True, "detail": detail})

    def skipped(self, rule: str, node: str, reason: str) -> None:
        if self._current is not None:
            self._current.events.append({"rule": rule, "node": node, "fired": False, "detail": reason})


@dataclass(frozen=True)
class Pass:
    name: str
    fn: Callable[[Graph, PassContext], Graph]
    doc: str


def load_pass(name: str) -> Pass:
    """The pass defined in ``passes/<name>.py`` (its ``run`` function and module docstring)."""
    try:
        mod = importlib.import_module(f"trtjit.passes.{name}")
    except ModuleNotFoundError:
        raise TrtjitError(f"no pass named {name!r}") from None
    return Pass(name, mod.run, (mod.__doc__ or "").strip())


def run_pass(p: Pass, graph: Graph, ctx: PassContext, index: int = 0) -> Graph:
    before = set(graph.nx.nodes)
    rec = PassRecord(p.name, nodes_before=len(graph))
    ctx._current = rec
    t0 = time.perf_counter()
    try:
        graph = p.fn(graph, ctx)
    except TrtjitError as e:
        raise type(e)(f"in pass {p.name!r}: {e}") from e
    finally:
        ctx._current = None
    rec.seconds = time.perf_counter() - t0
    after = set(graph.nx.nodes)
    rec.nodes_after = len(graph)
    rec.added = sorted(after - before)
    rec.removed = sorted(before - after)
    ctx.log.append(rec)
    if ctx.options.verify:
        try:
            graph.verify(context=p.name)
        except GraphError as e:
            raise GraphError(str(e)) from None
    if ctx.options.dump_dir:
        d = Path(ctx.options.dump_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{index:02d}_{p.name}.txt").write_text(f"# {rec.summary()}\n{graph}\n")
    return graph


def run_pipeline(graph: Graph, passes: list[Pass], ctx: PassContext) -> Graph:
    if ctx.options.verify:
        graph.verify(context="import")
    for i, p in enumerate(passes):
        graph = run_pass(p, graph, ctx, i)
    return graph
