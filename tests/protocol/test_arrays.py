"""The public API on named arrays: contribute any dict of arrays with a weight, verify, release
the weighted mean with the original names, shapes and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from hevit import he
from hevit.errors import ValueRangeError
from hevit.federated import FederationKeys
from hevit.he.flooding import coefficient_flooding_sigma, flooding_value_sigma
from hevit.protocol import ArraySpec, HospitalIdentity, KeyHolder, Roster, RoundLabel


def test_named_arrays_round_trip_to_the_weighted_mean(rng):
    keys = FederationKeys.generate(dim=4, classes=2)
    ids = [HospitalIdentity.generate(f"h{k}") for k in range(3)]
    roster = Roster.of("f", ids)
    holders = [KeyHolder(i, roster, keys) for i in ids]
    arrays = [
        {
            "conv.weight": rng.uniform(-1, 1, (4, 3, 3)).astype(np.float32),
            "fc.bias": rng.uniform(-1, 1, 5),
        }
        for _ in ids
    ]
    weights = [10.0, 20.0, 30.0]
    spec = ArraySpec.of(arrays[0], value_bound=1.0, max_weight=100.0)
    label = RoundLabel("s", "fedavg", 1, "updates")
    parts = [
        h.contribute_arrays(a, label, weight=w, spec=spec)
        for h, a, w in zip(holders, arrays, weights, strict=True)
    ]
    pub = keys.updates.public_context()
    total = he.EncryptedBatch.sum([he.EncryptedBatch.from_bytes(p[0], pub) for p in parts])
    verified = holders[0].verify(
        total.to_bytes(), [p[1] for p in parts], [p[2] for p in parts], label, length=spec.length
    )
    mean, weight = holders[0].release_arrays(verified, spec)
    params = keys.updates.params
    # the flooding (and the CKKS error) of the weighted sums, divided by the total weight
    sigma = flooding_value_sigma(
        params,
        coefficient_flooding_sigma(params, ciphertexts=1, summands=3, policy=holders[0].policy),
    )
    tol = (
        (7 * sigma + he.reference.sum_tolerance(params, 3)) / spec.factor(params) / sum(weights) * 2
    )
    assert abs(weight - sum(weights)) <= tol * sum(weights) / 2
    for name in spec.names:
        expected = sum(
            w * a[name].astype(np.float64) for w, a in zip(weights, arrays, strict=True)
        ) / sum(weights)
        assert mean[name].dtype == arrays[0][name].dtype and mean[name].shape == expected.shape
        assert np.abs(mean[name] - expected).max() <= tol + (
            1e-7 if mean[name].dtype == np.float32 else 0
        )
    with pytest.raises(ValueRangeError):
        holders[0].contribute_arrays(
            {**arrays[0], "fc.bias": np.full(5, 2.0)}, label, weight=1, spec=spec
        )
    with pytest.raises(ValueRangeError):
        holders[0].contribute_arrays(arrays[0], label, weight=101, spec=spec)


def test_the_readme_protocol_example_runs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "hevit.protocol" in b
    ]
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    spec, holders = scope["spec"], scope["holders"]
    params = holders[0].context("updates").params
    sigma = flooding_value_sigma(
        params,
        coefficient_flooding_sigma(params, ciphertexts=1, summands=3, policy=holders[0].policy),
    )
    # each hospital sent the same update with weight 100: the mean is that update
    tol = 7 * (sigma + he.reference.sum_tolerance(params, 3)) / spec.factor(params) / 300 * 2
    assert abs(scope["weight"] - 300) <= tol * 300
    for name, value in scope["update"].items():
        assert scope["mean"][name].dtype == value.dtype
        assert np.abs(scope["mean"][name] - value).max() <= tol + 1e-7
