"""CKKS engine: parameters, key holders and public contexts, encrypted batches, linear plans.

Example
-------
>>> import numpy as np
>>> from hevit import he
>>> params = he.CkksParams.preset("throughput")
>>> sk = he.SecretContext.generate(params)
>>> pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
>>> x = np.random.default_rng(0).standard_normal((8, 16))
>>> enc = he.EncryptedBatch.from_bytes(sk.encrypt(x, layout="batch").to_bytes(), pub)
>>> bool(np.allclose(sk.decrypt(enc), x, atol=1e-4))
True
"""

from . import reference
from .batch import BatchHeader, CompactBatch, EncryptedBatch
from .context import PublicContext, SecretContext
from .mlp import EvaluationKeys, MlpPlan
from .params import PRESETS, CkksParams, max_secure_coeff_modulus_bits
from .plan import LinearPlan

__all__ = [
    "PRESETS",
    "BatchHeader",
    "CkksParams",
    "CompactBatch",
    "EncryptedBatch",
    "EvaluationKeys",
    "LinearPlan",
    "MlpPlan",
    "PublicContext",
    "SecretContext",
    "max_secure_coeff_modulus_bits",
    "reference",
]
