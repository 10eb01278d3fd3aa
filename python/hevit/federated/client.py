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
from ..errors import ProtocolError
from ..he.flooding import (
    DecryptionBudget,
    coefficient_noise_norm_bound,
    flood,
    linear_noise_norm_bound,
    mlp_noise_norm_bound,
    sample_noise_norm_bound,
    sum_noise_norm_bound,
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
from .vectors import decrypt_vector, encrypt_vector

__all__ = ["HospitalClient", "fedavg_vector_length", "moments_vector_length"]


def fedavg_vector_length(model) -> int:
    """A FedAvg contribution: the count-weighted model parameters plus the count."""
    return model.size + 1


def moments_vector_length(dim: int) -> int:
    """A moments contribution: per-feature sums, sums of squares, and the row count."""
    return 2 * int(dim) + 1


#: Plans a HospitalClient keeps compiled for release bounds (the heads of the latest rounds).
PLAN_CACHE_SIZE = 4


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
        Size of the federation (sizes the distributed DP noise shares).
    decryption_budget : DecryptionBudget, optional
        Counts this hospital's flooded releases per key set (a fresh one by default); share one
        between clients that stand for the same key holder.
    dp_rng, flooding_rng : numpy Generator, optional
        Only for tests that need reproducible noise. Production leaves them ``None``: DP and
        flooding noise then come from OS entropy (noise an adversary can predict, it can subtract).
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
        decryption_budget: DecryptionBudget | None = None,
        dp_rng: np.random.Generator | None = None,
        flooding_rng: np.random.Generator | None = None,
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
        self.decryption_budget = decryption_budget or DecryptionBudget()
        self._dp_rng = dp_rng
        self._flooding_rng = flooding_rng
        #: plans compiled for release bounds, keyed by model identity (the model is kept with
        #: its plan, so an id is never reused while its entry lives); the PLAN_CACHE_SIZE most
        #: recently used
        self._plans: dict[tuple[int, str], tuple[object, object]] = {}
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
        ctx = self._keys().aggregation
        with self._phase("encrypt"):
            blob = encrypt_vector(ctx, v / self.config.count_scale).to_bytes()
        return Message(
            "statistics",
            "moments",
            round_,
            self.client_id,
            ctx.public_context().keyset_id.hex(),
            {"statistics": blob},
        ).to_bytes()

    def read_moments_aggregate(self, data: bytes, round_: int = 1) -> None:
        msg = self._check_aggregate(data, "moments", round_)
        d = self.raw.shape[1]
        total = (
            self._release_sum(
                msg,
                moments_vector_length(d),
                int(msg.meta.get("contributors", 0)),
                self._keys().aggregation,
                resolution=lambda exact: 1e-6 * abs(exact[-1]),
            )
            * self.config.count_scale
        )
        n = total[-1]
        if not n > 1:
            raise ProtocolError(f"moments aggregate carries a row count of {n}")
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
            delta.shape, dp.noise_multiplier * dp.clip_norm, self.clients, self._dp_rng
        )
        return np.concatenate([delta, [1.0]]) * scale

    def update_message(self, strategy: str, head: LinearHead, round_: int) -> bytes:
        v = self.fedavg_contribution(head, round_)
        if strategy == "plain-fedavg":
            return Message("update", strategy, round_, self.client_id, "", {"update": v}).to_bytes()
        if strategy != "he-fedavg":
            raise ProtocolError(f"update_message serves the FedAvg strategies, not {strategy!r}")
        ctx = self._keys().updates
        with self._phase("encrypt"):
            blob = encrypt_vector(ctx, v).to_bytes()
        return Message(
            "update",
            strategy,
            round_,
            self.client_id,
            ctx.public_context().keyset_id.hex(),
            {"update": blob},
        ).to_bytes()

    def read_fedavg_aggregate(self, data: bytes, strategy: str, head, round_: int):
        """The new global model from the server's aggregate message (decrypted and flooded for HE);
        ``head`` is this client's current copy (its shape, and the base of DP deltas)."""
        msg = self._check_aggregate(data, strategy, round_)
        length = fedavg_vector_length(head)
        if strategy == "plain-fedavg":
            total = np.asarray(msg.blobs["sum"], dtype=np.float64)
            if total.shape != (length,):
                raise ProtocolError(f"aggregate has shape {total.shape}, expected ({length},)")
        else:
            # the averaged parameters are the released sums divided by the (released) weight:
            # flooding must stay below 1e-4 of one unit of that weight (1e-4 on each parameter)
            total = self._release_sum(
                msg,
                length,
                int(msg.meta.get("contributors", 0)),
                self._keys().updates,
                resolution=lambda exact: 1e-4 * abs(exact[-1]),
            )
        total = total * self.config.count_scale
        weight = total[-1]
        if self.config.dp is None:
            if not weight > 0:
                raise ProtocolError(f"aggregate carries a non-positive sample count {weight}")
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
                self.clients,
                self._dp_rng,
            )
        return stats / self.config.count_scale

    def statistics_message(self, round_: int = 1) -> bytes:
        ctx = self._keys().aggregation
        stats = self.statistics_vector()
        with self._phase("encrypt"):
            blob = encrypt_vector(ctx, stats).to_bytes()
        return Message(
            "statistics",
            "he-ridge",
            round_,
            self.client_id,
            ctx.public_context().keyset_id.hex(),
            {"statistics": blob},
        ).to_bytes()

    def read_ridge_aggregate(self, data: bytes, round_: int = 1) -> LinearHead:
        msg = self._check_aggregate(data, "he-ridge", round_)
        length = ridge_statistics_length(self.dim, self.classes)
        # the Gram matrix of unit rows: entries must stay resolved far below one row's contribution
        total = (
            self._release_sum(
                msg,
                length,
                int(msg.meta.get("contributors", 0)),
                self._keys().aggregation,
                resolution=lambda exact: 1e-4 / self.config.count_scale,
            )
            * self.config.count_scale
        )
        return solve_ridge(total, self.dim, self.classes, alpha=self.config.ridge_alpha)

    # ------------------------------------------------------------------ he-cls
    def inference_request(self, features, round_: int = 0, *, model=None) -> bytes:
        """Encrypted rows for ``he-cls``: the preprocessed features, or for token sequences the
        normalised [CLS] rows ``model`` (a ViTTail, run here in plaintext) feeds its head. A
        two-layer ``model`` is served under the ``mlp_inference`` key set."""
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
        return Message(
            "infer-request",
            "he-cls",
            round_,
            self.client_id,
            ctx.public_context().keyset_id.hex(),
            {"features": blob},
        ).to_bytes()

    def read_logits(self, data: bytes, round_: int = 0, *, model=None) -> np.ndarray:
        """Exact logits for this hospital's own use: they must not leave it (see :meth:`release_logits`)."""
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

    def release_logits(
        self, data: bytes, model, round_: int = 0, *, max_sigma: float = 1e-3
    ) -> np.ndarray:
        """Logits of ``model`` (the head the server evaluated) flooded for release to another
        party (e.g. a server collecting predictions).

        The flooding is sized from a noise bound derived for the reply's plan kind, each checked
        against measured noise in the tests: batch-layout linear plans
        (:func:`~hevit.he.flooding.linear_noise_norm_bound`), coefficient-layout plans with
        their compact reply (:func:`~hevit.he.flooding.coefficient_noise_norm_bound`),
        sample-layout plans with their key switches
        (:func:`~hevit.he.flooding.sample_noise_norm_bound`) and the two-layer head
        (:func:`~hevit.he.flooding.mlp_noise_norm_bound`, from public bounds only). Plans whose
        structure the bound needs are compiled here from ``model`` (public work). Raises
        ParameterError when the parameters leave too little precision for the flooding the
        policy demands (use the ``release`` preset with the batch layout for linear heads).
        """
        ctx = self._inference_keys(model)
        reply = self._load_reply(data, round_, ctx)
        layout = "coefficient" if isinstance(reply, he.CompactBatch) else reply.layout
        with self._phase("decrypt"):
            logits = ctx.decrypt(reply)
        rows, params = len(logits), ctx.params
        if getattr(model, "kind", "linear") == "mlp":
            plan = self._structure_plan(model, ctx, layout)
            bound = mlp_noise_norm_bound(params, model.w1, model.w2, rows, plan)
        elif layout == "batch":
            bound = linear_noise_norm_bound(params, model.weights, rows)
        elif layout == "coefficient":
            bound = coefficient_noise_norm_bound(params, model.weights, rows)
        else:
            plan = self._structure_plan(model, ctx, layout)
            bound = sample_noise_norm_bound(params, model.weights, rows, plan)
        return self._flood(ctx, logits, bound, max_sigma)

    # ------------------------------------------------------------------ helpers
    def _structure_plan(self, model, ctx: he.SecretContext, layout: str):
        """The plan the server compiled for ``model`` (its rotation schedule, scales and public
        bounds size the noise bound), compiled once per model and layout, not per release."""
        key = (id(model), layout)
        cached = self._plans.pop(key, None)
        if cached is None or cached[0] is not model:
            cached = (model, model.compile_plan(ctx.public_context(), layout=layout))
        self._plans[key] = cached  # most recent last
        while len(self._plans) > PLAN_CACHE_SIZE:
            # a client sees a new head every round: keep only the latest few alive
            self._plans.pop(next(iter(self._plans)))
        return cached[1]

    def _inference_keys(self, model) -> he.SecretContext:
        return inference_keys_for(self._keys(), model)

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

    def _release_sum(
        self, msg: Message, length: int, contributors: int, ctx: he.SecretContext, *, resolution
    ) -> np.ndarray:
        """Decrypts an aggregate and floods it for release. ``resolution(exact)`` is the largest
        flooding std the task tolerates (computed from the exact values, which never leave)."""
        if msg.keyset_id != ctx.public_context().keyset_id.hex():
            raise ProtocolError("aggregate was made under another key set")
        if contributors < 1:
            raise ProtocolError("aggregate does not say how many contributions it sums")
        with self._phase("decrypt"):
            batch = he.EncryptedBatch.from_bytes(msg.blobs["sum"], ctx.public_context())
            exact = decrypt_vector(ctx, batch, length)
            bound = sum_noise_norm_bound(ctx.params, length, contributors)
            return self._flood(ctx, exact, bound, resolution(exact))

    def _flood(
        self, ctx: he.SecretContext, exact: np.ndarray, bound: float, max_sigma: float
    ) -> np.ndarray:
        """The one way a decryption leaves this hospital: counted against the key set's budget
        (the flooding bound covers ``max_decryptions`` releases), then flooded."""
        policy = self.config.flooding
        self.decryption_budget.spend(ctx.public_context().keyset_id, policy)
        return flood(exact, bound, policy, max_sigma=max_sigma, rng=self._flooding_rng)


def _stable_id(client_id: str) -> int:
    """A seed component from the client id that does not depend on Python's hash salt."""
    return int.from_bytes(hashlib.blake2b(client_id.encode(), digest_size=8).digest(), "little")
