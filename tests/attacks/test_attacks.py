"""Attacks against numpy ground truth and real messages; every test here can fail."""

import numpy as np
import pytest
import timm
import torch

from hevit import metrics
from hevit.attacks import (
    ciphertext_features,
    cosine_to_truth,
    distinguishing_game,
    feature_inversion,
    head_delta,
    invert_linear_layer,
    invert_patch_embedding,
    inverting_gradients,
    message_payload,
    paper_setting_gradients,
    plain_update_delta,
    recover_tokens,
    victim_client,
)
from hevit.federated import DPConfig, FederatedConfig, FederationKeys, LinearHead
from tests.helpers import require_lc25000

CLASSES, DIM = 3, 48


@pytest.fixture(scope="module")
def tiny_vit():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3
        ).eval()


@pytest.fixture(scope="module")
def real_image():
    from PIL import Image

    path = sorted((require_lc25000() / "lung_scc").iterdir())[3]
    img = (
        np.asarray(
            Image.open(path).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC), np.float32
        )
        / 255
    )
    return ((img - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()


def to_unit(x):
    return np.clip(x[0] * 0.5 + 0.5, 0, 1).transpose(1, 2, 0)


@pytest.fixture(scope="module")
def global_head():
    rng = np.random.default_rng(7)
    return LinearHead(rng.standard_normal((CLASSES, DIM)) * 0.3, rng.standard_normal(CLASSES))


def test_analytic_attack_recovers_the_input_of_a_linear_layer(rng):
    layer = torch.nn.Linear(10, 4)
    x = torch.from_numpy(rng.standard_normal((1, 10)).astype(np.float32))
    loss = torch.nn.functional.cross_entropy(layer(x), torch.tensor([1]))
    loss.backward()
    rec = invert_linear_layer(layer.weight.grad.numpy(), layer.bias.grad.numpy())
    np.testing.assert_allclose(rec, x.numpy()[0], atol=1e-5)
    with pytest.raises(ValueError, match="all bias gradients are zero"):
        invert_linear_layer(np.ones((2, 3)), np.zeros(2))


def test_analytic_attack_recovers_a_real_image_when_patches_fit_the_width(tiny_vit, real_image):
    """16 patches of 8x8 against 192 dimensions: the paper's setting inverts exactly."""
    grads = paper_setting_gradients(tiny_vit, real_image, (2,))
    rec = invert_patch_embedding(
        grads["patch_embed.proj.weight"], grads["pos_embed"], image_size=(32, 32)
    )
    truth, guess = to_unit(real_image), to_unit(rec)
    assert metrics.psnr(truth, guess, data_range=1.0) > 60
    assert metrics.ssim(truth, guess, data_range=1.0) > 0.999


def test_analytic_attack_with_more_patches_than_dimensions_uses_the_smoothness_prior(real_image):
    """64 patches of 4x4 against 48 dimensions: the null space is filled by the prior, so the
    image is close but no longer exact (the ViT-Ti/16 case: 196 patches, 192 dimensions)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = timm.create_model(
            "vit_tiny_patch16_224",
            img_size=32,
            patch_size=4,
            depth=1,
            embed_dim=48,
            num_heads=3,
            num_classes=3,
        ).eval()
    grads = paper_setting_gradients(model, real_image, (2,))
    rec = invert_patch_embedding(
        grads["patch_embed.proj.weight"], grads["pos_embed"], image_size=(32, 32)
    )
    psnr = metrics.psnr(to_unit(real_image), to_unit(rec), data_range=1.0)
    assert 15 < psnr < 60


@pytest.mark.parametrize("batch", [1, 4])
def test_tokens_recovered_from_the_plain_fedavg_message(rng, global_head, batch):
    """The server divides weight by bias changes of the update message the client really sends:
    exact for one image, a mixture for several."""
    x = rng.standard_normal((batch, DIM))
    y = rng.integers(0, CLASSES, batch)
    config = FederatedConfig()
    client = victim_client(x, y, classes=CLASSES, config=config)
    delta = plain_update_delta(
        client.update_message("plain-fedavg", global_head, 1), global_head, config
    )
    cos = cosine_to_truth(recover_tokens(*head_delta(delta, CLASSES, DIM)), client.x)
    if batch == 1:
        assert cos[0] > 0.999999
    else:
        assert cos.mean() < 0.999


def test_dp_noise_hides_the_token(rng, global_head):
    x, y = rng.standard_normal((1, DIM)), np.array([1])
    config = FederatedConfig(dp=DPConfig(noise_multiplier=4.0))
    client = victim_client(x, y, classes=CLASSES, config=config, dp_rng=np.random.default_rng(1))
    delta = plain_update_delta(
        client.update_message("plain-fedavg", global_head, 1), global_head, config
    )
    cos = cosine_to_truth(recover_tokens(*head_delta(delta, CLASSES, DIM)), client.x)
    assert cos[0] < 0.9


def test_distinguishing_game_has_power_and_ciphertexts_do_not_leak(rng, global_head):
    """Two classes of tokens: the adversary wins on the plaintext rows and on nothing else; on
    he-cls ciphertext bytes it shows no advantage. The ciphertexts are fresh random draws every
    run, so the verdict uses a 99.9% interval: secure encryption fails it in 1 run of 2,000
    (at 95%, and counting an interval below 0 as a failure, it failed 1 run in 20)."""
    keys = FederationKeys.generate(dim=DIM, classes=CLASSES)
    config = FederatedConfig()
    centres = rng.standard_normal((2, DIM))
    plain, cipher = ([], []), ([], [])
    for side in (0, 1):
        for _ in range(120):
            row = (centres[side] + 0.5 * rng.standard_normal(DIM))[None]
            client = victim_client(row, np.array([side]), classes=CLASSES, config=config, keys=keys)
            plain[side].append(client.preprocess(row)[0])
            blob = message_payload(client.inference_request(row), "features")
            cipher[side].append(ciphertext_features(blob, 1024))
    won = distinguishing_game(np.stack(plain[0]), np.stack(plain[1]), seed=0, confidence=0.999)
    hidden = distinguishing_game(np.stack(cipher[0]), np.stack(cipher[1]), seed=0, confidence=0.999)
    assert won.advantage > 0.8 and won.leaks  # the test has power at this confidence
    assert not hidden.leaks


def test_distinguishing_game_interval_is_a_wilson_interval():
    same = np.zeros((60, 3))
    result = distinguishing_game(same, same + 0.0, seed=0)  # identical: chance at best
    assert result.ci_low < 0 < result.ci_high and result.test == 40
    assert not result.leaks
    # the interval is Wilson's at the asked confidence: wider at 99.9% than at 95%
    wide = distinguishing_game(same, same + 0.0, seed=0, confidence=0.999)
    assert wide.ci_low < result.ci_low and wide.ci_high > result.ci_high
    with pytest.raises(ValueError, match="confidence"):
        distinguishing_game(same, same, seed=0, confidence=1.0)
    # the published 95% Wilson interval of 8 successes in 10 trials: [0.4902, 0.9433]
    from hevit.attacks.distinguishing import _wilson

    lo, hi = _wilson(8, 10, 0.95)
    assert abs(lo - 0.4902) < 5e-5 and abs(hi - 0.9433) < 5e-5
    with pytest.raises(ValueError, match="too few samples"):
        distinguishing_game(np.zeros((5, 2)), np.ones((5, 2)), seed=0)


@pytest.mark.slow
def test_inverting_gradients_improves_its_objective(real_image, tiny_vit):
    grads = paper_setting_gradients(tiny_vit, real_image, (2,))
    trace = inverting_gradients(
        tiny_vit, grads, (2,), image_shape=real_image.shape, iterations=25, seed=1
    )
    assert trace.image.shape == real_image.shape
    assert trace.objective[-1] < 0.8 * trace.objective[0]
    # the fused attention flag is restored afterwards
    assert all(
        m.fused_attn == timm.layers.use_fused_attn()
        for m in tiny_vit.modules()
        if hasattr(m, "fused_attn")
    )


@pytest.mark.slow
def test_feature_inversion_improves_its_objective_and_ignores_scale(real_image, tiny_vit):
    with torch.no_grad():
        target = tiny_vit.forward_head(
            tiny_vit.forward_features(torch.from_numpy(real_image)), pre_logits=True
        ).numpy()
    a = feature_inversion(tiny_vit, target, image_shape=real_image.shape, iterations=25, seed=1)
    b = feature_inversion(
        tiny_vit, 7.0 * target, image_shape=real_image.shape, iterations=25, seed=1
    )
    assert a.objective[-1] < 0.5 * a.objective[0]
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-4)
