"""The he-cls reply as a decryption oracle: a server's crafted replies are decrypted under a key
set the hospital made for that one session and discards afterwards, and only counts leave."""

from __future__ import annotations

import numpy as np
import pytest

from hevit import _core, he
from hevit.errors import ProtocolError
from hevit.federated import FederatedConfig, FederationKeys, InferenceServer, make_clients
from hevit.federated.messages import Message
from hevit.federated.models import LinearHead

CLASSES, DIM = 3, 16


def test_crafted_he_cls_replies_meet_a_key_that_dies_with_the_session(rng):
    keys = FederationKeys.generate(dim=DIM, classes=CLASSES, inference_preset="latency")
    x = rng.standard_normal((30, DIM))
    y = np.arange(30) % CLASSES
    (client,) = make_clients(
        x, y, [np.arange(30)], classes=CLASSES, keys=keys, config=FederatedConfig(quorum=1)
    )
    zero = LinearHead.zeros(CLASSES, DIM)  # the server's choice of head
    request = Message.from_bytes(client.inference_request(x[:4], model=zero))
    session_key = client._inference_keys(zero)
    # the request travels under a fresh key set, not the federation's shared inference keys
    assert session_key.public_context().keyset_id != keys.inference.public_context().keyset_id
    assert request.keyset_id == session_key.public_context().keyset_id.hex()

    # the server answers with a crafted ciphertext (c1 + amount X^0): decrypting it exactly
    # reads amount * s, i.e. the session key. The hospital does decrypt it (for its own use)...
    server = InferenceServer(keys.server_keys().inference, zero, layout="auto")
    honest = Message.from_bytes(server.handle(request.to_bytes()))
    assert honest.kind == "infer-reply"
    pub = he.PublicContext.from_bytes(request.blobs["context"])
    zeros = pub.encrypt(np.zeros((1, DIM)), layout="coefficient")
    crafted = he.EncryptedBatch(_core.inspection.shift_c1(zeros._core, 0, 2**30))
    reply = Message(
        "infer-reply", "he-cls", 0, "server", request.keyset_id, {"logits": crafted.to_bytes()}
    ).to_bytes()
    logits = client.read_logits(reply, model=zero)
    assert np.abs(logits).max() > 1  # amount * s dominates: what an exact oracle would give
    # ...but the key set it reveals is the session's, which ends with the session: a later
    # session's requests are under a new key, and the old replies cannot be decrypted again
    client.end_inference(zero)
    with pytest.raises(ProtocolError, match="under this key set"):
        client.read_logits(reply, model=zero)
    later = Message.from_bytes(client.inference_request(x[:4], model=zero))
    assert later.keyset_id != request.keyset_id
    # the server cannot substitute a key set of other parameters or swap keys mid-session
    other = he.SecretContext.generate(he.CkksParams.preset("throughput", max_norm=1.0))
    forged = Message(
        "infer-request",
        "he-cls",
        0,
        "client-0",
        other.public_context().keyset_id.hex(),
        {
            "features": other.encrypt(
                x[:1] / np.linalg.norm(x[:1]), layout="coefficient"
            ).to_bytes(),
            "context": other.public_context().to_bytes(),
        },
    ).to_bytes()
    with pytest.raises(ProtocolError, match="other parameters"):
        InferenceServer(keys.server_keys().inference, zero, layout="auto").handle(forged)
