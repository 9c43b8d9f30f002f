"""Ray helpers: one way to start/attach Ray, and retrying parallel maps over items.

Guarantees:

* :func:`map_tasks` runs ``fn(item, **kwargs)`` as one Ray task per item; a task lost with
  its node is retried (``max_retries``). Callers make tasks commit their own outputs
  atomically and deterministically, so a retry costs time, never samples.
* :func:`map_actors` does the same on a pool of actors (state such as a model is built once
  per actor); an actor lost with its node is restarted elsewhere and its item retried.
* ``timeout`` is a last resort, not a scheduler: when no item has finished for ``timeout``
  seconds, the pending items are cancelled and :class:`ClusterTimeout` names the one pending
  longest, so a hung worker turns into a one-line error instead of a hung run. It counts
  progress, not each task's age, so items queued behind a busy cluster never trip it.
  Per-URL or per-request deadlines belong inside the task.

Nothing here knows stages or datasets; it sits directly above ``curation.io``.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, Sequence

from curation.errors import CurationError


class ClusterTimeout(CurationError):
    """A task or actor call ran past its last-resort timeout (names the stuck item)."""


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Attach to ``address``/``RAY_ADDRESS`` or start an embedded local Ray (idempotent)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True,
                              "include_dashboard": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        store = int(os.environ.get("CURATION_RAY_OBJECT_STORE_BYTES", 1 << 30))
        # address="local": always start our own embedded Ray; without it ray.init attaches to
        # whatever cluster another process on this machine happens to be running
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=store,
                 _node_ip_address="127.0.0.1", **kwargs)


def cluster_resources() -> dict[str, float]:
    """Total resources of the attached (or embedded) Ray cluster, e.g. ``{"CPU": 2.0}``."""
    import ray

    ensure_ray()
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _describe(item: Any, describe: Callable[[Any], str] | None) -> str:
    if describe is not None:
        return describe(item)
    text = repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


class _Dispatch:
    """Bookkeeping shared by the task and actor maps: in-flight refs, submit order, the timeout."""

    def __init__(self, items: Sequence[Any], timeout: float | None, describe: Callable[[Any], str] | None,
                 what: str):
        self.items, self.timeout, self.describe, self.what = items, timeout, describe, what
        self.index: dict[Any, int] = {}
        self.pending: list[Any] = []  # in submit order: the first is the one pending longest
        self.progress_at = time.monotonic()

    def add(self, ref: Any, i: int) -> None:
        self.index[ref] = i
        self.pending.append(ref)

    def wait_one(self) -> list[Any]:
        """Refs that finished (at least one), or raise ClusterTimeout after ``timeout`` s without any."""
        import ray

        while True:
            wait_s = None
            if self.timeout is not None:
                wait_s = max(0.0, self.progress_at + self.timeout - time.monotonic())
            done, _ = ray.wait(self.pending, num_returns=1, timeout=wait_s)
            if done:
                finished = set(done)
                self.pending = [r for r in self.pending if r not in finished]
                self.progress_at = time.monotonic()
                return done
            if self.timeout is not None and time.monotonic() - self.progress_at >= self.timeout:
                self._raise_stuck()

    def _raise_stuck(self) -> None:
        import ray

        assert self.timeout is not None
        stuck = _describe(self.items[self.index[self.pending[0]]], self.describe)
        others = len(self.pending) - 1
        for r in self.pending:
            try:
                ray.cancel(r, force=True)
            except Exception:  # actor calls cannot be force-cancelled; the caller kills the actors
                pass
        raise ClusterTimeout(f"{self.what} for item {stuck} made no progress within the last-resort timeout "
                             f"of {self.timeout:g} s ({others} other pending item(s) cancelled too)")


def map_tasks(fn: Callable[..., Any], items: Sequence[Any], *, num_cpus: float = 1,
              max_retries: int = 3, on_done: Callable[[int, Any], None] | None = None,
              resources: dict | None = None, max_in_flight: int | None = None,
              num_gpus: float = 0, timeout: float | None = None,
              describe: Callable[[Any], str] | None = None, **kwargs: Any) -> list[Any]:
    """Run ``fn(item, **kwargs)`` as a Ray task per item; return results in item order.

    Args:
        on_done: ``on_done(index, result)`` as each finishes (progress, stats, commits).
        max_in_flight: cap on tasks running at once (None: as many as Ray schedules).
        num_gpus: GPUs per task (Ray refuses ``GPU`` inside ``resources``).
        timeout: last-resort seconds without any task finishing; past it every pending task
            is cancelled and :class:`ClusterTimeout` names the one pending longest
            (``describe(item)`` or its repr).
    """
    import ray

    ensure_ray()
    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": max_retries, "retry_exceptions": False,
                            "resources": resources or None}
    if num_gpus:
        opts["num_gpus"] = num_gpus
    remote: Any = ray.remote(**opts)(fn)
    # large shared arguments go to the object store once, not once per task
    shared = {k: ray.put(v) for k, v in kwargs.items()} if len(items) > 1 else kwargs
    limit = max_in_flight or len(items) or 1
    results: list[Any] = [None] * len(items)
    d = _Dispatch(items, timeout, describe, "task")
    nxt = 0
    while nxt < len(items) or d.pending:
        while nxt < len(items) and len(d.pending) < limit:
            d.add(remote.remote(items[nxt], **shared), nxt)
            nxt += 1
        for r in d.wait_one():
            i = d.index.pop(r)
            results[i] = ray.get(r)
            if on_done:
                on_done(i, results[i])
    return results


def map_actors(factory: Callable[[], Any], method: str, items: Sequence[Any], *, pool_size: int,
               num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 3,
               on_done: Callable[[int, Any], None] | None = None, timeout: float | None = None,
               describe: Callable[[Any], str] | None = None, **kwargs: Any) -> list[Any]:
    """Run ``getattr(actor, method)(item, **kwargs)`` on a pool of ``pool_size`` actors.

    Each actor is ``factory()`` built once in its own worker process (load a model there)
    and handles one item at a time; results come back in item order. An actor that dies
    with its node is restarted (``factory`` runs again) and the item retried, up to
    ``max_retries`` times. ``timeout`` is as in :func:`map_tasks`.
    """
    import ray
    import ray.exceptions

    ensure_ray()
    if not items:
        return []
    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": max_retries, "max_task_retries": max_retries}
    if num_gpus:
        opts["num_gpus"] = num_gpus

    class _Actor:
        def __init__(self) -> None:
            self.obj = factory()

        def call(self, item: Any, kw: dict) -> Any:
            return getattr(self.obj, method)(item, **kw)

    cls: Any = ray.remote(**opts)(_Actor)
    actors: list[Any] = [cls.remote() for _ in range(max(1, min(pool_size, len(items))))]
    shared = ray.put(kwargs)
    results: list[Any] = [None] * len(items)
    d = _Dispatch(items, timeout, describe, "actor call")
    owner: dict[Any, Any] = {}
    tries: dict[int, int] = {}
    free = list(actors)
    nxt = 0
    try:
        while nxt < len(items) or d.pending:
            while nxt < len(items) and free:
                actor = free.pop()
                ref = actor.call.remote(items[nxt], shared)
                owner[ref] = actor
                d.add(ref, nxt)
                nxt += 1
            for r in d.wait_one():
                i = d.index.pop(r)
                actor = owner.pop(r)
                try:
                    results[i] = ray.get(r)
                except ray.exceptions.RayActorError as e:
                    # its node died: Ray may report the call as unavailable instead of retrying it;
                    # items are idempotent, so resubmit (to a fresh actor once restarts are spent)
                    tries[i] = tries.get(i, 0) + 1
                    if tries[i] > max_retries:
                        raise
                    if isinstance(e, ray.exceptions.ActorDiedError):
                        actor = cls.remote()
                        actors.append(actor)
                    time.sleep(min(5.0, float(tries[i])))
                    ref = actor.call.remote(items[i], shared)
                    owner[ref] = actor
                    d.add(ref, i)
                    continue
                free.append(actor)
                if on_done:
                    on_done(i, results[i])
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
    return results


def chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    """``seq`` cut into consecutive slices of ``n`` (the last may be shorter)."""
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
