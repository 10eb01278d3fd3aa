import numpy as np
import pytest
import timm
import torch

from hevit import he, metrics
from hevit.attacks import (
    THREAT_MODELS,
    Victim,
    ciphertext_only_reconstruction,
    feature_inversion,
    invert_linear_layer,
    invert_patch_embedding,
    inverting_gradients,
    observe,
)
from tests.helpers import require_lc25000


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3
    ).eval()


@pytest.fixture(scope="module")
def real_victim(tiny_vit):
    from PIL import Image

    path = sorted((require_lc25000() / "lung_scc").iterdir())[3]
    img = (
        np.asarray(
            Image.open(path).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC), np.float32
        )
        / 255
    )
    x = ((img - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()
    return Victim(tiny_vit, x, (2,), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 8)


def test_analytic_attack_recovers_the_input_of_a_linear_layer(rng):
    layer = torch.nn.Linear(10, 4)
    x = torch.from_numpy(rng.standard_normal((1, 10)).astype(np.float32))
    loss = torch.nn.functional.cross_entropy(layer(x), torch.tensor([1]))
    loss.backward()
    rec = invert_linear_layer(layer.weight.grad.numpy(), layer.bias.grad.numpy())
    np.testing.assert_allclose(rec, x.numpy()[0], atol=1e-5)
    with pytest.raises(ValueError, match="all bias gradients are zero"):
        invert_linear_layer(np.ones((2, 3)), np.zeros(2))


def test_analytic_attack_recovers_a_real_image_from_an_unprotected_vit_update(real_victim):
    obs = observe("plain-fedavg", real_victim)
    rec = invert_patch_embedding(
        obs.plaintext["patch_embed.proj.weight"], obs.plaintext["pos_embed"], image_size=(32, 32)
    )
    truth, guess = real_victim.to_unit_range(real_victim.image), real_victim.to_unit_range(rec)
    assert metrics.psnr(truth, guess, data_range=1.0) > 60
    assert metrics.ssim(truth, guess, data_range=1.0) > 0.999


@pytest.mark.parametrize("threat", ["he-fedavg", "he-ridge", "he-cls"])
def test_ciphertext_only_adversary_scores_like_noise(real_victim, threat):
    sk = he.SecretContext.generate(he.CkksParams.preset("throughput"))
    obs = observe(threat, real_victim, secret_context=sk)
    assert obs.ciphertexts and not obs.plaintext and THREAT_MODELS[threat].encrypted
    guess = real_victim.to_unit_range(
        ciphertext_only_reconstruction(obs, shape=real_victim.image.shape)
    )
    truth = real_victim.to_unit_range(real_victim.image)
    assert metrics.psnr(truth, guess, data_range=1.0) < 12
    assert abs(metrics.ssim(truth, guess, data_range=1.0)) < 0.1
    assert metrics.nmi(truth, guess, data_range=1.0) < 0.1


def test_encrypted_threats_need_the_clients_key(real_victim):
    with pytest.raises(ValueError, match="needs the client's SecretContext"):
        observe("he-cls", real_victim)
    with pytest.raises(ValueError, match="unknown threat model 'no-such-strategy'"):
        observe("no-such-strategy", real_victim)


@pytest.mark.slow
def test_inverting_gradients_improves_its_objective(real_victim, tiny_vit):
    obs = observe("plain-fedavg", real_victim)
    trace = inverting_gradients(
        tiny_vit,
        obs.plaintext,
        real_victim.labels,
        image_shape=real_victim.image.shape,
        iterations=25,
        seed=1,
    )
    assert trace.image.shape == real_victim.image.shape
    assert trace.objective[-1] < 0.8 * trace.objective[0]
    # the fused attention flag is restored afterwards
    assert all(
        m.fused_attn == timm.layers.use_fused_attn()
        for m in tiny_vit.modules()
        if hasattr(m, "fused_attn")
    )


@pytest.mark.slow
def test_feature_inversion_improves_its_objective(real_victim, tiny_vit):
    target = observe("leak-cls", real_victim).plaintext["cls"]
    trace = feature_inversion(
        tiny_vit, target, image_shape=real_victim.image.shape, iterations=25, seed=1
    )
    assert trace.objective[-1] < 0.5 * trace.objective[0]


@pytest.mark.slow
def test_inverting_gradients_on_a_batch_of_two(real_victim, tiny_vit):
    pair = Victim(
        tiny_vit,
        np.concatenate([real_victim.image, real_victim.image[:, :, ::-1].copy()]),
        (2, 0),
        real_victim.mean,
        real_victim.std,
        8,
    )
    obs = observe("plain-fedavg", pair)
    trace = inverting_gradients(
        tiny_vit, obs.plaintext, pair.labels, image_shape=pair.image.shape, iterations=25, seed=2
    )
    assert trace.image.shape == (2, 3, 32, 32)
    assert trace.objective[-1] < 0.8 * trace.objective[0]
