"""Training the last ViT blocks too: a tiny timm ViT on hevit's synthetic tiles."""

from __future__ import annotations

import numpy as np
import pytest

from hevit import he
from hevit.data import iid_partition, stratified_split, write_synthetic_dataset
from hevit.features.vit import ClsTokenModel, ViTSpec, build_model
from hevit.federated import (
    FederatedConfig,
    FederationKeys,
    make_clients,
    run_inference,
    run_strategy,
)
from hevit.federated.tail import ViTTail, prefix_tokens
from hevit.he.flooding import coefficient_flooding_sigma
from hevit.jobs.extract import extract_tail_inputs
from hevit.protocol.keyholder import flooding_value_sigma

TINY = ViTSpec.make(
    "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2
)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    root = write_synthetic_dataset(tmp_path_factory.mktemp("tiles"), per_class=24, size=32, seed=3)
    tokens, tail = extract_tail_inputs(root, spec=TINY, blocks=1, progress=False)
    return tokens, tail


def test_tail_reproduces_the_models_cls_token(rng):
    import torch

    model, _ = build_model(TINY, seed=1)
    images = rng.standard_normal((5, 3, 32, 32)).astype(np.float32)
    tail = ViTTail.from_vit(model, 2, classes=3)
    ours = tail.head_features(prefix_tokens(model, images, 2))
    with torch.no_grad():
        cls = ClsTokenModel(model)(torch.from_numpy(images)).double().numpy()
    expected = cls / np.linalg.norm(cls, axis=1, keepdims=True) * (1 - 1e-6)
    np.testing.assert_allclose(ours, expected, atol=1e-5)  # float32 transformer arithmetic
    assert (
        tail.size
        == sum(p.numel() for p in model.blocks[-2:].parameters())
        + sum(p.numel() for p in model.norm.parameters())
        + 3 * 32
        + 3
    )
    v = rng.standard_normal(tail.size)
    loaded = tail.with_vector(v).to_vector()
    head = 3 * 32 + 3  # float64 head parameters come back exactly, float32 block parameters rounded
    np.testing.assert_array_equal(loaded[-head:], v[-head:])
    np.testing.assert_array_equal(loaded[:-head], v[:-head].astype(np.float32))
    back = tail.with_vector(tail.to_vector())
    np.testing.assert_array_equal(back.to_vector(), tail.to_vector())
    with pytest.raises(ValueError, match="parameters"):
        tail.with_vector(np.zeros(3))


def test_he_fedavg_trains_the_tail_like_plain_fedavg(tiles):
    tokens, tail = tiles
    train, test = stratified_split(tokens.labels, test_fraction=0.3, seed=0)
    parts = iid_partition(np.arange(len(train)), clients=3, seed=0)
    keys = FederationKeys.generate(
        aggregation_preset="release",
        inference_preset="single-row",
        inference_layout="sample",
        dim=32,
        classes=3,
    )
    config = FederatedConfig(
        rounds=2,
        local_epochs=2,
        learning_rate=0.2,
        standardize=False,
        inference_preset="single-row",
        inference_layout="sample",
    )
    x, y = tokens.features[train], tokens.labels[train]
    xt, yt = tokens.features[test], tokens.labels[test]
    results = {}
    for strategy in ("plain-fedavg", "he-fedavg"):
        clients = make_clients(x, y, parts, classes=3, keys=keys, config=config)
        results[strategy] = run_strategy(
            strategy,
            clients,
            keys.server_keys(),
            xt,
            yt,
            config,
            progress=False,
            initial_model=tail,
        )
    plain, enc = results["plain-fedavg"], results["he-fedavg"]
    assert [r.accuracy for r in enc.rounds] == [r.accuracy for r in plain.rounds]
    # the released model differs from plaintext FedAvg by the released error only, amplified by
    # one round of local training: compare the round's uploads instead (exactly the same bytes)
    assert next(r.bytes_up for r in enc.rounds).keys() == {"client-0", "client-1", "client-2"}
    length = tail.size + 1
    assert (
        enc.rounds[0].bytes_up["client-0"] > 11 * length
    )  # ~11 bytes per parameter (update preset)
    params = keys.updates.params
    sigma = flooding_value_sigma(
        params,
        coefficient_flooding_sigma(
            params,
            ciphertexts=-(-length // params.poly_modulus_degree),
            summands=3,
            policy=config.flooding,
        ),
    )
    # the averaged parameters carry sigma / (rows in the federation) of flooding noise
    assert sigma * config.count_scale / len(x) < 1e-5
    moved = np.abs(enc.head.to_vector() - tail.to_vector())[: tail.size - 3 * 32 - 3].max()
    assert moved > 0  # the blocks were trained, not only the head
    record = run_inference(
        enc.head,
        clients,
        keys.server_keys(),
        iid_partition(np.arange(len(xt)), clients=3, seed=1),
        xt,
        yt,
        config,
    )
    assert record.agreement == 1.0
    plan = he.LinearPlan.compile(
        keys.server_keys().inference, enc.head.weights, enc.head.bias, layout="sample"
    )
    tol = he.reference.linear_tolerance(
        keys.inference.params, enc.head.weights, enc.head.head_features(xt), plan
    )
    assert record.max_abs_logit_error <= tol


def test_experiment_with_trainable_blocks(tiles):
    from hevit.jobs.experiment import run_experiment

    tokens, tail = tiles
    report = run_experiment(
        tokens,
        config=FederatedConfig(rounds=2, local_epochs=1, learning_rate=0.2),
        progress=False,
        tail=tail,
    )
    trained = {s["strategy"]: s["trained"] for s in report.strategies}
    assert trained["he-ridge"].startswith("linear head (") and trained["he-fedavg"].startswith(
        "last 1 ViT block(s)"
    )
    assert all(s["inference"]["agreement"] == 1.0 for s in report.strategies)
    sizes = {s["strategy"]: s["parameters"] for s in report.strategies}
    assert sizes["he-fedavg"] == tail.size and sizes["he-ridge"] == 3 * 32 + 3
