"""``train-head``: a linear probe or small MLP on stored embeddings, for signals no public head covers.

Labels come from a SQL expression over ``samples`` (``--label "caption ILIKE '%watermark%'"``;
NULL means unlabelled) or a labels file (Parquet/CSV with ``uid`` and ``label``). Rows are split
into train and held-out by a hash of (seed, uid), so the split does not depend on shard order
or on the number of workers. Features are L2-normalised then standardised with the training
rows' mean and spread; training is full-batch AdamW on the class-balanced logistic loss. The
decision threshold maximises F1 on 3-fold out-of-fold scores of the *training* rows (an MLP that
fits its training rows perfectly would otherwise put it anywhere), so the held-out precision,
recall and ROC AUC printed are honest estimates. The result is a curation head
(safetensors) that ``classify`` loads; its metadata records the label, threshold and metrics.

Memory: the labelled rows' embeddings (N x d float32) are held in this process; a labelled
subset of a few hundred thousand rows is what probes need.
"""
from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np

from curation.classify.heads import save_head
from curation.errors import ConfigError
from curation.io import Dataset


def split_mask(uids: list[str], holdout: float, seed: int) -> np.ndarray:
    """True for held-out rows: a hash of (seed, uid) below ``holdout`` (stable, order-free)."""
    h = [int.from_bytes(hashlib.sha256(f"{seed}:{u}".encode()).digest()[:8], "big") / 2**64 for u in uids]
    return np.asarray(h) < holdout


def label_table(ds: Dataset, label: str | None, labels: str | None) -> dict[str, bool]:
    """uid -> label from a SQL expression over ``samples`` or from a labels file."""
    if (label is None) == (labels is None):
        raise ConfigError("train-head: give exactly one of --label SQL or --labels FILE")
    if label is not None:
        from curation.io.query import QueryError, query

        try:
            t = query(ds, f"SELECT uid, CAST(({label}) AS BOOLEAN) AS y FROM samples "
                          "WHERE status = 'success' AND tar_offset IS NOT NULL")
        except QueryError as e:
            raise ConfigError(f"--label: {e} (got {label!r})") from None
        return {u: bool(y) for u, y in zip(t.column("uid").to_pylist(), t.column("y").to_pylist()) if y is not None}
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(labels) if labels.endswith(".parquet") else pcsv.read_csv(labels)  # type: ignore[union-attr]
    except (OSError, ValueError) as e:
        raise ConfigError(f"{labels}: unreadable labels file ({e})") from None
    if not {"uid", "label"} <= set(t.column_names):
        raise ConfigError(f"{labels}: a labels file needs columns uid and label (has {t.column_names})")
    return {str(u): bool(y) for u, y in zip(t.column("uid").to_pylist(), t.column("label").to_pylist())
            if y is not None}


