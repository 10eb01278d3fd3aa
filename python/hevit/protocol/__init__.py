"""The protocol core: what a hospital signs, verifies, commits to and releases, and what a server
may do with it. Every hevit driver (the in-process federation, the Flower apps) uses these objects;
none re-implements them.

- :class:`HospitalIdentity` / :class:`Roster`: Ed25519 identities and the federation's registered
  hospitals and quorum (provisioned to every hospital, never taken from the server).
- :class:`KeyHolder`: the only code that decrypts an aggregate; contribute, verify, commit,
  certify, release (see :mod:`hevit.protocol.keyholder`).
- :class:`ReleaseLedger`: one commitment per round, one budget per key set, persisted.
- :mod:`hevit.protocol.statements`: the canonical bytes hospitals sign.

The threat model is SECURITY.md's: an active server that can send any bytes to any hospital.
"""

from .identity import HospitalIdentity, Roster, refuse_identity, save_federation_identities
from .keyholder import ArraySpec, KeyHolder, RoundLabel, VerifiedAggregate, vector_shape
from .ledger import ReleaseLedger
from .statements import CommitStatement, ContributionStatement, aggregate_digest, seeds_digest

__all__ = [
    "ArraySpec",
    "CommitStatement",
    "ContributionStatement",
    "HospitalIdentity",
    "KeyHolder",
    "ReleaseLedger",
    "Roster",
    "RoundLabel",
    "VerifiedAggregate",
    "aggregate_digest",
    "refuse_identity",
    "save_federation_identities",
    "seeds_digest",
    "vector_shape",
]
