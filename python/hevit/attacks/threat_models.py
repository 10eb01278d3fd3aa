"""What each party observes, produced by the code that really sends it.

Every observation an attack consumes is either bytes :mod:`hevit.federated` sends (a
:class:`~hevit.federated.HospitalClient` message, parsed the way the server parses it) or, for the
paper's own setting that hevit never uses, a plain gradient labelled as such:

- ``plain-fedavg``: the server reads the hospital's update message: count-weighted local
  parameters of the head (or of the ViT tail with ``trainable_blocks``) and the row count.
- ``he-fedavg``, ``he-ridge``, ``he-cls``: the server holds only ciphertexts (update, statistics,
  [CLS] rows) and the public keys; a key holder (another hospital) sees released aggregates.
- ``leak-cls``: a decrypted [CLS] token that leaked from a key holder.
- ``paper-setting``: the gradient of one image with respect to *every* parameter, patch and
  position embeddings included. hevit never sends those (they stay frozen, ``--trainable-blocks``
  trains blocks, norm and head), so this row measures the setting the paper attacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._optional import require
from ..errors import ProtocolError
from ..federated import FederatedConfig, HospitalClient, LinearHead
from ..federated.messages import Message

__all__ = [
    "THREAT_MODELS",
    "ThreatModel",
    "head_delta",
    "message_payload",
    "paper_setting_gradients",
    "plain_update_delta",
    "victim_client",
]


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
        "the hospital's update message: locally trained head (or ViT tail) parameters, "
        "count-weighted, and the row count",
        False,
    ),
    "he-fedavg": ThreatModel(
        "he-fedavg", "server", "CKKS ciphertexts of the same update message", True
    ),
    "he-ridge": ThreatModel(
        "he-ridge", "server", "CKKS ciphertexts of the ridge statistics X^T X, X^T Y", True
    ),
    "he-cls": ThreatModel("he-cls", "server", "CKKS ciphertexts of the [CLS] rows", True),
    "leak-cls": ThreatModel(
        "leak-cls",
        "anyone holding a decrypted token",
        "the [CLS] token of the image (a key holder's decryption that leaked)",
        False,
    ),
    "paper-setting": ThreatModel(
        "paper-setting",
        "server",
        "the gradient of one image w.r.t. every ViT parameter, patch and position embeddings "
        "included (the paper's setting; hevit never sends these)",
        False,
    ),
}


def victim_client(
    tokens, labels, *, classes: int, config: FederatedConfig, keys=None, clients: int = 3, **options
) -> HospitalClient:
    """The victim hospital holding ``tokens`` (rows, or token sequences for a ViT tail);
    ``options`` go to :class:`~hevit.federated.HospitalClient` (e.g. ``dp_rng`` in tests). With
    ``keys`` it signs its contributions as the one hospital of its own roster (the messages an
    observer sees are those of a real hospital)."""
    if keys is not None and "keyholder" not in options:
        from ..protocol import HospitalIdentity, KeyHolder, Roster

        identity = HospitalIdentity.generate("victim")
        options["keyholder"] = KeyHolder(
            identity, Roster.of("threat-model", [identity]), keys, policy=config.flooding
        )
    return HospitalClient(
        "victim",
        tokens,
        labels,
        classes=classes,
        keys=keys,
        config=config,
        clients=clients,
        **options,
    )


def message_payload(data: bytes, blob: str) -> bytes | np.ndarray:
    """One blob of a message as the server receives it (ciphertext bytes or a plaintext array)."""
    msg = Message.from_bytes(data)
    if blob not in msg.blobs:
        raise ProtocolError(f"{msg.kind} message has no {blob!r} blob (has {sorted(msg.blobs)})")
    return msg.blobs[blob]


def plain_update_delta(data: bytes, global_model, config: FederatedConfig) -> np.ndarray:
    """What the server of ``plain-fedavg`` learns about one hospital's data: its local model minus
    the global model it sent (without DP: the count-weighted parameters divided by the count;
    with DP: the clipped, noised delta the message carries)."""
    v = np.asarray(message_payload(data, "update"), dtype=np.float64) * config.count_scale
    if v.shape != (global_model.size + 1,):
        raise ProtocolError(f"update of shape {v.shape} for a model of {global_model.size}")
    if config.dp is not None:
        return v[:-1]
    return v[:-1] / v[-1] - global_model.to_vector()


def head_delta(delta: np.ndarray, classes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A linear head's (weight, bias) change from its flat delta."""
    head = LinearHead.from_vector(delta, classes, dim)
    return head.weights, head.bias


def paper_setting_gradients(model, image: np.ndarray, labels) -> dict[str, np.ndarray]:
    """Gradients of the cross-entropy of ``image`` (B, 3, H, W) w.r.t. every parameter of a timm
    classifier: one local SGD step of the paper's setting (not a message hevit sends)."""
    torch = require("torch", "vit")

    model.zero_grad(set_to_none=True)
    logits = model(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
    loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(list(labels)))
    loss.backward()
    grads = {
        n: p.grad.detach().double().numpy().copy()
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    return grads
