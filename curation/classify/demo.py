"""The demo's watermark step: train a head on a labelled seed subset, apply it, score it against the truth.

The synthetic corpus stamps a stock-photo watermark on some images (``curation.synth.stamp``).
A curator labels a seed subset (here: the ground truth of half the downloaded rows, picked by a
hash of the uid), ``train-head`` fits a small MLP on their stored embeddings, ``classify`` adds
``watermark_score`` to the whole dataset, and the rows outside the seed subset measure it.
"""
from __future__ import annotations

import os

import numpy as np


def watermark_demo(dataset: str, corpus: str, work: str, *, seed_fraction: float = 0.5, seed: int = 0) -> dict:
    """Returns the held-out figures of ``train-head`` and P/R of the applied head on unlabelled rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.classify.heads import load_head
    from curation.classify.stage import classify
    from curation.classify.train import split_mask, train_head
    from curation.io.query import query

    truth = {t["uid"]: "watermark" in (t["noise"] or [])
             for t in pq.read_table(os.path.join(corpus, "truth.parquet"), columns=["uid", "noise"]).to_pylist()}
    rows = query(dataset, "SELECT uid FROM samples WHERE status = 'success' AND tar_offset IS NOT NULL")
    uids = rows.column("uid").to_pylist()
    in_seed = ~split_mask(uids, 1.0 - seed_fraction, seed + 1)  # a uid-hash sample, independent of train-head's split
    seed_uids = [u for u, s in zip(uids, in_seed) if s]
    os.makedirs(work, exist_ok=True)
    labels = os.path.join(work, "watermark_labels.parquet")
    pq.write_table(pa.table({"uid": seed_uids, "label": [truth[u] for u in seed_uids]}), labels)
    head_path = os.path.join(work, "watermark.safetensors")
    fit = train_head(dataset, labels=labels, out=head_path, kind="mlp", holdout=0.3, seed=seed)
    out = classify(dataset, {"watermark": head_path})
    thr = float(load_head(head_path).meta["threshold"])
    t = query(out, "SELECT uid, watermark_score FROM samples WHERE watermark_score IS NOT NULL")
    seed_set = set(seed_uids)
    rest = [(truth[u], s >= thr) for u, s in zip(t.column("uid").to_pylist(), t.column("watermark_score").to_pylist())
            if u not in seed_set]
    y = np.array([a for a, _ in rest], dtype=bool)
    p = np.array([b for _, b in rest], dtype=bool)
    tp = int((y & p).sum())
    return {"train_head": fit, "applied": {"rows": len(rest), "truth": int(y.sum()), "flagged": int(p.sum()),
                                           "precision": tp / max(int(p.sum()), 1),
                                           "recall": tp / max(int(y.sum()), 1)},
            "version": out.version}


def safety_demo(run_dir: str, corpus: str, lst, work: str) -> tuple[dict, list[str]]:
    """The demo's safety scorecard: blocked rows (``lst``: the :class:`~curation.blocklist.demo.DemoList`
    the download got) and the watermark head. Returns (figures, lines to print)."""
    from curation.blocklist.demo import blocked_summary
    from curation.errors import ConfigError

    dataset = os.path.join(run_dir, "dataset")
    b = blocked_summary(dataset, lst)
    lines = [
        f"hash blocklist: {b['blocked']} rows blocked before anything was written ({b['listed_blocked']}/{b['listed']} "
        f"listed images, {b['exact_copies_blocked']}/{b['exact_copies']} exact re-posts, "
        f"{b['near_copies_blocked']}/{b['near_copies']} near copies within PDQ distance 31; "
        f"{b['unexpected']} others)"]
    try:
        w = watermark_demo(dataset, corpus, work)
    except ConfigError as e:  # a tiny demo corpus may label too few watermarked rows to split
        lines.append(f"watermark head: not trained ({e})")
        return {"blocklist": b, "watermark": None}, lines
    f, a = w["train_head"], w["applied"]
    lines += [
        f"watermark head (train-head on {f['train'] + f['held_out']} labelled seed rows): held-out precision "
        f"{f['precision']:.3f} recall {f['recall']:.3f} ROC AUC {f['roc_auc']:.3f}; applied to the "
        f"{a['rows']} unlabelled rows: precision {a['precision']:.3f} recall {a['recall']:.3f} "
        f"({a['flagged']} flagged, {a['truth']} truly watermarked)",
    ]
    return {"blocklist": b, "watermark": w}, lines
