"""Replay buffers: which rows of earlier slices are mixed into slice ``t``.

Policies (TiC-CLIP, Garg et al. ICLR 2024, plus a reservoir):

- ``none``: nothing (sequential fine-tuning).
- ``all``: every row of every earlier slice (cumulative).
- ``exp``: a buffer of ``B`` rows, the most recent earlier slice gets ``B/2``, the one before
  ``B/4``, ...; the oldest takes the remainder.
- ``equal``: ``B`` rows split equally over the earlier slices.
- ``reservoir``: a uniform random sample of everything seen so far under a sample or byte
  budget. Each row's priority is a hash of (seed, uid), and the buffer holds the lowest
  priorities that fit: the same set a streaming reservoir would hold, and a row once evicted
  never returns.

``B`` defaults to the current slice's size. Selections are deterministic in ``seed``.
"""
from __future__ import annotations

import hashlib

import numpy as np


def _shares(policy: str, budget: int, n_prev: int) -> list[int]:
    """Rows wanted from each earlier slice (oldest first)."""
    if policy == "equal":
        base, extra = divmod(budget, n_prev)
        return [base + (1 if i >= n_prev - extra else 0) for i in range(n_prev)]
    shares, left = [0] * n_prev, budget
    for j in range(n_prev - 1, 0, -1):   # most recent first: 1/2, 1/4, ...
        shares[j] = left // 2
        left -= shares[j]
    shares[0] = left
    return shares


def _priority(seed: int, uid: str) -> float:
    h = hashlib.blake2b(f"{seed}:{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0 ** 64


def select_replay(policy: str, prev_uids: list[list[str]], *, current_size: int,
                  budget_samples: int | None = None, budget_bytes: int | None = None,
                  prev_nbytes: list[list[int]] | None = None, seed: int = 0) -> list[np.ndarray]:
    """Row indices to replay from each earlier slice (one int array per earlier slice).

    Args:
        policy: ``none all exp equal reservoir``.
        prev_uids: uids of every earlier slice, oldest first.
        current_size: rows in the current slice (default buffer size for exp/equal).
        budget_samples / budget_bytes: buffer bounds (bytes use ``prev_nbytes``).
        seed: makes the random subsets reproducible.
    """
    n_prev = len(prev_uids)
    if policy == "none" or n_prev == 0:
        return [np.zeros(0, dtype=np.int64) for _ in prev_uids]
    if policy == "all":
        return [np.arange(len(u), dtype=np.int64) for u in prev_uids]
    if policy in ("exp", "equal"):
        budget = budget_samples or current_size
        out = []
        for j, want in enumerate(_shares(policy, budget, n_prev)):
            rng = np.random.default_rng([seed, n_prev, j])
            take = min(want, len(prev_uids[j]))
            out.append(np.sort(rng.choice(len(prev_uids[j]), size=take, replace=False)).astype(np.int64))
        if budget_bytes and prev_nbytes:
            out = _cap_bytes(out, prev_uids, prev_nbytes, budget_bytes, seed)
        return out
    if policy == "reservoir":
        return _reservoir(prev_uids, prev_nbytes, budget_samples, budget_bytes, seed)
    raise ValueError(f"unknown replay policy {policy!r}")


def _ranked(prev_uids, chosen, seed):
    items = [(_priority(seed, prev_uids[j][i]), j, int(i)) for j, idx in enumerate(chosen) for i in idx]
    return sorted(items)


def _cap_bytes(chosen, prev_uids, prev_nbytes, budget_bytes, seed):
    keep: list[list[int]] = [[] for _ in chosen]
    used = 0
    for _, j, i in _ranked(prev_uids, chosen, seed):
        if used + prev_nbytes[j][i] > budget_bytes:
            continue
        used += prev_nbytes[j][i]
        keep[j].append(i)
    return [np.array(sorted(k), dtype=np.int64) for k in keep]


def _reservoir(prev_uids, prev_nbytes, budget_samples, budget_bytes, seed):
    every = [np.arange(len(u)) for u in prev_uids]
    keep: list[list[int]] = [[] for _ in prev_uids]
    count, used = 0, 0
    for _, j, i in _ranked(prev_uids, every, seed):
        if budget_samples and count >= budget_samples:
            break
        size = prev_nbytes[j][i] if (budget_bytes and prev_nbytes) else 0
        if budget_bytes and used + size > budget_bytes:
            continue
        keep[j].append(i)
        count, used = count + 1, used + size
    return [np.array(sorted(k), dtype=np.int64) for k in keep]
