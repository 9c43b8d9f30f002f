"""The epoch order as a pure function, and how it is cut into per-rank, per-worker batches.

Everything here is deterministic numpy over integer positions; no I/O. The streaming
dataset, its loader and the tests all call the same functions, so what the tests prove
about partitioning is what training sees.

Model (MosaicML-like, see DESIGN.md section 5.4):

* The *epoch list* holds ``M`` items (indices into the sample index; with weighted mixing
  a sample can appear more or less than once, see :func:`mix_epoch_items`).
* The *epoch order* is a permutation of those ``M`` positions that depends on
  ``(seed, epoch)`` only: units (one source shard each) are shuffled, laid end to end,
  cut into blocks of ``block_size`` items, and each block is shuffled. A block spans
  several shards, so it plays the role of a shuffle buffer, but deterministically.
* Remainder policy: a layout needs the remaining length to be a multiple of
  ``G = world_size * batch_size`` (``drop_last=True``) or of ``world_size``
  (``drop_last=False``: one smaller final batch per rank). The ``L mod G`` (resp.
  ``L mod world_size``) extra items are dropped, counted, and picked from a fixed
  seed-determined cycle whose window moves by the drop count each epoch, so with a fixed
  configuration every item is dropped at most once every ``M // dropped`` epochs.
* Progress is a list of *plans* ``{"dropped": R, "consumed": k}``: replaying them over the
  epoch order gives the remaining sequence. Resuming on another world size appends a new
  plan over everything not yet delivered (earlier plans' drops included), which drops just
  enough to make it divisible again: fewer than the new ``world_size * batch_size`` items
  stay undelivered in that epoch. This is the whole state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


def epoch_order(units: np.ndarray, seed: int, epoch: int, *, shuffle: bool = True,
                block_size: int = 8192) -> np.ndarray:
    """Permutation of ``range(len(units))`` for one epoch.

    Args:
        units: per item, the id of its read unit (source shard); items of one unit must be
            contiguous and in read order (by tar offset).
        seed, epoch: the only inputs of the order.
        shuffle: False keeps the read order (units ascending).
        block_size: items per shuffled block (the deterministic shuffle buffer).
    """
    m = len(units)
    if not shuffle or m == 0:
        return np.arange(m, dtype=np.int64)
    rng = _rng(seed, epoch, 0x5EED)
    bounds = np.flatnonzero(np.diff(units)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [m]]))
    perm = rng.permutation(len(starts))
    s, n = starts[perm], lengths[perm]
    # concatenated aranges of the permuted units, without a Python loop
    seq = np.repeat(s - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(m, dtype=np.int64)
    block = np.arange(m, dtype=np.int64) // max(1, int(block_size))
    order = np.lexsort((rng.random(m), block))
    return seq[order]


def drop_cycle(m: int, seed: int) -> np.ndarray:
    """Fixed (per seed) permutation of positions that remainder drops walk through."""
    return _rng(seed, 0xD309).permutation(m).astype(np.int64)


@dataclass
class Layout:
    """The rest of an epoch cut into steps for one configuration.

    ``rest`` holds epoch-list positions still to deliver, in order; ``full_steps`` steps of
    ``world_size * batch_size`` items, then (``drop_last=False`` only) one final step where
    each rank gets ``tail`` items. ``plans`` is the progress state this layout continues.
    """

    rest: np.ndarray
    world_size: int
    batch_size: int
    full_steps: int
    tail: int
    plans: list[dict[str, int]]
    dropped: np.ndarray

    @property
    def num_steps(self) -> int:
        """Batches each rank delivers (equal for every rank)."""
        return self.full_steps + (1 if self.tail else 0)

    def batch(self, step: int, rank: int) -> np.ndarray:
        """Epoch-list positions of ``rank``'s batch number ``step`` of this layout."""
        g = self.world_size * self.batch_size
        if step < self.full_steps:
            lo = step * g + rank * self.batch_size
            return self.rest[lo:lo + self.batch_size]
        lo = self.full_steps * g + rank * self.tail
        return self.rest[lo:lo + self.tail]

    def worker_steps(self, worker: int, num_workers: int) -> range:
        """Steps DataLoader worker ``worker`` produces (round-robin, as DataLoader reads them)."""
        return range(worker, self.num_steps, max(1, num_workers))

    def consumed_after(self, steps: int) -> int:
        """Items of ``rest`` delivered (by all ranks together) after ``steps`` steps."""
        g = self.world_size * self.batch_size
        full = min(steps, self.full_steps)
        extra = self.tail * self.world_size if steps > self.full_steps else 0
        return full * g + extra

    def plans_after(self, steps: int) -> list[dict[str, int]]:
        """The progress state after every rank delivered ``steps`` batches of this layout."""
        out = [dict(p) for p in self.plans]
        out[-1]["consumed"] += self.consumed_after(steps)
        return out


