"""Deterministic train/test splits and client partitions (IID and Dirichlet non-IID)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "class_balance",
    "client_parts",
    "dirichlet_partition",
    "iid_partition",
    "partition_name",
    "stratified_folds",
    "stratified_split",
]


def stratified_split(labels, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class shuffled split; returns sorted (train, test) index arrays."""
    labels = np.asarray(labels)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(test_fraction * len(idx))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def stratified_folds(labels, *, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint index arrays covering every row, each class dealt round-robin after a
    seeded shuffle (so class counts per fold differ by at most one)."""
    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    counts = np.bincount(labels) if len(labels) else np.zeros(0, dtype=int)
    if len(labels) < folds or (counts[counts > 0] < folds).any():
        raise ValueError(
            f"{folds}-fold CV needs at least {folds} rows of every class; counts are {counts.tolist()}"
        )
    rng = np.random.default_rng([seed, 0xF01D])
    out: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for j, i in enumerate(idx):
            out[(j + offset) % folds].append(int(i))
        offset += len(idx)
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in out]


def iid_partition(indices, *, clients: int, seed: int) -> list[np.ndarray]:
    """Shuffles ``indices`` and deals them into ``clients`` near-equal parts."""
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    indices = np.asarray(indices)
    if len(indices) < clients:
        raise ValueError(f"cannot give {clients} clients at least one of {len(indices)} samples")
    perm = np.random.default_rng(seed).permutation(indices)
    return [np.sort(part) for part in np.array_split(perm, clients)]


def dirichlet_partition(
    indices,
    labels,
    *,
    clients: int,
    alpha: float,
    seed: int,
    min_per_client: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Non-IID split: each class is divided among clients in Dirichlet(alpha) proportions.

    Small ``alpha`` gives skewed label distributions. Draws are repeated (deterministically)
    until every client holds at least ``min_per_client`` samples.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    indices = np.asarray(indices)
    labels = np.asarray(labels)[indices]
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(labels):
            idx = rng.permutation(indices[labels == c])
            share = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k].extend(piece.tolist())
        if min(len(p) for p in parts) >= min_per_client:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw in {max_tries} tries gave every one of {clients} clients "
        f"{min_per_client} samples; raise alpha or lower min_per_client"
    )


def class_balance(labels, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """(clients, classes) counts, the table every report prints for a partition."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=n_classes) for p in parts])


def client_parts(
    labels,
    test_rows: int,
    *,
    clients: int,
    seed: int,
    partition: str = "iid",
    dirichlet_alpha: float = 0.5,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The federation's split of training rows (``labels``) and ``test_rows`` held-out rows over
    ``clients``: training rows IID or Dirichlet(``dirichlet_alpha``) by label, test rows IID
    (seed + 1). The one split ``hevit experiment`` and every Flower SuperNode compute."""
    rows = np.arange(len(labels))
    if partition == "iid":
        parts = iid_partition(rows, clients=clients, seed=seed)
    elif partition == "dirichlet":
        parts = dirichlet_partition(rows, labels, clients=clients, alpha=dirichlet_alpha, seed=seed)
    else:
        raise ValueError(f"partition must be 'iid' or 'dirichlet', got {partition!r}")
    return parts, iid_partition(np.arange(test_rows), clients=clients, seed=seed + 1)


def partition_name(partition: str, dirichlet_alpha: float = 0.5) -> str:
    """How a report names the split of :func:`client_parts`."""
    if partition == "iid":
        return partition
    if partition == "dirichlet":
        return f"dirichlet(alpha={float(dirichlet_alpha)})"
    raise ValueError(f"partition must be 'iid' or 'dirichlet', got {partition!r}")
