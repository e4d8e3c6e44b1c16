"""Request scheduling: the dynamic batcher and the execution instances' worker threads.

Each model version has one queue shared by its instances. An instance (one worker thread with its own
engines) takes the next batch when it is free:

* without dynamic batching, the oldest request alone;
* with it, the oldest request plus later requests of the same shape key (per-sample shapes), in
  arrival order, up to ``max_batch_size`` inferences. The batch goes at once when it reaches the
  largest preferred batch size (or the max batch size); otherwise the worker waits for more requests
  until the oldest has waited ``max_queue_delay_microseconds``, then sends what it has (cut to the
  largest preferred size that a prefix of it forms, if any).

Requests whose queue timeout expires are rejected ("Request timeout expired", UNAVAILABLE) and
requests whose caller went away are dropped, both without running. Closing the scheduler stops new
requests, lets the workers finish everything already queued, then ends them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from trtjit.serving.errors import ServingError, unavailable

if TYPE_CHECKING:
    from trtjit.serving.model import Instance, ModelVersion

log = logging.getLogger("trtjit.serving")


@dataclass(eq=False)
class InferRequest:
    """One validated request inside the server."""

    inputs: dict[str, torch.Tensor]
    outputs: list[str]
    batch: int  # inferences in this request (its dim 0 when batching, else 1)
    key: tuple  # requests merge only with requests of the same key
    done: Callable[[Any], None]  # called once, from a worker thread: a dict of outputs or a ServingError
    cancelled: Callable[[], bool] = field(default=lambda: False)
    deadline: float | None = None  # time.monotonic() after which it may not start
    arrival_ns: int = field(default_factory=time.monotonic_ns)
    dequeue_ns: int = 0
    answered: bool = False


class Scheduler:
    def __init__(self, version: ModelVersion, instances: list[Instance]) -> None:
        self.version = version
        cfg = version.config
        self.dynamic = cfg.dynamic_batching
        self.max_batch = max(cfg.max_batch_size, 1)
        self._cv = threading.Condition()
        self._queue: deque[InferRequest] = deque()
        self._closing = False
        self._threads = []
        for inst in instances:
            t = threading.Thread(target=self._worker, args=(inst,), daemon=True,
                                 name=f"trtjit-serve {version.name} v{version.version} #{inst.index}")
            self._threads.append(t)
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ producer side
    def submit(self, req: InferRequest) -> None:
        with self._cv:
            if self._closing:
                raise unavailable(f"model {self.version.name!r} version {self.version.version} is unloading")
            limit = self.dynamic.max_queue_size if self.dynamic else 0
            if limit and len(self._queue) >= limit:
                raise unavailable(f"model {self.version.name!r} version {self.version.version}: exceeds maximum "
                                  f"queue size {limit}")
            self._queue.append(req)
            self.version.stats.queued(+1)
            self._cv.notify()

    def queued(self) -> int:
        with self._cv:
            return len(self._queue)

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Refuse new requests; workers run what is queued, then exit."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if wait:
            end = None if timeout is None else time.monotonic() + timeout
            for t in self._threads:
                t.join(None if end is None else max(end - time.monotonic(), 0))

    # ------------------------------------------------------------------ consumer side
    def _take(self, chosen: list[InferRequest]) -> list[InferRequest]:
        ids = {id(r) for r in chosen}
        self._queue = deque(r for r in self._queue if id(r) not in ids)
        now = time.monotonic_ns()
        for r in chosen:
            r.dequeue_ns = now
        self.version.stats.queued(-len(chosen))
        return chosen

    def _expire(self, now: float) -> float | None:
        """Drop cancelled and timed-out requests; return the earliest remaining deadline."""
        keep: deque[InferRequest] = deque()
        earliest = None
        for r in self._queue:
            if r.cancelled():
                self.version.stats.queued(-1)
                self.version.fail(r, None)
            elif r.deadline is not None and now >= r.deadline:
                self.version.stats.queued(-1)
                self.version.fail(r, unavailable("Request timeout expired"))
            else:
                keep.append(r)
                if r.deadline is not None and (earliest is None or r.deadline < earliest):
                    earliest = r.deadline
        if len(keep) != len(self._queue):
            self._queue = keep
        return earliest

    def _next_batch(self) -> list[InferRequest] | None:
        with self._cv:
            while True:
                now = time.monotonic()
                earliest = self._expire(now)
                if not self._queue:
                    if self._closing:
                        return None
                    self._cv.wait(None if earliest is None else max(earliest - now, 0))
                    continue
                if self.dynamic is None:
                    return self._take([self._queue[0]])
                head = self._queue[0]
                chosen, total = [], 0
                for r in self._queue:
                    if r.key != head.key:
                        continue
                    if total + r.batch > self.max_batch:
                        break
                    chosen.append(r)
                    total += r.batch
                pref = self.dynamic.preferred_batch_size
                full = total >= self.max_batch or (bool(pref) and total >= pref[-1])
                delay = self.dynamic.max_queue_delay_microseconds * 1e-6
                send_at = head.arrival_ns * 1e-9 + delay
                if full or delay == 0 or now >= send_at or self._closing:
                    if pref and not full:
                        chosen = self._cut_to_preferred(chosen, pref)
                    return self._take(chosen)
                wake = send_at if earliest is None else min(send_at, earliest)
                self._cv.wait(max(wake - now, 0))

    @staticmethod
    def _cut_to_preferred(chosen: list[InferRequest], pref: list[int]) -> list[InferRequest]:
        best, total = 0, 0
        for i, r in enumerate(chosen):
            total += r.batch
            if total in pref:
                best = i + 1
        return chosen[:best] if best else chosen

    def _worker(self, inst: Instance) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self.version.execute(inst, batch)
            except BaseException as e:  # execute() answers every request itself; this is a last resort
                log.exception("instance %s of %s crashed", inst.index, self.version.name)
                err = ServingError(f"internal error: {type(e).__name__}: {e}", "INTERNAL")
                for r in batch:
                    self.version.fail(r, err)
