"""A hospital: its features stay here; it encrypts what it sends and decrypts what it receives.

Every method maps received bytes (or nothing) to bytes to send, so the same client runs in
process (``hevit.federated.simulation``) and under Flower (``hevit.federated.flower``).
Decryptions that leave the hospital (the aggregate becomes the published global model; logits
reported on) pass through noise flooding; exact decryptions stay inside this object.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

from .. import he
from ..errors import ProtocolError, SerializationError, VerificationError
from ..protocol import (
    CommitStatement,
    ContributionStatement,
    KeyHolder,
    RoundLabel,
)
from .config import FederatedConfig, inference_layout_for
from .keys import FederationKeys, KeyFolder, inference_keys_for
from .messages import Message
from .models import (
    LinearHead,
    normalize_rows,
    ridge_statistics,
    ridge_statistics_length,
    solve_ridge,
)
from .privacy import RIDGE_RECORD_SENSITIVITY, clip_to_norm, noise_share

__all__ = [
    "HospitalClient",
    "commitment_from_bytes",
    "contribution_parts",
    "fedavg_vector_length",
    "moments_vector_length",
    "task_name",
]


def fedavg_vector_length(model) -> int:
    """A FedAvg contribution: the count-weighted model parameters plus the count."""
    return model.size + 1


def moments_vector_length(dim: int) -> int:
    """A moments contribution: per-feature sums, sums of squares, and the row count."""
    return 2 * int(dim) + 1


def task_name(strategy: str, head_kind: str = "linear") -> str:
    """The task a round belongs to, as contributions sign it: ``moments``, ``he-ridge`` or
    ``<strategy>/<head>`` for the FedAvg strategies (one task per trained model)."""
    return strategy if strategy in ("moments", "he-ridge") else f"{strategy}/{head_kind}"


#: Which shared key set a task's vectors are encrypted under.
_KEYSET_OF = {"moments": "aggregation", "he-ridge": "aggregation", "he-fedavg": "updates"}


def contribution_parts(msg: Message, blob: str):
    """The (ciphertext, statement, signature) of a contribution message (SerializationError or
    VerificationError when malformed)."""
    try:
        statement = ContributionStatement.from_meta(msg.meta["statement"])
        signature = bytes.fromhex(msg.meta["signature"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SerializationError):
            raise
        raise VerificationError(f"a contribution without a valid signed statement: {exc}") from None
    data = msg.blobs.get(blob)
    if not isinstance(data, bytes):
        raise VerificationError(f"a contribution without its {blob!r} ciphertext")
    return data, statement, signature


def commitment_from_bytes(data: bytes) -> tuple[CommitStatement, bytes]:
    """A hospital's commitment message: (statement, signature)."""
    msg = Message.from_bytes(data)
    try:
        if msg.kind != "commit":
            raise ValueError(f"a {msg.kind} message")
        statement = CommitStatement.from_meta(msg.meta["statement"])
        if statement.signer != msg.sender:
            raise ValueError("signed by another hospital than its sender")
        return statement, bytes.fromhex(msg.meta["signature"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SerializationError):
            raise
        raise VerificationError(f"malformed commitment: {exc}") from None


class HospitalClient:
    """One hospital's side of every strategy.

    Parameters
    ----------
    client_id : str
    features, labels : its training rows and labels: (rows, dim) [CLS] features (standardised with
        the federation's moments once known, then L2-normalised) or, to train the last ViT blocks
        too, (rows, tokens, dim) token sequences from :func:`hevit.federated.tail.prefix_tokens`.
    classes : int
    keys : FederationKeys, KeyFolder or None
        The shared secret contexts (``None`` restricts the client to ``plain-fedavg``; a
        ``KeyFolder`` loads each key set on first use).
    config : FederatedConfig
    clients : int
        Size of the federation.
    keyholder : KeyHolder, optional
        This hospital's identity, roster, flooding policy and release ledger over ``keys``: every
        encrypted contribution is signed by it and every aggregate is verified, committed to and
        released by it (required for the HE strategies).
    dp_rng : numpy Generator, optional
        Only for tests that need reproducible DP noise. Production leaves it ``None`` (OS
        entropy: noise an adversary can predict, it can subtract).
    """

    def __init__(
        self,
        client_id: str,
        features,
        labels,
        *,
        classes: int,
        keys: FederationKeys | KeyFolder | None,
        config: FederatedConfig,
        clients: int,
        keyholder: KeyHolder | None = None,
        dp_rng: np.random.Generator | None = None,
    ) -> None:
        self.client_id = str(client_id)
        self.raw = np.asarray(features, dtype=np.float32 if np.ndim(features) == 3 else np.float64)
        if self.raw.ndim not in (2, 3):
            raise ValueError(
                f"client {client_id}: features must be 2-D rows or 3-D token sequences"
            )
        #: federation-wide feature mean and std (set by :meth:`read_moments_aggregate`)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.x = self.preprocess(self.raw)
        self.y = np.asarray(labels, dtype=np.int64)
        if len(self.x) != len(self.y) or len(self.x) == 0:
            raise ValueError(
                f"client {client_id}: {len(self.x)} feature rows and {len(self.y)} labels"
            )
        self.classes = int(classes)
        self.dim = self.x.shape[-1]
        self.keys = keys
        self.config = config
        self.clients = int(clients)
        self.keyholder = keyholder
        if keyholder is not None and keyholder.hospital_id != self.client_id:
            raise ProtocolError(
                f"client {client_id} was given the key holder of {keyholder.hospital_id}"
            )
        self._dp_rng = dp_rng
        #: the session the server runs (bound into every signature; set by the driver)
        self.session = "session"
        #: digest of every aggregate this hospital verified, per task and round
        self.digests: dict[str, dict[int, bytes]] = defaultdict(dict)
        #: this hospital's signed commitment to each verified aggregate (label key -> bytes)
        self.commitments: dict[str, bytes] = {}
        #: rounds (label keys) this hospital contributed to
        self.contributed: set[str] = set()
        #: he-cls key sets of the open sessions (made per session, discarded after it)
        self._session_keys: dict[str, he.SecretContext] = {}
        #: sessions whose public key set went to the server with a request already
        self._context_sent: set[str] = set()
        #: wall time spent here per phase ("train", "encrypt", "decrypt")
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def _phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    @property
    def noise_shares(self) -> int:
        """How many DP noise shares a released aggregate is guaranteed to hold: the roster's
        quorum, the fewest contributors a key holder accepts (the run's own quorum without a
        key holder), so every released aggregate carries at least the nominal noise and epsilon
        from the nominal multiplier is an upper bound."""
        if self.keyholder is not None:
            return self.keyholder.roster.quorum
        return self.config.quorum or self.clients

    @property
    def has_token_sequences(self) -> bool:
        """True when this client holds (rows, tokens, dim) token sequences (it trains a ViT tail)."""
        return self.raw.ndim == 3

    def preprocess(self, features) -> np.ndarray:
        """Standardise with the federation's moments (once known), then L2-normalise each row.
        Token sequences pass unchanged (the tail normalises its own [CLS] output)."""
        if np.ndim(features) == 3:
            return np.asarray(features, dtype=np.float32)
        x = np.asarray(features, dtype=np.float64)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return normalize_rows(x)

    # ------------------------------------------------------------------ feature moments
    def moments_message(self, round_: int = 1) -> bytes:
        """Encrypted per-feature sums and sums of squares, and the row count (for standardising
        features with federation-wide statistics)."""
        if self.has_token_sequences:
            raise ProtocolError("feature moments apply to [CLS] rows, not to token sequences")
        v = np.concatenate([self.raw.sum(axis=0), (self.raw**2).sum(axis=0), [len(self.raw)]])
        return self._contribution("statistics", "moments", round_, v / self.config.count_scale)

    def read_moments_aggregate(self, data: bytes, round_: int = 1) -> None:
        d = self.raw.shape[1]
        total = (
            self._release(
                data,
                "moments",
                round_,
                moments_vector_length(d),
                max_sigma=lambda released: 1e-6 * abs(released[-1]),
            )
            * self.config.count_scale
        )
        n = total[-1]
        if not n > 1:
            # no value derived from the release in the message: it may reach the server
            raise ProtocolError("the moments aggregate carries a row count of at most 1")
        mean = total[:d] / n
        var = np.maximum(total[d : 2 * d] / n - mean**2, 0.0)
        self.adopt_moments(mean, np.sqrt(var) + 1e-6)

    def adopt_moments(self, mean, std) -> None:
        """Uses the federation's released feature moments from now on."""
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if mean.shape != (self.dim,) or std.shape != (self.dim,) or not np.all(std > 0):
            raise ValueError(f"moments must be two ({self.dim},) vectors with positive std")
        self.mean, self.std = mean, std
        self.x = self.preprocess(self.raw)

    # ------------------------------------------------------------------ FedAvg (plain and HE)
    def local_train(self, head, round_: int):
        """Trains a copy of the global model (a LinearHead or a ViTTail) on this client's rows."""
        rng = np.random.default_rng([self.config.seed, round_, _stable_id(self.client_id)])
        return head.fit(
            self.x,
            self.y,
            epochs=self.config.local_epochs,
            learning_rate=self.config.step_size,
            batch_size=self.config.batch_size,
            weight_decay=self.config.weight_decay,
            rng=rng,
        )

    def fedavg_contribution(self, head: LinearHead, round_: int) -> np.ndarray:
        """The vector this client adds to the sum: count-weighted parameters and the count, or
        (with DP) the clipped delta plus a noise share and a 1."""
        with self._phase("train"):
            local = self.local_train(head, round_)
        scale = 1.0 / self.config.count_scale
        if self.config.dp is None:
            n = len(self.x)
            return np.concatenate([n * local.to_vector(), [n]]) * scale
        dp = self.config.dp
        delta = clip_to_norm(local.to_vector() - head.to_vector(), dp.clip_norm)
        delta = delta + noise_share(
            delta.shape, dp.noise_multiplier * dp.clip_norm, self.noise_shares, self._dp_rng
        )
        return np.concatenate([delta, [1.0]]) * scale

    def update_message(self, strategy: str, head: LinearHead, round_: int) -> bytes:
        v = self.fedavg_contribution(head, round_)
        if strategy == "plain-fedavg":
            return Message("update", strategy, round_, self.client_id, "", {"update": v}).to_bytes()
        if strategy != "he-fedavg":
            raise ProtocolError(f"update_message serves the FedAvg strategies, not {strategy!r}")
        return self._contribution(
            "update", strategy, round_, v, task=task_name(strategy, getattr(head, "kind", "linear"))
        )

    def read_fedavg_aggregate(self, data: bytes, strategy: str, head, round_: int):
        """The new global model from the server's aggregate message (decrypted and flooded for HE);
        ``head`` is this client's current copy (its shape, and the base of DP deltas)."""
        length = fedavg_vector_length(head)
        if strategy == "plain-fedavg":
            msg = self._check_aggregate(data, strategy, round_)
            total = np.asarray(msg.blobs["sum"], dtype=np.float64)
            if total.shape != (length,):
                raise ProtocolError(f"aggregate has shape {total.shape}, expected ({length},)")
        else:
            # the averaged parameters are the released sums divided by the (released) weight:
            # flooding must stay below 1e-4 of one unit of that weight (1e-4 on each parameter)
            total = self._release(
                data,
                strategy,
                round_,
                length,
                task=task_name(strategy, getattr(head, "kind", "linear")),
                max_sigma=lambda released: 1e-4 * abs(released[-1]),
            )
        total = total * self.config.count_scale
        weight = total[-1]
        if self.config.dp is None:
            if not weight > 0:
                raise ProtocolError("the aggregate carries a non-positive sample count")
            return head.with_vector(total[:-1] / weight)
        contributors = max(round(weight), 1)
        return head.with_vector(head.to_vector() + total[:-1] / contributors)

    # ------------------------------------------------------------------ he-ridge
    def statistics_vector(self) -> np.ndarray:
        if self.has_token_sequences:
            raise ProtocolError(
                "he-ridge solves a head on [CLS] rows; give this client rows, not token sequences"
            )
        with self._phase("train"):
            stats = ridge_statistics(self.x, self.y, self.classes)
        if self.config.dp is not None:
            dp = self.config.dp
            stats = stats + noise_share(
                stats.shape,
                dp.noise_multiplier * RIDGE_RECORD_SENSITIVITY,
                self.noise_shares,
                self._dp_rng,
            )
        return stats / self.config.count_scale

    def statistics_message(self, round_: int = 1) -> bytes:
        return self._contribution("statistics", "he-ridge", round_, self.statistics_vector())

    def read_ridge_aggregate(self, data: bytes, round_: int = 1) -> LinearHead:
        length = ridge_statistics_length(self.dim, self.classes)
        # the Gram matrix of unit rows: entries must stay resolved far below one row's contribution
        total = (
            self._release(
                data,
                "he-ridge",
                round_,
                length,
                max_sigma=lambda released: 1e-4 / self.config.count_scale,
            )
            * self.config.count_scale
        )
        return solve_ridge(total, self.dim, self.classes, alpha=self.config.ridge_alpha)

    # ------------------------------------------------------------------ he-cls
    def inference_request(self, features, round_: int = 0, *, model=None) -> bytes:
        """Encrypted rows for ``he-cls``: the preprocessed features, or for token sequences the
        normalised [CLS] rows ``model`` (a ViTTail, run here in plaintext) feeds its head.

        The rows are encrypted under a key set made for this he-cls session (the parameters and
        evaluation keys of the federation's ``inference`` set, or ``mlp_inference`` for a
        two-layer ``model``), whose public context travels with the request. This hospital
        decrypts the server's replies exactly, for its own use; a key set that is discarded after
        the session (:meth:`end_inference`) cannot be read from them."""
        ctx = self._inference_keys(model)
        rows = self.preprocess(features)
        if rows.ndim == 3:
            if model is None:
                raise ValueError(
                    "token sequences need the trained ViTTail to compute the [CLS] rows"
                )
            rows = model.head_features(rows)
        layout = inference_layout_for(
            getattr(model, "kind", "linear"),
            len(rows),
            self.config.inference_layout,
            ctx.params.poly_modulus_degree,
        )
        with self._phase("encrypt"):
            blob = ctx.encrypt(rows, layout=layout).to_bytes()
        blobs = {"features": blob}
        name = self._session_key_name(model)
        if name not in self._context_sent:
            # the session's key set travels once, with its first request
            blobs["context"] = ctx.public_context().to_bytes()
            self._context_sent.add(name)
        return Message(
            "infer-request",
            "he-cls",
            round_,
            self.client_id,
            ctx.public_context().keyset_id.hex(),
            blobs,
        ).to_bytes()

    def end_inference(self, model=None) -> None:
        """Discards this session's he-cls key set (its replies can no longer be decrypted)."""
        self._session_keys.pop(self._session_key_name(model), None)
        self._context_sent.discard(self._session_key_name(model))

    def _session_key_name(self, model) -> str:
        return f"{self.session}/he-cls/{getattr(model, 'kind', 'linear')}"

    def read_logits(self, data: bytes, round_: int = 0, *, model=None) -> np.ndarray:
        """Exact logits for this hospital's own use: they never leave it (only counts derived
        from them are reported, once per request, see the report of ``he-cls``)."""
        ctx = self._inference_keys(model)
        reply = self._load_reply(data, round_, ctx)
        with self._phase("decrypt"):
            return ctx.decrypt(reply)

    def _load_reply(
        self, data: bytes, round_: int, ctx: he.SecretContext
    ) -> he.EncryptedBatch | he.CompactBatch:
        """The logits of an infer-reply (a CompactBatch for the coefficient layout)."""
        msg = Message.from_bytes(data)
        if (
            msg.kind != "infer-reply"
            or msg.round != round_
            or msg.keyset_id != ctx.public_context().keyset_id.hex()
        ):
            raise ProtocolError(f"expected an infer-reply for round {round_} under this key set")
        loader = he.CompactBatch if msg.meta.get("compact") else he.EncryptedBatch
        with self._phase("decrypt"):
            return loader.from_bytes(msg.blobs["logits"], ctx.public_context())

    # ------------------------------------------------------------------ helpers
    def _inference_keys(self, model) -> he.SecretContext:
        """This he-cls session's key set, made on first use like the federation's template."""
        name = self._session_key_name(model)
        if name not in self._session_keys:
            template = inference_keys_for(self._keys(), model).public_context()
            self._session_keys[name] = he.SecretContext.generate(
                template.params,
                rotation_steps=template.rotation_steps,
                conjugation=template.conjugation,
                relinearization=template.relinearization,
            )
        return self._session_keys[name]

    def _keys(self) -> FederationKeys | KeyFolder:
        if self.keys is None:
            raise ProtocolError(
                f"client {self.client_id} has no key set: only plain-fedavg can run without one"
            )
        return self.keys

    def _check_aggregate(self, data: bytes, strategy: str, round_: int) -> Message:
        msg = Message.from_bytes(data)
        if (
            msg.kind != "aggregate"
            or msg.strategy != strategy
            or msg.round != round_
            or msg.sender != "server"
        ):
            raise ProtocolError(
                f"expected the server's {strategy} aggregate of round {round_}, got {msg.kind} / {msg.strategy} / "
                f"round {msg.round} from {msg.sender!r}"
            )
        return msg

    # ------------------------------------------------------------------ the protocol core
    def label(self, task: str, round_: int) -> RoundLabel:
        strategy = task.split("/", 1)[0]
        return RoundLabel(self.session, task, int(round_), _KEYSET_OF[strategy])

    def _keyholder(self) -> KeyHolder:
        if self.keyholder is None:
            raise ProtocolError(
                f"client {self.client_id} has no key holder: only plain-fedavg can run without one"
            )
        return self.keyholder

    def _parent(self, task: str, round_: int) -> bytes:
        """The aggregate a contribution of ``round_`` was computed from: the task's previous
        round (every contributor must have read the same one)."""
        return self.digests[task].get(round_ - 1, b"")

    def _contribution(
        self, kind: str, strategy: str, round_: int, vector, *, task: str | None = None
    ) -> bytes:
        """One signed, encrypted contribution message (see KeyHolder.contribute)."""
        task = task or task_name(strategy)
        label = self.label(task, round_)
        keyholder = self._keyholder()
        with self._phase("encrypt"):
            blob, statement, signature = keyholder.contribute(
                vector, label, parent=self._parent(task, round_)
            )
        self.contributed.add(label.key)
        return Message(
            kind,
            strategy,
            round_,
            self.client_id,
            statement.keyset_id.hex(),
            {_BLOB_OF_KIND[kind]: blob},
            {"statement": statement.to_meta(), "signature": signature.hex()},
        ).to_bytes()

    def _release(
        self,
        data: bytes,
        strategy: str,
        round_: int,
        length: int,
        *,
        task: str | None = None,
        max_sigma,
    ) -> np.ndarray:
        """Verifies the server's aggregate (signatures, quorum, own contribution, seeds, parent;
        refused before any decryption otherwise), commits to it and returns its flooded
        release, identical at every hospital."""
        task = task or task_name(strategy)
        msg = self._check_aggregate(data, strategy, round_)
        label = self.label(task, round_)
        keyholder = self._keyholder()
        if msg.keyset_id != keyholder.context(label.keyset).public_context().keyset_id.hex():
            raise VerificationError("aggregate was made under another key set")
        try:
            entries = msg.meta["statements"]
            signatures = [bytes.fromhex(h) for h in msg.meta["signatures"]]
            if not isinstance(entries, list):
                raise TypeError("statements must be a list")
            statements = [ContributionStatement.from_meta(m) for m in entries]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SerializationError):
                raise
            raise VerificationError(f"an aggregate without its signed statements: {exc}") from None
        blob = msg.blobs.get("sum")
        if not isinstance(blob, bytes):
            raise VerificationError("an aggregate without its summed ciphertext")
        with self._phase("decrypt"):
            verified = keyholder.verify(
                blob,
                statements,
                signatures,
                label,
                length=length,
                parent=self._parent(task, round_),
                require_own=label.key in self.contributed,
            )
            values = keyholder.release(verified, max_sigma=max_sigma)
        self.digests[task][round_] = verified.digest
        statement, signature = keyholder.commitment(verified)
        self.commitments[label.key] = Message(
            "commit",
            task,
            round_,
            self.client_id,
            msg.keyset_id,
            {},
            {
                "statement": statement.to_meta(),
                "signature": signature.hex(),
            },
        ).to_bytes()
        return values

    def commitment(self, task: str, round_: int) -> bytes:
        """This hospital's signed commitment to the aggregate it verified for that round."""
        key = self.label(task, round_).key
        if key not in self.commitments:
            raise ProtocolError(f"{self.client_id} verified no aggregate for {key}")
        return self.commitments[key]

    def certify(self, task: str, round_: int, commitments) -> None:
        """Checks the commitments the server collected: at least a quorum of hospitals hold
        the aggregate this one holds; only then are values derived from it reported."""
        parsed = [commitment_from_bytes(c) for c in commitments]
        self._keyholder().certify(self.label(task, round_), parsed)

    def require_certified(self, task: str, round_: int) -> None:
        self._keyholder().require_certified(self.label(task, round_))


_BLOB_OF_KIND = {"update": "update", "statistics": "statistics"}


def _stable_id(client_id: str) -> int:
    """A seed component from the client id that does not depend on Python's hash salt."""
    return int.from_bytes(hashlib.blake2b(client_id.encode(), digest_size=8).digest(), "little")
