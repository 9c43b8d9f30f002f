"""The demo's hash-list step: a small blocklist of corpus images, and what the download blocked.

``make demo`` lists a few of the synthetic corpus's originals (by PDQ, a few also by
SHA-256), passes the list to the download stage, and prints how many rows were blocked: the
listed images, their exact re-posts (same bytes under another URL) and the near copies
(re-encoded, cropped, resized) that PDQ still matches within 31 bits.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from curation.blocklist.lists import write_list
from curation.blocklist.pdq import pdq_bytes


@dataclass
class DemoList:
    path: str
    listed: list[str]                       # uids of the listed originals
    copies: dict[str, str] = field(default_factory=dict)  # uid of a copy -> "exact" | "near"


def demo_blocklist(corpus: str, out_path: str, *, with_copies: int = 6, alone: int = 4) -> DemoList:
    """List ``with_copies`` originals that have re-posts in the corpus and ``alone`` that have none."""
    import pyarrow.parquet as pq

    truth = pq.read_table(os.path.join(corpus, "truth.parquet")).to_pylist()
    copies_of: dict[str, list[tuple[str, str]]] = {}
    for t in truth:
        if t["dup_of_uid"]:
            copies_of.setdefault(t["dup_of_uid"], []).append((t["uid"], t["dup_kind"]))
    ok = [t for t in truth if t["dup_kind"] is None and t["path"] and t["expected_status"] == "success"
          and not (set(t["noise"] or []) & {"tiny", "extreme_aspect"})]
    chosen = ([t for t in ok if t["uid"] in copies_of][:with_copies]
              + [t for t in ok if t["uid"] not in copies_of][:alone])
    entries = []
    for i, t in enumerate(chosen):
        raw = open(os.path.join(corpus, t["path"]), "rb").read()
        entries.append((str(pdq_bytes(raw)[0]), "pdq"))
        if i % 3 == 2:  # a few by exact digest too, as lists from hotlines often carry both
            entries.append((hashlib.sha256(raw).hexdigest(), "sha256"))
    write_list(out_path, entries)
    copies = {u: k for t in chosen for u, k in copies_of.get(t["uid"], [])}
    return DemoList(out_path, [t["uid"] for t in chosen], copies)


def blocked_summary(dataset: str, lst: DemoList) -> dict:
    """How many rows the download blocked, split into listed originals, exact and near copies."""
    from curation.io.query import query

    t = query(dataset, "SELECT uid FROM samples WHERE status = 'blocked_hash'")
    blocked = set(t.column("uid").to_pylist())
    exact = [u for u, k in lst.copies.items() if k == "exact"]
    near = [u for u, k in lst.copies.items() if k == "near"]
    return {"blocked": len(blocked), "listed": len(lst.listed),
            "listed_blocked": len(blocked & set(lst.listed)),
            "exact_copies": len(exact), "exact_copies_blocked": len(blocked & set(exact)),
            "near_copies": len(near), "near_copies_blocked": len(blocked & set(near)),
            "unexpected": len(blocked - set(lst.listed) - set(lst.copies))}
