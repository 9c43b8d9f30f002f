"""Politeness holds cluster-wide: two download tasks on one host together stay within the
per-host concurrency and rate, waits for a slot are not charged to the request deadline, and
robots.txt is fetched once for all tasks."""
from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cluster.limiter import Limits, LocalPoliteness

from .server import LoopbackServer, png

IMG = png()
pytestmark = pytest.mark.timeout(300)


class CountingServer(LoopbackServer):
    """Records each image request's (start, end, shard) and the most requests in flight.

    The first request of each shard is held until a request of the other shard arrived
    (at most 15 s, within the test's request deadline), so both tasks are certainly active at
    the same time however slowly Ray starts the second one."""

    def __init__(self, hold: float = 0.2):
        self.log: list[tuple[float, float, int]] = []
        self.inflight = self.max_inflight = 0
        self.robots_hits = 0
        self.seen: dict[int, threading.Event] = {0: threading.Event(), 1: threading.Event()}
        self._first: set[int] = set()
        self._lock = threading.Lock()
        self.hold = hold
        super().__init__()

    def handle(self, req):
        if req.path == "/robots.txt":
            with self._lock:
                self.robots_hits += 1
            body, code = b"User-agent: *\nDisallow: /private/\n", 200
        else:
            n = int(req.path.rsplit("/", 1)[1].split(".")[0])
            shard = n // 100
            t0 = time.monotonic()
            with self._lock:
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
                first = shard not in self._first
                self._first.add(shard)
            self.seen[shard].set()
            if first:
                self.seen[1 - shard].wait(15)
            time.sleep(self.hold)
            with self._lock:
                self.inflight -= 1
                self.log.append((t0, time.monotonic(), shard))
            body, code = IMG, 200
        self.reply(req, code, body)

    def close(self):
        for e in self.seen.values():
            e.set()
        super().close()


def _input(tmp_path, base: str, per_shard: int) -> str:
    urls = [f"{base}/img/{s * 100 + i}.png" for s in (0, 1) for i in range(per_shard)]
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": urls, "text": ["c"] * len(urls)}), path)
    return str(path)


def _max_starts_in_window(starts: list[float], window: float) -> int:
    starts = sorted(starts)
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_two_tasks_share_one_host_limit(ray_local, tmp_path):
    from curation.download.stage import download

    per_shard, rate, conc = 8, 6.0, 2
    with CountingServer() as srv:
        ds = download(_input(tmp_path, srv.base_url, per_shard), str(tmp_path / "ds"), samples_per_shard=per_shard,
                      processes_count=2, thread_count=4, image_size=16, timeout=20.0, request_deadline=20.0,
                      per_host_concurrency=conc, per_host_rate=rate, allow_private_networks=["127.0.0.1/32"])
        log = list(srv.log)
    rows = ds.read_meta().to_pylist()
    assert [r["status"] for r in rows] == ["success"] * (2 * per_shard), [r["error"] for r in rows]
    shards = [s for _, _, s in sorted(log)]
    assert set(shards) == {0, 1}
    assert srv.max_inflight <= conc                       # per-task limits would allow 2 * conc
    # starts are 1/rate apart cluster-wide: within any 1 s window at most rate (+2 for edges and
    # arrival jitter on a loaded machine); per-task limits would allow 2 * rate
    assert _max_starts_in_window([t for t, _, _ in log], 1.0) <= rate + 2
    span = max(t for t, _, _ in log) - min(t for t, _, _ in log)
    assert span >= (len(log) - 1) / rate * 0.9
    assert srv.robots_hits == 1                           # robots.txt once for both tasks


def test_local_service_limits_threads():
    svc = LocalPoliteness(Limits(concurrency=2, rate=None))
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def work():
        tok = svc.acquire("h")
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        svc.release("h", tok)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert state["max"] <= 2 and state["now"] == 0


def test_shared_value_is_computed_once():
    svc = LocalPoliteness(Limits(concurrency=1))
    calls = []

    def get():
        v = svc.shared_get("k")
        if v is None:
            calls.append(1)
            time.sleep(0.1)
            svc.shared_put("k", "value", time.time() + 60)
            v = "value"
        return v

    out: list = []
    threads = [threading.Thread(target=lambda: out.append(get())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == ["value"] * 6 and len(calls) == 1


def test_waits_for_a_slot_are_not_charged_to_the_deadline():
    from concurrent.futures import ThreadPoolExecutor

    from curation.download.config import DownloadConfig
    from curation.download.fetch import Client, limits_for

    with CountingServer(hold=0.3) as srv:
        srv.seen[0].set()  # no gate here
        srv.seen[1].set()
        cfg = DownloadConfig(input="x", timeout=1.0, request_deadline=1.0, per_host_concurrency=1,
                             allow_private_networks=["127.0.0.1/32"])
        c = Client(cfg, politeness=LocalPoliteness(limits_for(cfg)))
        with ThreadPoolExecutor(8) as pool:  # 8 x 0.3 s queued on one slot: the last waits ~2 s
            res = list(pool.map(c.fetch, [f"{srv.base_url}/img/{i}.png" for i in range(8)]))
    assert [r.status for r in res] == ["success"] * 8, [r.error for r in res]
    assert srv.max_inflight == 1


def test_limits_that_cannot_bind_skip_leases_but_share_the_cache():
    from curation.cluster.limiter import connect

    limits = Limits(concurrency=4, rate=None, lease_ttl=123.0)
    svc = connect(limits, cluster=False, max_in_flight=4)  # 4 requests at most: a limit of 4 never binds
    tokens = [svc.acquire("h") for _ in range(10)]          # would block at the 5th if leases were taken
    assert len(tokens) == 10
    svc.shared_put("k", 1, time.time() + 60)
    assert connect(limits, cluster=False).shared_get("k") == 1  # the same service behind it
    assert connect(Limits(concurrency=4, rate=2.0, lease_ttl=123.0), cluster=False, max_in_flight=4) is not svc


def test_a_lease_never_released_expires():
    svc = LocalPoliteness(Limits(concurrency=1, lease_ttl=0.3))
    svc.acquire("h")  # its holder "dies" without releasing
    got = threading.Event()
    t = threading.Thread(target=lambda: (svc.acquire("h"), got.set()), daemon=True)
    t.start()
    assert got.wait(20)  # reclaimed after lease_ttl, not blocked forever
    assert svc.acquire("other-host") is not None  # hosts are independent