def make_layout(order: np.ndarray, cycle: np.ndarray, epoch: int, plans: list[dict[str, int]] | None,
                *, world_size: int, batch_size: int, drop_last: bool) -> Layout:
    """Replay ``plans`` over the epoch ``order`` and lay out the rest for this configuration.

    ``plans`` None or empty starts the epoch. Each plan drops ``dropped`` items of what was
    still undelivered when it began, then delivers ``consumed`` items in order. A plan's drops
    are only a layout decision: when a later plan begins (the configuration changed
    mid-epoch), the items it dropped but never delivered are undelivered again, so an elastic
    resume delivers every item not yet consumed except ``undelivered mod modulus``, fewer
    than the new ``world_size * batch_size`` (``drop_last``) or ``world_size``. The returned
    layout's ``plans`` end with the plan it continues (a new one when this configuration
    needs a different remainder).
    """
    m = len(order)
    g = world_size * batch_size
    modulus = g if drop_last else world_size
    plans = [dict(p) for p in (plans or [])]
    if not plans:
        plans = [{"dropped": m % modulus, "consumed": 0}]
    start = (epoch * plans[0]["dropped"]) % m if m else 0
    cyc = np.roll(cycle, -start)
    undelivered = np.ones(m, dtype=bool)
    cursor = 0

    def begin(r: int) -> tuple[np.ndarray, np.ndarray]:
        """(sequence of this plan, the items it drops): undelivered items in order, less ``r``."""
        nonlocal cursor
        seq = order[undelivered[order]]
        if not r:
            return seq, np.zeros(0, dtype=np.int64)
        cand = np.roll(cyc, -cursor)  # the cycle from where the last plan stopped, wrapping around
        hits = np.flatnonzero(undelivered[cand])[:r]
        if len(hits) < r:
            raise ValueError("state does not fit this dataset (fewer items left than it drops)")
        gone = cand[hits]
        cursor = (cursor + int(hits[-1]) + 1) % m
        keep = np.ones(m, dtype=bool)
        keep[gone] = False
        return seq[keep[seq]], gone

    for p in plans:
        seq, gone = begin(int(p["dropped"]))
        k = int(p["consumed"])
        if k > len(seq):
            raise ValueError(f"state consumed {k} items but only {len(seq)} remain")
        undelivered[seq[:k]] = False
        rest = seq[k:]
    need = int(undelivered.sum()) % modulus
    if need != int(plans[-1]["dropped"]):
        # the configuration changed mid-epoch: a new plan over everything undelivered
        plans.append({"dropped": need, "consumed": 0})
        rest, gone = begin(need)
    full, tail_items = divmod(len(rest), g)
    tail = 0 if drop_last else tail_items // world_size
    return Layout(rest=rest, world_size=world_size, batch_size=batch_size, full_steps=full,
                  tail=tail, plans=plans, dropped=gone)


def mix_epoch_items(sizes: list[int], weights: list[float] | None, seed: int, epoch: int,
                    epoch_size: int | None = None) -> np.ndarray:
    """Indices (into the concatenated sources) that make up one epoch's list.

    Without weights every selected sample appears once. With weights, source ``i``
    contributes ``round(w_i / sum(w) * epoch_size)`` items (``epoch_size`` defaults to the
    total selected): taken as consecutive windows of a per-source cycle of seeded passes,
    so an under-weighted source rotates through all its samples across epochs and an
    over-weighted one repeats evenly: after any number of epochs, use counts of a
    source's samples differ by at most one.
    """
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if weights is None:
        return np.arange(offsets[-1], dtype=np.int64)
    total = int(epoch_size if epoch_size is not None else offsets[-1])
    w = np.asarray(weights, dtype=np.float64)
    counts = np.floor(w / w.sum() * total).astype(np.int64)
    # hand out the rounding remainder by largest fractional part (deterministic)
    frac = w / w.sum() * total - counts
    for i in np.argsort(-frac, kind="stable")[: total - int(counts.sum())]:
        counts[i] += 1
    parts = []
    for i, (n_i, c) in enumerate(zip(sizes, counts)):
        if n_i == 0 or c == 0:
            continue
        if c == n_i:
            parts.append(offsets[i] + np.arange(n_i, dtype=np.int64))
            continue
        lo, hi = epoch * int(c), (epoch + 1) * int(c)
        chunks = []
        for p in range(lo // n_i, (hi - 1) // n_i + 1):
            perm = _rng(seed, i, p, 0x31C5).permutation(n_i)
            a, b = max(lo, p * n_i) - p * n_i, min(hi, (p + 1) * n_i) - p * n_i
            chunks.append(perm[a:b])
        parts.append(offsets[i] + np.sort(np.concatenate(chunks)))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
