"""The key holder: the only code in hevit that decrypts, and what it refuses to decrypt.

A :class:`KeyHolder` is one hospital's side of the protocol core. It

1. **contributes**: encrypts a vector (an update, statistics, moments; the sample count travels
   inside the ciphertext) under a shared key set, with c1 expanded from fresh public seeds, and
   signs a :class:`~hevit.protocol.statements.ContributionStatement` binding the federation,
   session, task, round, key set, its id, the aggregate it trained from and the hash of its seeds;
2. **verifies** an aggregate before anything is decrypted: every listed contribution is signed by a
   registered hospital (against the hospital's own roster, never the server's word), for this
   federation, session, task, round, key set, parent and shape; at least a quorum of distinct
   contributors; its own contribution among them; and the seeds inside the summed ciphertext are
   exactly the signed ones, so c1 of the sum is the sum of honest seed expansions and can never be
   a polynomial of the server's choosing (the key-recovery attack of the active-server issue needs
   exactly that). It then **commits** to the aggregate's digest: one digest per round, forever
   (the ledger), so a second, different aggregate for the round is refused as equivocation;
3. **releases** a verified aggregate once: decrypted with discrete Gaussian flooding noise added to
   the integer coefficients in C++ (:meth:`hevit.he.SecretContext.decrypt_flooded`), drawn from
   ChaCha20 under a key derived from the shared secret key and the aggregate's digest, so every
   site holding the key set releases bit-identical values (averaging the sites' copies gains
   nothing) and the budget counts the aggregate once per key set;
4. **certifies**: values derived from a release (evaluation counts, a published model) leave the
   hospital only for an aggregate that a quorum of hospitals committed to (signed commitments
   collected by the server), which rules out different sums for different hospitals.

Exact decryptions never leave this object; the only ones it makes are of he-cls replies under a
key generated for that one he-cls session (see :mod:`hevit.protocol.inference`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import he
from ..errors import ParameterError, ProtocolError, VerificationError
from ..he.flooding import FloodingPolicy, coefficient_flooding_sigma, flooding_value_sigma
from .identity import HospitalIdentity, Roster
from .ledger import ReleaseLedger
from .statements import CommitStatement, ContributionStatement, aggregate_digest, seeds_digest

__all__ = ["ArraySpec", "KeyHolder", "RoundLabel", "VerifiedAggregate", "vector_shape"]

_SEED_BYTES = 64


def vector_shape(length: int, params: he.CkksParams) -> tuple[int, int]:
    """The (rows, cols) batch-layout matrix a flat vector is packed as: one full ciphertext per
    column, ``cols = ceil(length / N)``, read row-major."""
    if length < 1:
        raise ProtocolError("cannot encrypt an empty vector")
    cols = math.ceil(length / params.poly_modulus_degree)
    return math.ceil(length / cols), cols


@dataclass(frozen=True)
class RoundLabel:
    """Where a contribution or aggregate belongs: every field is bound into the signatures."""

    session: str
    task: str
    round: int
    #: ``updates`` or ``aggregation``: the shared key set the vectors are encrypted under
    keyset: str

    @property
    def key(self) -> str:
        return f"{self.session}/{self.task}/{self.round}"


@dataclass(frozen=True)
class VerifiedAggregate:
    """An aggregate that passed :meth:`KeyHolder.verify` (nothing of it was decrypted yet)."""

    label: RoundLabel
    digest: bytes
    batch: he.EncryptedBatch
    contributors: tuple[str, ...]
    length: int


class KeyHolder:
    """One hospital's keys, identity, roster, flooding policy and release ledger.

    Parameters
    ----------
    identity : HospitalIdentity
    roster : Roster (the hospital's own copy)
    keys : a FederationKeys or KeyFolder: the shared ``updates`` and ``aggregation`` key sets
    policy : FloodingPolicy (the node's own, never the server's)
    ledger : ReleaseLedger (a file in the key folder on Flower; in memory in process)
    """

    def __init__(
        self,
        identity: HospitalIdentity,
        roster: Roster,
        keys,
        *,
        policy: FloodingPolicy | None = None,
        ledger: ReleaseLedger | None = None,
    ) -> None:
        if identity.hospital_id not in roster.hospitals:
            raise ProtocolError(f"{identity.hospital_id!r} is not in the roster")
        if roster.hospitals[identity.hospital_id] != identity.public_key:
            raise ProtocolError("the roster holds another public key for this hospital")
        self.identity = identity
        self.roster = roster
        self.keys = keys
        self.policy = policy or FloodingPolicy()
        self.ledger = ledger or ReleaseLedger()

    @property
    def hospital_id(self) -> str:
        return self.identity.hospital_id

    def context(self, keyset: str) -> he.SecretContext:
        if keyset not in ("updates", "aggregation"):
            raise ProtocolError(f"no shared key set {keyset!r}")
        return getattr(self.keys, keyset)

    # ------------------------------------------------------------------ contribute
    def contribute(
        self, vector, label: RoundLabel, *, parent: bytes = b""
    ) -> tuple[bytes, ContributionStatement, bytes]:
        """Encrypts ``vector`` (already scaled to the key set's value range) for ``label``.

        Returns (ciphertext bytes, statement, signature). ``parent``: digest of the aggregate
        this contribution was computed from (empty for none).
        """
        ctx = self.context(label.keyset)
        v = np.asarray(vector, dtype=np.float64).ravel()
        rows, cols = vector_shape(len(v), ctx.params)
        padded = np.zeros(rows * cols)
        padded[: len(v)] = v
        batch = ctx.encrypt(padded.reshape(rows, cols), layout="batch")
        statement = ContributionStatement(
            federation=self.roster.digest,
            session=label.session,
            task=label.task,
            round=label.round,
            keyset_id=ctx.public_context().keyset_id,
            contributor=self.hospital_id,
            parent=bytes(parent),
            seeds_digest=seeds_digest(batch.seeds),
            rows=rows,
            cols=cols,
        )
        return batch.to_bytes(), statement, self.identity.sign(statement.to_bytes())

    # ------------------------------------------------------------------ verify
    def verify(
        self,
        blob: bytes,
        statements: list[ContributionStatement],
        signatures: list[bytes],
        label: RoundLabel,
        *,
        length: int,
        parent: bytes = b"",
        require_own: bool = True,
    ) -> VerifiedAggregate:
        """Checks an aggregate before any decryption (see the module docstring) and commits to
        its digest for ``label``. Raises VerificationError (nothing is decrypted) otherwise."""
        ctx = self.context(label.keyset)
        public = ctx.public_context()
        if len(statements) != len(signatures) or not statements:
            raise VerificationError("an aggregate lists one signed statement per contribution")
        contributors = [s.contributor for s in statements]
        if len(set(contributors)) != len(contributors):
            raise VerificationError(f"an aggregate lists a contributor twice: {contributors}")
        if len(contributors) < self.roster.quorum:
            raise VerificationError(
                f"{len(contributors)} contributor(s), the federation's quorum is {self.roster.quorum}"
            )
        if require_own and self.hospital_id not in contributors:
            raise VerificationError(
                f"the aggregate does not hold {self.hospital_id}'s contribution"
            )
        rows, cols = vector_shape(length, ctx.params)
        expected = {
            "federation": self.roster.digest,
            "session": label.session,
            "task": label.task,
            "round": label.round,
            "keyset_id": public.keyset_id,
            "parent": bytes(parent),
            "rows": rows,
            "cols": cols,
        }
        for s, signature in zip(statements, signatures, strict=True):
            wrong = [k for k, v in expected.items() if getattr(s, k) != v]
            if wrong:
                raise VerificationError(
                    f"{s.contributor}'s statement is for another {', '.join(wrong)}"
                )
            self.roster.verify(s.contributor, s.to_bytes(), signature)
        try:
            header = he.EncryptedBatch.peek(blob)
        except ValueError as exc:
            raise VerificationError(f"the aggregate's ciphertext is malformed: {exc}") from None
        k = len(statements)
        if (header.layout, header.rows, header.cols, header.seed_count) != ("batch", rows, cols, k):
            raise VerificationError(
                f"the aggregate's ciphertext is a {header.layout} batch of {header.rows}x"
                f"{header.cols} with {header.seed_count} seeds per ciphertext; {k} signed "
                f"contributions of {rows}x{cols} were listed"
            )
        batch = he.EncryptedBatch.from_bytes(blob, public)
        seeds = batch.seeds
        per_ct = k * _SEED_BYTES
        for j, s in enumerate(statements):
            own = b"".join(
                seeds[i * per_ct + j * _SEED_BYTES : i * per_ct + (j + 1) * _SEED_BYTES]
                for i in range(batch.ciphertext_count)
            )
            if seeds_digest(own) != s.seeds_digest:
                raise VerificationError(
                    f"the seeds of {s.contributor}'s ciphertexts are not the ones it signed: c1 of "
                    "this aggregate is not the sum of the signed contributions"
                )
        digest = aggregate_digest(blob, [s.to_bytes() for s in statements], list(signatures))
        self.ledger.commit(label.key, digest)  # one aggregate per round, forever
        return VerifiedAggregate(label, digest, batch, tuple(contributors), int(length))

    # ------------------------------------------------------------------ commit and certify
    def commitment(self, verified: VerifiedAggregate) -> tuple[CommitStatement, bytes]:
        """This hospital's signed statement that it holds ``verified`` for its round."""
        label = verified.label
        statement = CommitStatement(
            self.roster.digest,
            label.session,
            label.task,
            label.round,
            verified.digest,
            self.hospital_id,
        )
        return statement, self.identity.sign(statement.to_bytes())

    def certify(self, label: RoundLabel, commitments: list[tuple[CommitStatement, bytes]]) -> bytes:
        """Checks that at least a quorum of distinct registered hospitals committed to the
        aggregate this hospital committed to for ``label``; returns its digest. From then on
        values derived from its release may be reported (:meth:`require_certified`)."""
        digest = self.ledger.committed(label.key)
        if digest is None:
            raise VerificationError(f"{label.key}: no aggregate was committed to by this hospital")
        signers = set()
        for statement, signature in commitments:
            if (
                statement.federation,
                statement.session,
                statement.task,
                statement.round,
            ) != (self.roster.digest, label.session, label.task, label.round):
                raise VerificationError(f"a commitment of {statement.signer} for another round")
            if statement.digest != digest:
                raise VerificationError(
                    f"{statement.signer} committed to another aggregate for {label.key}: the "
                    "server sent different aggregates to different hospitals; nothing is reported"
                )
            self.roster.verify(statement.signer, statement.to_bytes(), signature)
            signers.add(statement.signer)
        if len(signers) < self.roster.quorum:
            raise VerificationError(
                f"{label.key}: {len(signers)} hospital(s) committed, the quorum is "
                f"{self.roster.quorum}"
            )
        self.ledger.certify(label.key, digest)
        return digest

    def require_certified(self, label: RoundLabel) -> bytes:
        digest = self.ledger.certified(label.key)
        if digest is None:
            raise VerificationError(
                f"{label.key}: no quorum of hospitals has committed to this aggregate yet; "
                "nothing derived from it is reported"
            )
        return digest

    # ------------------------------------------------------------------ release
    def release(self, verified: VerifiedAggregate, *, max_sigma=None) -> np.ndarray:
        """The flooded decryption of a verified aggregate (a ``length`` vector), identical at
        every site. ``max_sigma(values)``: the largest flooding std, in value units, the task
        tolerates (computed from the released values, never the exact ones); a larger one
        raises ParameterError."""
        ctx = self.context(verified.label.keyset)
        params = ctx.params
        sigma = coefficient_flooding_sigma(
            params,
            ciphertexts=verified.batch.ciphertext_count,
            summands=len(verified.contributors),
            policy=self.policy,
        )
        self.ledger.spend(
            ctx.public_context().keyset_id, verified.digest, self.policy.max_decryptions
        )
        values = ctx.decrypt_flooded(
            verified.batch,
            sigma=sigma,
            noise_key=ctx.derive_key(b"hevit/flooding/v1" + verified.digest),
        ).ravel()[: verified.length]
        value_sigma = flooding_value_sigma(params, sigma)
        if max_sigma is not None and value_sigma > max_sigma(values):
            raise ParameterError(
                f"noise flooding at {self.policy.statistical_security_bits}-bit statistical "
                f"security over {self.policy.max_decryptions} releases adds std {value_sigma:.3g} "
                "per value, above what this task tolerates (the tolerance is derived from the "
                "released values, which never leave in a message); use a key set with a larger "
                "scale"
            )
        return values

    # ------------------------------------------------------------------ named arrays
    def contribute_arrays(
        self, arrays: dict, label: RoundLabel, *, weight: float, spec: ArraySpec, parent=b""
    ) -> tuple[bytes, ContributionStatement, bytes]:
        """:meth:`contribute` of a dict of named arrays packed by ``spec`` (the weight travels
        inside the ciphertext)."""
        vector = spec.pack(arrays, weight, self.context(label.keyset).params)
        return self.contribute(vector, label, parent=parent)

    def release_arrays(self, verified: VerifiedAggregate, spec: ArraySpec) -> tuple[dict, float]:
        """The released weighted mean of every array (original names, shapes, dtypes) and the
        total weight of a verified aggregate of ``spec`` contributions."""
        if verified.length != spec.length:
            raise ProtocolError("the aggregate is not of this spec's length")
        params = self.context(verified.label.keyset).params
        return spec.unpack(self.release(verified), params)


@dataclass(frozen=True)
class ArraySpec:
    """How a dict of named arrays (a model update, statistics) is packed into one contribution.

    Every party derives the same packing from public facts: the names, shapes and dtypes, a bound
    on the absolute value of every element (``value_bound``) and on a contribution's weight
    (``max_weight``). Each element ``x`` of a contribution of weight ``w`` is encrypted as
    ``x * w * f`` and the weight itself as ``w * f``, with ``f = max_norm / (sqrt(cols) *
    value_bound * max_weight)`` (``cols``: ciphertexts per contribution; ``max_norm``: the key
    set's public bound on a packed row's L2 norm), so no packed row can exceed the bound. A
    release divides the sums back: the weighted mean of every array, and the total weight. An
    element above ``value_bound`` or a weight above ``max_weight`` is refused
    (ValueRangeError), never clipped.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    value_bound: float
    max_weight: float

    @classmethod
    def of(cls, arrays: dict, *, value_bound: float, max_weight: float) -> ArraySpec:
        if not arrays:
            raise ProtocolError("an ArraySpec needs at least one array")
        if not (value_bound > 0 and max_weight > 0):
            raise ProtocolError("value_bound and max_weight must be positive")
        items = [(str(k), np.asarray(v)) for k, v in arrays.items()]
        return cls(
            tuple(k for k, _ in items),
            tuple(tuple(int(d) for d in v.shape) for _, v in items),
            tuple(v.dtype.str for _, v in items),
            float(value_bound),
            float(max_weight),
        )

    @property
    def length(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes) + 1

    def factor(self, params: he.CkksParams) -> float:
        cols = vector_shape(self.length, params)[1]
        return params.max_norm / (math.sqrt(cols) * self.value_bound * self.max_weight)

    def pack(self, arrays: dict, weight: float, params: he.CkksParams) -> np.ndarray:
        from ..errors import ValueRangeError

        if tuple(arrays) != self.names:
            raise ProtocolError(f"arrays {tuple(arrays)} do not match the spec {self.names}")
        weight = float(weight)
        if not 0 < weight <= self.max_weight:
            raise ValueRangeError(f"weight {weight} outside (0, {self.max_weight}]")
        flat = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            v = np.asarray(arrays[name], dtype=np.float64)
            if v.shape != shape:
                raise ProtocolError(f"array {name!r} has shape {v.shape}, the spec {shape}")
            if not np.all(np.isfinite(v)) or np.abs(v).max(initial=0.0) > self.value_bound:
                raise ValueRangeError(
                    f"array {name!r} holds values beyond the public bound {self.value_bound}"
                )
            flat.append(v.ravel())
        return np.concatenate([*flat, [1.0]]) * weight * self.factor(params)

    def unpack(self, released: np.ndarray, params: he.CkksParams) -> tuple[dict, float]:
        """(weighted mean of every array in its dtype, total weight) from a released sum."""
        total = np.asarray(released, dtype=np.float64) / self.factor(params)
        weight = float(total[-1])
        if not weight > 0:
            raise ProtocolError("a released sum of non-positive weight")
        out, start = {}, 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes, strict=True):
            size = int(np.prod(shape))
            out[name] = (total[start : start + size] / weight).reshape(shape).astype(dtype)
            start += size
        return out, weight
