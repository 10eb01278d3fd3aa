"""Exceptions raised by hevit.

Every error caused by bad input subclasses :class:`ValueError` as well as :class:`HevitError`,
so callers can catch either. The C++ core raises these same classes.
"""

__all__ = [
    "ContextMismatchError",
    "DataError",
    "DecryptionBudgetError",
    "HevitError",
    "InsecureTransportError",
    "LayoutError",
    "MissingKeyError",
    "ModelError",
    "ParameterError",
    "ProtocolError",
    "QuorumError",
    "ResourceError",
    "SecretKeyRefusedError",
    "SecretKeyRequiredError",
    "SerializationError",
    "ValueRangeError",
    "VerificationError",
]


class HevitError(Exception):
    """Base class of all hevit errors."""


class ParameterError(HevitError, ValueError):
    """CKKS parameters that are insecure (above the HomomorphicEncryption.org 128-bit table) or unusable."""


class ValueRangeError(HevitError, ValueError):
    """Input values that are NaN/inf or too large for the chosen scale and norm bound."""


class LayoutError(HevitError, ValueError):
    """Wrong dtype, shape, dimension or slot layout."""


class ContextMismatchError(HevitError, ValueError):
    """Objects made under different parameters or key sets were combined."""


class SerializationError(HevitError, ValueError):
    """Bytes that are truncated, corrupted, of the wrong kind or of an unsupported version."""


class MissingKeyError(HevitError, ValueError):
    """A Galois key needed for a rotation step is not in the context."""


class SecretKeyRequiredError(HevitError, TypeError):
    """An operation that needs the secret key was asked of a public (server-side) object."""


class SecretKeyRefusedError(HevitError, TypeError):
    """A secret key, key share or identity key was handed to an object that must hold public
    material only (the server's aggregator, inference server and key sets)."""


class DataError(HevitError, ValueError):
    """A dataset folder or image that cannot be used (empty, single class, corrupt file)."""


class ModelError(HevitError, ValueError):
    """A model, weight file or exported graph that cannot be used as asked."""


class ProtocolError(HevitError, ValueError):
    """A federated message that must be rejected: unknown sender, stale or duplicated round,
    wrong strategy or kind, or content that does not match what the round expects."""


class VerificationError(ProtocolError):
    """An aggregate, a contribution or a commitment that a key holder refuses before any
    decryption: a signature that does not verify, a contributor that is not registered, fewer
    distinct contributors than the quorum, its own contribution missing, seeds that are not the
    signed ones, another round, task, session or key set, or a second aggregate for a round it
    already committed to (equivocation)."""


class DecryptionBudgetError(HevitError, RuntimeError):
    """A key holder has released as many flooded decryptions under one key set as its flooding
    policy's ``max_decryptions`` covers: re-key (a new key set) before releasing more."""


class ResourceError(HevitError, RuntimeError):
    """A request past hevit's documented resource limits (threads, image pixels, archive sizes),
    or one the system refused."""


class QuorumError(HevitError, RuntimeError):
    """A federated round ended with fewer valid client contributions than the quorum requires."""


class InsecureTransportError(HevitError, RuntimeError):
    """A federated run over a connection without TLS or node authentication that was not
    declared insecure."""