def labelled_embeddings(ds: Dataset, labels: dict[str, bool]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(uids, X, y) for labelled rows that have an embedding, shard by shard."""
    from curation.classify.stage import embedding_matrix

    if not ds.embeddings:
        raise ConfigError(f"{ds.url}: has no embeddings; run `curate score` first")
    dim = int(ds.embeddings["dim"])
    uids, xs, ys = [], [], []
    for sid in ds.shard_ids:
        emb = ds.read_embeddings(sid, columns=["uid", "image_emb"])
        x, valid = embedding_matrix(emb, dim)
        for i, u in enumerate(emb.column("uid").to_pylist()):
            if valid[i] and u in labels:
                uids.append(u)
                xs.append(x[i])
                ys.append(labels[u])
    if not uids:
        raise ConfigError(f"{ds.url}: no labelled row has an embedding")
    return uids, np.stack(xs), np.asarray(ys, dtype=bool)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    r = (np.cumsum(counts) - (counts - 1) / 2)[inv]  # 1-based ranks, ties averaged
    return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def pr(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    tp = int((y & pred).sum())
    return (tp / max(int(pred.sum()), 1), tp / max(int(y.sum()), 1))


def _best_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The score cut with the best F1; on a plateau of equal F1, its middle."""
    cuts = np.unique(np.round(s, 4))
    f1s = []
    for t in cuts:
        p, r = pr(y, s >= t)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    f1 = np.asarray(f1s)
    best = np.flatnonzero(f1 >= f1.max() - 1e-9)
    return float((cuts[best[0]] + cuts[best[-1]]) / 2)


def out_of_fold_scores(x: np.ndarray, y: np.ndarray, folds: int, **fit_kw) -> np.ndarray:
    """Each training row's score from a model fitted without it (``folds``-fold, stratified by
    position within each class), so the threshold is chosen on scores an overfit model cannot fake."""
    from curation.classify.heads import Head

    fold = np.zeros(len(y), dtype=np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        fold[idx] = np.arange(len(idx)) % folds
    out = np.zeros(len(y), dtype=np.float32)
    for k in range(folds):
        m = fold == k
        if y[~m].all() or not y[~m].any():
            continue
        out[m] = Head("curation", x.shape[1], (), fit(x[~m], y[~m], **fit_kw)).scores(x[m])
    return out


def fit(x: np.ndarray, y: np.ndarray, *, kind: str, hidden: int, epochs: int, lr: float,
        weight_decay: float, seed: int) -> list[tuple]:
    """Train on (x, y); return the head's ops (normalize, standardize, layers..., sigmoid)."""
    import torch

    n = np.linalg.norm(x, axis=1, keepdims=True)
    xn = x / np.where(n > 0, n, 1)
    mean, std = xn.mean(0), xn.std(0) + 1e-6
    xt = torch.from_numpy(((xn - mean) / std).astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    torch.manual_seed(seed)
    d = x.shape[1]
    net = (torch.nn.Linear(d, 1) if kind == "linear" else
           torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)))
    pos = float(y.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / max(pos, 1.0)))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt).squeeze(1), yt)
        loss.backward()
        opt.step()
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]  # in order: first layer first
    ops: list[tuple] = [("normalize",), ("standardize", mean.astype(np.float32), std.astype(np.float32))]
    for i, m in enumerate(linears):
        ops.append(("linear", m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()))
        ops.append(("relu",) if i < len(linears) - 1 else ("sigmoid",))
    return ops


def train_head(dataset: str, *, out: str, label: str | None = None, labels: str | None = None,
               kind: Literal["linear", "mlp"] = "linear", hidden: int = 64, holdout: float = 0.3,
               seed: int = 0, epochs: int = 300, lr: float = 0.01, weight_decay: float = 0.1,
               storage_options: dict | None = None) -> dict[str, Any]:
    """Train a head on ``dataset``'s stored embeddings and save it to ``out``.

    Returns:
        ``{"out", "precision", "recall", "roc_auc", "threshold", "train", "held_out",
        "positives"}``: precision/recall at the threshold and ROC AUC on the held-out rows.

    Raises:
        ConfigError: bad SQL or labels file, no embeddings, or a split without both classes.
    """
    from curation.classify.heads import Head

    if kind not in ("linear", "mlp"):
        raise ConfigError(f"train-head: kind must be linear or mlp (got {kind!r})")
    if not 0 < holdout < 1:
        raise ConfigError(f"train-head: holdout must be in (0, 1) (got {holdout})")
    ds = Dataset(dataset, storage_options)
    uids, x, y = labelled_embeddings(ds, label_table(ds, label, labels))
    test = split_mask(uids, holdout, seed)
    for part, m in (("training", ~test), ("held-out", test)):
        if y[m].all() or not y[m].any():
            raise ConfigError(f"train-head: the {part} split has only one class "
                              f"({int(y[m].sum())} positive of {int(m.sum())}); label more rows")
    fit_kw = {"kind": kind, "hidden": hidden, "epochs": epochs, "lr": lr, "weight_decay": weight_decay, "seed": seed}
    ops = fit(x[~test], y[~test], **fit_kw)
    dim = x.shape[1]
    head = Head("curation", dim, (), ops)
    threshold = _best_threshold(y[~test], out_of_fold_scores(x[~test], y[~test], 3, **fit_kw))
    s = head.scores(x[test])
    p, r = pr(y[test], s >= threshold)
    metrics = {"precision": round(p, 4), "recall": round(r, 4), "roc_auc": round(roc_auc(y[test], s), 4),
               "threshold": threshold, "train": int((~test).sum()), "held_out": int(test.sum()),
               "positives": int(y.sum())}
    save_head(out, ops, dim=dim, embedding_model=ds.embeddings["model"],  # type: ignore[index]
              label=label or f"labels:{labels}", extra={"kind": kind, "threshold": str(threshold),
                                                         "metrics": metrics, "dataset": ds.url})
    return {"out": out, **metrics}
