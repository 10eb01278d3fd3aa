import numpy as np
import pytest

from hevit.data import class_balance, dirichlet_partition, iid_partition, stratified_split


@pytest.fixture
def labels(rng):
    return rng.integers(0, 3, size=600)


def test_stratified_split_is_deterministic_disjoint_and_balanced(labels):
    tr, te = stratified_split(labels, test_fraction=0.25, seed=5)
    tr2, te2 = stratified_split(labels, test_fraction=0.25, seed=5)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    assert not set(tr) & set(te) and len(tr) + len(te) == len(labels)
    for c in range(3):
        share = np.mean(labels[te] == c) / np.mean(labels == c)
        assert 0.9 < share < 1.1
    other, _ = stratified_split(labels, test_fraction=0.25, seed=6)
    assert not np.array_equal(tr, other)


def test_iid_partition_covers_every_index_once(labels):
    parts = iid_partition(np.arange(600), clients=3, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(600))
    assert {len(p) for p in parts} == {200}
    np.testing.assert_array_equal(parts[0], iid_partition(np.arange(600), clients=3, seed=1)[0])
    balance = class_balance(labels, parts, 3)
    assert balance.shape == (3, 3) and balance.sum() == 600


def test_dirichlet_partition_skews_with_small_alpha(labels):
    skewed = dirichlet_partition(np.arange(600), labels, clients=3, alpha=0.1, seed=2)
    even = dirichlet_partition(np.arange(600), labels, clients=3, alpha=100.0, seed=2)
    for parts in (skewed, even):
        assert sorted(np.concatenate(parts).tolist()) == list(range(600))

    def spread(parts):
        b = class_balance(labels, parts, 3).astype(float)
        return np.mean(np.std(b / b.sum(axis=1, keepdims=True), axis=1))

    assert spread(skewed) > 3 * spread(even)
    again = dirichlet_partition(np.arange(600), labels, clients=3, alpha=0.1, seed=2)
    for a, b in zip(skewed, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_partition_errors():
    with pytest.raises(ValueError, match="alpha must be positive"):
        dirichlet_partition(np.arange(10), np.zeros(10, int), clients=2, alpha=0, seed=0)
    with pytest.raises(ValueError, match="cannot give 5 clients"):
        iid_partition(np.arange(3), clients=5, seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(np.zeros(4), test_fraction=1.5, seed=0)


def test_stratified_folds_cover_every_row_once_and_are_deterministic():
    from hevit.data import stratified_folds

    labels = np.repeat([0, 1, 2], [50, 37, 21])
    folds = stratified_folds(labels, folds=5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))
    for c, total in ((0, 50), (1, 37), (2, 21)):
        counts = [int(np.sum(labels[f] == c)) for f in folds]
        assert max(counts) - min(counts) <= 1 and sum(counts) == total
    again = stratified_folds(labels, folds=5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again, strict=True))
    other = stratified_folds(labels, folds=5, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other, strict=True))
    with pytest.raises(ValueError, match="at least 5 rows of every class"):
        stratified_folds(np.array([0] * 10 + [1] * 3), folds=5, seed=0)
