"""What the adversary (the honest-but-curious server, or anyone on the wire) observes under each
strategy, computed from a victim client's private image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["THREAT_MODELS", "Observation", "ThreatModel", "Victim", "client_update", "observe"]


@dataclass(frozen=True)
class ThreatModel:
    name: str
    adversary: str
    observes: str
    encrypted: bool


THREAT_MODELS: dict[str, ThreatModel] = {
    "plain-fedavg": ThreatModel(
        "plain-fedavg",
        "server",
        "the plaintext model update of one local step (all trainable ViT "
        "parameters: patch and position embeddings, blocks, head)",
        False,
    ),
    "he-fedavg": ThreatModel(
        "he-fedavg",
        "server",
        "CKKS ciphertexts of the same update (seeded, bit-packed bytes)",
        True,
    ),
    "he-ridge": ThreatModel(
        "he-ridge",
        "server",
        "CKKS ciphertexts of the client's sufficient statistics X^T X, X^T Y",
        True,
    ),
    "he-cls": ThreatModel(
        "he-cls", "server", "CKKS ciphertexts of the client's [CLS] tokens", True
    ),
    "leak-cls": ThreatModel(
        "leak-cls",
        "anyone holding decrypted tokens",
        "the plaintext [CLS] token of the image (a key holder's decryption that leaked)",
        False,
    ),
}


@dataclass
class Victim:
    """One client's private image and the shared model the clients fine-tune.

    ``model`` is a timm ViT with a classification head; ``image`` is the preprocessed
    (B, 3, H, W) float32 batch of one local step (B = 1 for the analytic attack) and ``labels``
    its B labels; ``mean``/``std`` undo the normalisation so reconstructions can be scored in
    [0, 1].
    """

    model: object
    image: np.ndarray
    labels: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int

    def to_unit_range(self, x: np.ndarray, index: int = 0) -> np.ndarray:
        """Image ``index`` of a normalised (B, 3, H, W) batch -> (H, W, 3) in [0, 1]."""
        mean = np.asarray(self.mean).reshape(3, 1, 1)
        std = np.asarray(self.std).reshape(3, 1, 1)
        return np.clip(x[index] * std + mean, 0.0, 1.0).transpose(1, 2, 0)


@dataclass
class Observation:
    threat: ThreatModel
    plaintext: dict[str, np.ndarray] = field(default_factory=dict)
    ciphertexts: dict[str, bytes] = field(default_factory=dict)
    context: object = None  # the PublicContext the adversary (server) holds, if any


def client_update(victim: Victim) -> dict[str, np.ndarray]:
    """Gradients of the cross-entropy loss of one image w.r.t. every parameter (one local SGD
    step's update, up to the learning rate)."""
    import torch

    model = victim.model
    model.zero_grad(set_to_none=True)
    logits = model(torch.from_numpy(victim.image))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(list(victim.labels)))
    loss.backward()
    grads = {
        n: p.grad.detach().double().numpy().copy()
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    return grads


def _cls_token(victim: Victim) -> np.ndarray:
    import torch

    with torch.no_grad():
        tokens = victim.model.forward_features(torch.from_numpy(victim.image))
        return victim.model.forward_head(tokens, pre_logits=True).double().numpy()


def _encrypt_vector(secret_context, values: np.ndarray) -> bytes:
    """Packs a long vector the way an HE-FL client would: N values per ciphertext, batch layout."""
    n = secret_context.params.poly_modulus_degree
    flat = np.asarray(values, dtype=np.float64).ravel()
    limit = secret_context.params.max_norm
    scale = max(float(np.abs(flat).max()) / (0.5 * limit), 1.0)  # the client rescales into range
    chunks = [
        secret_context.encrypt((flat[i : i + n] / scale).reshape(-1, 1), layout="batch")
        for i in range(0, len(flat), n)
    ]
    return b"".join(c.to_bytes() for c in chunks) if len(chunks) > 1 else chunks[0].to_bytes()


def observe(threat: str, victim: Victim, *, secret_context=None) -> Observation:
    """What the adversary of ``threat`` sees when the victim takes part with its image.

    Encrypted strategies need the victim's ``secret_context`` (key holder side) to produce the
    ciphertext bytes; the observation carries only those bytes and the public context.
    """
    if threat not in THREAT_MODELS:
        raise ValueError(f"unknown threat model {threat!r}; choose from {sorted(THREAT_MODELS)}")
    tm = THREAT_MODELS[threat]
    if tm.encrypted and secret_context is None:
        raise ValueError(f"{threat} needs the client's SecretContext to produce ciphertexts")
    if threat == "plain-fedavg":
        return Observation(tm, plaintext=client_update(victim))
    if threat == "leak-cls":
        return Observation(tm, plaintext={"cls": _cls_token(victim)})
    public = secret_context.public_context()
    if threat == "he-fedavg":
        grads = client_update(victim)
        keys = ("patch_embed.proj.weight", "pos_embed")
        blob = {k: _encrypt_vector(secret_context, grads[k]) for k in keys}
        return Observation(tm, ciphertexts=blob, context=public)
    if threat == "he-cls":
        cls = _cls_token(victim)
        return Observation(
            tm,
            ciphertexts={"cls": secret_context.encrypt(cls, layout="sample").to_bytes()},
            context=public,
        )
    if threat == "he-ridge":
        cls = _cls_token(victim)
        xa = np.hstack([cls, np.ones((1, 1))])
        stats = xa.T @ xa
        return Observation(
            tm, ciphertexts={"xtx": _encrypt_vector(secret_context, stats)}, context=public
        )
    raise AssertionError(
        f"threat model {threat!r} has no observation"
    )  # every listed model is handled above
