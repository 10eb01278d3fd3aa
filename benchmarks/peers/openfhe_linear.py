"""OpenFHE peer of the linear-head benchmark, run by an interpreter that can import ``openfhe``.

Every ``openfhe`` wheel on the package index is built for CPython 3.10 (Ubuntu 22.04 builds) or
for CPython >= 3.12 against a newer libstdc++ (Ubuntu 24.04 builds), so hevit's CPython 3.11
cannot import it; ``bench_linear.py`` starts this script with ``HEVIT_OPENFHE_PYTHON`` and times
each round trip through a pipe (about 0.1 ms of the total).

Protocol: argv[1] is an ``.npz`` with ``w`` (C x D), ``b`` (C) and ``x`` (B x D). The script
builds its context, prints one JSON line (``ready``, ring dimension, server key bytes), then for
every line ``run`` on stdin does one end-to-end round trip for all B rows and prints one JSON
line with the logits and the bytes up and down.

Path: OpenFHE CKKS, multiplicative depth 1, 2^38 scale, 44-bit first prime (logits up to 2^5
before they wrap), BV key switching (the fastest 128-bit setting found: ring dimension 4096;
HYBRID key switching needs 8192 or 16384), one ciphertext per image, ``EvalInnerProduct`` with each row of W as a plaintext
(log2(1024) = 10 rotations per output), public-key encryption, BINARY serialization.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from openfhe import (
    BINARY,
    CCParamsCKKSRNS,
    DeserializeCiphertextString,
    GenCryptoContext,
    KeySwitchTechnique,
    PKESchemeFeature,
    SecurityLevel,
    Serialize,
    SerializeEvalAutomorphismKeyString,
)

SLOTS = 1024


def main() -> None:
    data = np.load(sys.argv[1])
    w, b, x = data["w"], data["b"], data["x"]
    params = CCParamsCKKSRNS()
    params.SetMultiplicativeDepth(1)
    params.SetScalingModSize(38)
    params.SetFirstModSize(44)
    params.SetBatchSize(SLOTS)
    params.SetSecurityLevel(SecurityLevel.HEStd_128_classic)
    params.SetKeySwitchTechnique(KeySwitchTechnique.BV)
    cc = GenCryptoContext(params)
    for feature in (
        PKESchemeFeature.PKE,
        PKESchemeFeature.KEYSWITCH,
        PKESchemeFeature.LEVELEDSHE,
        PKESchemeFeature.ADVANCEDSHE,
    ):
        cc.Enable(feature)
    keys = cc.KeyGen()
    cc.EvalSumKeyGen(keys.secretKey)
    rows = [cc.MakeCKKSPackedPlaintext(list(r) + [0.0] * (SLOTS - len(r))) for r in w]
    key_bytes = len(SerializeEvalAutomorphismKeyString(BINARY, ""))
    print(
        json.dumps(
            {"ready": True, "ring_dim": cc.GetRingDimension(), "server_key_bytes": key_bytes}
        )
    )
    sys.stdout.flush()
    for line in sys.stdin:
        if line.strip() != "run":
            break
        logits, up, down = [], 0, 0
        for image in x:
            pt = cc.MakeCKKSPackedPlaintext(list(image) + [0.0] * (SLOTS - len(image)))
            request = Serialize(cc.Encrypt(keys.publicKey, pt), BINARY)
            received = DeserializeCiphertextString(request, BINARY)
            replies = [Serialize(cc.EvalInnerProduct(received, r, SLOTS), BINARY) for r in rows]
            values = []
            for reply in replies:
                out = cc.Decrypt(keys.secretKey, DeserializeCiphertextString(reply, BINARY))
                out.SetLength(1)
                values.append(out.GetRealPackedValue()[0])
            logits.append((np.asarray(values) + b).tolist())
            up += len(request)
            down += sum(len(r) for r in replies)
        print(json.dumps({"logits": logits, "up": up, "down": down}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
