"""Ray helpers: one way to start/attach Ray, and a retrying parallel map over shards.

``map_tasks`` is what per-shard stages use: each item becomes a Ray task; a task lost
with its node is retried (``max_retries``), and because tasks commit their own outputs
atomically and are deterministic, a retry costs time, never samples.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence


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


def map_tasks(fn: Callable[..., Any], items: Sequence[Any], *, num_cpus: float = 1,
              max_retries: int = 3, on_done: Callable[[int, Any], None] | None = None,
              resources: dict | None = None, max_in_flight: int | None = None,
              num_gpus: float = 0, **kwargs: Any) -> list[Any]:
    """Run ``fn(item, **kwargs)`` as a Ray task per item; return results in item order.

    ``on_done(index, result)`` is called as each finishes (progress bars, stats).
    ``max_in_flight`` caps how many tasks run at once (None: as many as Ray schedules).
    ``num_gpus`` reserves GPUs per task (Ray refuses ``GPU`` inside ``resources``).
    """
    import ray

    ensure_ray()
    extra = {"num_gpus": num_gpus} if num_gpus else {}
    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=False,
                        resources=resources or None, **extra)(fn)
    limit = max_in_flight or len(items) or 1
    results: list[Any] = [None] * len(items)
    index: dict[Any, int] = {}
    pending: list[Any] = []
    nxt = 0
    while nxt < len(items) or pending:
        while nxt < len(items) and len(pending) < limit:
            ref = remote.remote(items[nxt], **kwargs)
            index[ref] = nxt
            pending.append(ref)
            nxt += 1
        done, pending = ray.wait(pending, num_returns=1)
        for r in done:
            i = index[r]
            results[i] = ray.get(r)
            if on_done:
                on_done(i, results[i])
    return results


def chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
