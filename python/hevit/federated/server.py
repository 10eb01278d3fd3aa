"""The server: aggregates and infers on ciphertexts, holds public contexts only.

:class:`AggregationServer` runs the rounds of one strategy. It validates every incoming message
before anything is folded into the round's sum (sender registered, round current and not yet
answered by that sender, strategy and kind right, same key set, bytes well-formed, shape as
expected); a rejected message is logged with its reason and recorded, never aggregated. After
each round it writes its state atomically (temporary file, fsync, rename) when given a
checkpoint path, and :meth:`AggregationServer.resume` continues from the last completed round.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import he
from .._files import atomic_write
from ..errors import (
    HevitError,
    ProtocolError,
    QuorumError,
    SecretKeyRefusedError,
    SerializationError,
)
from ..protocol import Roster, refuse_identity
from .client import contribution_parts
from .messages import Message
from .vectors import vector_shape

__all__ = ["AggregationServer", "InferenceServer", "Rejection"]


log = logging.getLogger(__name__)

#: Default number of recent rejections and received-message kinds a server keeps for its audit.
AUDIT_LIMIT = 10_000

_KIND_OF = {
    "plain-fedavg": "update",
    "he-fedavg": "update",
    "he-ridge": "statistics",
    "moments": "statistics",
}
_BLOB_OF = {"update": "update", "statistics": "statistics"}


@dataclass
class Rejection:
    round: int
    sender: str
    reason: str


@dataclass
class RoundState:
    round: int
    contributors: list[str]
    dropped: list[str]
    aggregate: bytes
    seconds: float
    #: bytes of each accepted contribution (upload) this round
    bytes_up: dict[str, int] = field(default_factory=dict)


def _expected_batch(context: he.PublicContext, length: int) -> he.BatchHeader:
    """The header of an honest contribution: a fresh (one-seed) batch-layout encryption of a
    ``length``-vector at the data level, the context's scale and its norm bound."""
    params = context.params
    rows, cols = vector_shape(length, params)
    return he.BatchHeader(
        layout="batch",
        seed_count=1,
        prime_count=len(params.coeff_modulus_bits) - params.supports_rotations,
        rows=rows,
        cols=cols,
        period=0,
        scale=2.0**params.scale_bits,
        norm_bound=params.max_norm,
        ciphertext_count=cols * -(-rows // params.poly_modulus_degree),
    )


def _public_only(context) -> he.PublicContext | None:
    if isinstance(context, he.SecretContext):
        raise SecretKeyRefusedError(
            "server-side objects take a PublicContext; a SecretContext was given"
        )
    if context is not None and not isinstance(context, he.PublicContext):
        raise TypeError(f"context must be a PublicContext, got {type(context).__name__}")
    return context


class AggregationServer:
    """Sums client contributions round by round for one strategy.

    Parameters
    ----------
    strategy : ``plain-fedavg``, ``he-fedavg``, ``he-ridge`` or ``moments`` (encrypted feature
        moments for standardisation, one round)
    context : PublicContext or None
        Required for the HE strategies; ``None`` for ``plain-fedavg``.
    clients : ids of the registered clients
    quorum : fewest contributions a round needs (``None``: all registered clients)
    expected_length : length of every contribution vector. The server derives everything a valid
        contribution looks like from it before any round opens (plaintext: a float64 vector of
        this length; HE: a fresh one-seed batch-layout encryption of that vector's packed shape at
        the context's level, scale and norm bound) and checks the cheap header fields before it
        loads anything, so no contribution can fix the round's shape or stall it.
    roster : the federation's Roster (public keys of the registered hospitals). Every HE
        contribution must carry a signed statement that agrees with the message (contributor,
        round, session, key set, shape, seeds); with a roster its signature is verified too
        before the contribution is kept (without one, only the key holders check signatures:
        they always do). The aggregate lists every kept statement for the key holders.
    session : the session id every contribution of this server's rounds must sign
    checkpoint : path of the state file written after every round, or ``None``
    audit_limit : most recent entries kept in ``rejections`` and ``received_kinds`` (a client
        flooding the server with junk must not grow its memory; ``rejected_total`` and
        ``received_total`` count everything)
    """

    def __init__(
        self,
        strategy: str,
        context: he.PublicContext | None,
        *,
        clients,
        quorum: int | None = None,
        expected_length: int,
        roster: Roster | None = None,
        session: str = "session",
        checkpoint=None,
        audit_limit: int = AUDIT_LIMIT,
    ) -> None:
        refuse_identity(roster, "AggregationServer")
        if strategy not in _KIND_OF:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {sorted(_KIND_OF)}")
        self.strategy = strategy
        self.context = _public_only(context)
        if strategy != "plain-fedavg" and self.context is None:
            raise ValueError(f"{strategy} needs the federation's PublicContext")
        self.clients = tuple(str(c) for c in clients)
        if len(set(self.clients)) != len(self.clients) or not self.clients:
            raise ValueError("client ids must be unique and non-empty")
        if roster is not None:
            if not isinstance(roster, Roster):
                raise TypeError(f"roster must be a Roster, got {type(roster).__name__}")
            unknown = set(self.clients) - set(roster.hospitals)
            if unknown:
                raise ValueError(f"clients {sorted(unknown)} are not in the roster")
        self.roster = roster
        self.session = str(session)
        self.quorum = len(self.clients) if quorum is None else int(quorum)
        if not 1 <= self.quorum <= len(self.clients):
            raise ValueError(f"quorum {self.quorum} must be between 1 and {len(self.clients)}")
        self.expected_length = int(expected_length)
        if self.expected_length < 1:
            raise ValueError(f"expected_length must be >= 1, got {expected_length}")
        self._expected_batch = (
            None if self.context is None else _expected_batch(self.context, self.expected_length)
        )
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.completed: list[RoundState] = []
        if int(audit_limit) < 1:
            raise ValueError(f"audit_limit must be >= 1, got {audit_limit}")
        self.audit_limit = int(audit_limit)
        #: the most recent rejections (``rejected_total`` counts all of them)
        self.rejections: deque[Rejection] = deque(maxlen=self.audit_limit)
        self.rejected_total = 0
        self.bytes_received: dict[str, int] = {c: 0 for c in self.clients}
        #: (kind, sender, blob types) of the most recent messages that parsed, accepted or not:
        #: the audit of what the server saw, from the one parse receive does
        #: (``received_total`` counts all of them)
        self.received_kinds: deque[tuple[str, str, tuple[str, ...]]] = deque(
            maxlen=self.audit_limit
        )
        self.received_total = 0
        self._round = 0
        self._accepted: dict[str, he.EncryptedBatch | np.ndarray] = {}
        #: each accepted contribution's signed statement (meta) and signature (hex)
        self._statements: dict[str, tuple[dict, str]] = {}
        self._sizes: dict[str, int] = {}
        self._opened = 0.0

    # ------------------------------------------------------------------ rounds
    @property
    def round(self) -> int:
        """The open round (0 before the first :meth:`open_round`)."""
        return self._round

    @property
    def last_completed_round(self) -> int:
        return self.completed[-1].round if self.completed else 0

    def open_round(self) -> int:
        if self._accepted:
            raise ProtocolError(f"round {self._round} still has unaggregated contributions")
        self._round = self.last_completed_round + 1
        self._opened = time.perf_counter()
        return self._round

    def receive(self, data: bytes, *, expected_sender: str | None = None) -> bool:
        """Validates one client message and keeps it for this round's sum.

        ``expected_sender``: the client id the transport authenticated this message as coming
        from (Flower: the id the sending node described itself as); a message claiming another
        id is rejected. Returns False (and logs and records why) for anything that must not be
        aggregated.
        """
        sender = "?"
        try:
            if self._round == 0:
                raise ProtocolError("no round is open")
            msg = Message.from_bytes(data)
            sender = msg.sender
            self.received_total += 1
            self.received_kinds.append(
                (
                    msg.kind,
                    msg.sender,
                    tuple(
                        sorted(
                            "ciphertext" if isinstance(b, bytes) else "float64"
                            for b in msg.blobs.values()
                        )
                    ),
                )
            )
            if expected_sender is not None and msg.sender != expected_sender:
                raise ProtocolError(
                    f"a message claiming to be from {msg.sender!r} arrived from {expected_sender!r}"
                )
            self._validate_header(msg)
            contribution = self._load(msg)
            if self.strategy != "plain-fedavg":
                self._statements[msg.sender] = self._check_statement(msg, contribution)
        except (HevitError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("round %d: rejected a message from %r: %s", self._round, sender, reason)
            self._reject(Rejection(self._round, sender, reason))
            return False
        self._accepted[msg.sender] = contribution
        self._sizes[msg.sender] = len(data)
        self.bytes_received[msg.sender] += len(data)
        return True

    def _reject(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)
        self.rejected_total += 1

    def reject(self, sender: str, reason: str) -> None:
        """Records a contribution the transport already found malformed (it never reached
        :meth:`receive`), so the audit lists it with the rest."""
        log.warning("round %d: rejected a message from %r: %s", self._round, sender, reason)
        self._reject(Rejection(self._round, str(sender), reason))

    def close_round(self) -> bytes:
        """Sums the accepted contributions and returns the aggregate message for the clients.

        Clients that sent nothing valid are recorded as dropped. Fewer contributions than the
        quorum raise :class:`QuorumError` (the round stays open: nothing is published).
        """
        if self._round == 0:
            raise ProtocolError("no round is open")
        contributors = sorted(self._accepted)
        dropped = [c for c in self.clients if c not in self._accepted]
        if len(contributors) < self.quorum:
            raise QuorumError(
                f"round {self._round}: {len(contributors)} valid contribution(s) from {contributors}, quorum is "
                f"{self.quorum}; missing {dropped}"
            )
        if dropped:
            log.warning("round %d: completing without %s", self._round, dropped)
        parts = [self._accepted[c] for c in contributors]
        keyset = ""
        try:
            if self.strategy == "plain-fedavg":
                total = np.sum(parts, axis=0)
            else:
                total = he.EncryptedBatch.sum(parts).to_bytes()
                keyset = self.context.keyset_id.hex()
        except HevitError as exc:
            # validated contributions should always sum; if they do not, nothing is published
            # and the round is reset so it can be retried (clients resend), never left stuck
            reason = f"round {self._round} failed to aggregate ({type(exc).__name__}: {exc})"
            log.error("%s; its contributions are discarded and the round can be retried", reason)
            for c in contributors:
                self._reject(Rejection(self._round, c, reason))
            self._accepted = {}
            self._sizes = {}
            self._statements = {}
            raise ProtocolError(reason + "; contributions discarded, the round stays open") from exc
        meta = {"contributors": len(contributors)}
        if self.strategy != "plain-fedavg":
            meta["statements"] = [self._statements[c][0] for c in contributors]
            meta["signatures"] = [self._statements[c][1] for c in contributors]
        aggregate = Message(
            "aggregate", self.strategy, self._round, "server", keyset, {"sum": total}, meta
        ).to_bytes()
        state = RoundState(
            self._round,
            contributors,
            dropped,
            aggregate,
            time.perf_counter() - self._opened,
            dict(self._sizes),
        )
        self.completed.append(state)
        self._accepted = {}
        self._sizes = {}
        self._statements = {}
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint)
        return aggregate

    # ------------------------------------------------------------------ validation
    def _validate_header(self, msg: Message) -> None:
        if msg.sender not in self.clients:
            raise ProtocolError(f"unknown client {msg.sender!r}")
        if msg.strategy != self.strategy or msg.kind != _KIND_OF[self.strategy]:
            raise ProtocolError(
                f"a {msg.kind} message of {msg.strategy!r} in a {self.strategy} round"
            )
        if msg.round != self._round:
            raise ProtocolError(f"stale or future round {msg.round} (open round is {self._round})")
        if msg.sender in self._accepted:
            raise ProtocolError(
                f"duplicate contribution from {msg.sender!r} in round {self._round}"
            )
        expected_keyset = self.context.keyset_id.hex() if self.context is not None else ""
        if msg.keyset_id != expected_keyset:
            raise ProtocolError("message made under another key set")
        if set(msg.blobs) != {_BLOB_OF[msg.kind]}:
            raise ProtocolError(
                f"expected exactly the blob {_BLOB_OF[msg.kind]!r}, got {sorted(msg.blobs)}"
            )

    def _load(self, msg: Message):
        blob = msg.blobs[_BLOB_OF[msg.kind]]
        if self.strategy == "plain-fedavg":
            if not isinstance(blob, np.ndarray) or blob.ndim != 1:
                raise ProtocolError("plain-fedavg updates are float64 vectors")
            if self.expected_length is not None and blob.shape != (self.expected_length,):
                raise ProtocolError(
                    f"update of length {blob.shape[0]}, expected {self.expected_length}"
                )
            return blob
        if not isinstance(blob, bytes):
            raise ProtocolError(
                f"{self.strategy} contributions are ciphertexts, got a plaintext array"
            )
        # cheapest first: the header fields, before the checksum pass and the seed expansion
        expected = self._expected_batch
        header = he.EncryptedBatch.peek(blob)
        if header != expected:
            wrong = [
                f"{name} {got!r} (expected {want!r})"
                for name, got, want in zip(header._fields, header, expected, strict=True)
                if got != want
            ]
            raise ProtocolError("contribution does not match the round: " + ", ".join(wrong))
        # from_bytes reads the same header fields from the same bytes (and checks them again)
        return he.EncryptedBatch.from_bytes(blob, self.context)

    def _check_statement(self, msg: Message, batch: he.EncryptedBatch) -> tuple[dict, str]:
        """The contribution's signed statement, checked against the message and the roster (a
        key holder checks it again: this only keeps junk out of the round's sum)."""
        from ..protocol import seeds_digest

        _, statement, signature = contribution_parts(msg, _BLOB_OF[msg.kind])
        rows, cols = batch.shape
        got = (
            statement.contributor,
            statement.round,
            statement.keyset_id,
            statement.session,
            statement.rows,
            statement.cols,
        )
        want = (msg.sender, self._round, self.context.keyset_id, self.session, rows, cols)
        if got != want:
            raise ProtocolError("the contribution's signed statement does not match the round")
        if statement.task.split("/", 1)[0] != self.strategy:
            raise ProtocolError(
                f"a statement for task {statement.task!r} in a {self.strategy} round"
            )
        if seeds_digest(batch.seeds) != statement.seeds_digest:
            raise ProtocolError("the contribution's seeds are not the ones its statement signs")
        if self.roster is not None:
            if statement.federation != self.roster.digest:
                raise ProtocolError("a statement signed for another federation")
            self.roster.verify(statement.contributor, statement.to_bytes(), signature)
        return statement.to_meta(), signature.hex()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "format": "hevit-aggregation-server/1",
            "strategy": self.strategy,
            "clients": list(self.clients),
            "quorum": self.quorum,
            "expected_length": self.expected_length,
            "keyset_id": self.context.keyset_id.hex() if self.context is not None else "",
            "session": self.session,
            "completed": [
                {
                    **{k: v for k, v in asdict(s).items() if k != "aggregate"},
                    "aggregate": base64.b64encode(s.aggregate).decode(),
                }
                for s in self.completed
            ],
            "rejections": [asdict(r) for r in self.rejections],
            "rejected_total": self.rejected_total,
            "bytes_received": self.bytes_received,
        }

    def save_checkpoint(self, path) -> Path:
        """Atomic write: a reader sees the previous complete state or the new one, never a mix."""
        return atomic_write(Path(path), json.dumps(self.state_dict()).encode())

    @classmethod
    def resume(
        cls,
        path,
        context: he.PublicContext | None,
        *,
        expected_length: int,
        roster: Roster | None = None,
    ) -> AggregationServer:
        """A server continuing from a checkpoint (the next :meth:`open_round` is the round after
        the last completed one)."""
        try:
            state = json.loads(Path(path).read_bytes())
            if state.get("format") != "hevit-aggregation-server/1":
                raise SerializationError(f"{path} is not a hevit aggregation-server checkpoint")
            server = cls(
                state["strategy"],
                context,
                clients=state["clients"],
                quorum=state["quorum"],
                expected_length=expected_length,
                roster=roster,
                session=str(state["session"]),
                checkpoint=path,
            )
            expected_keyset = context.keyset_id.hex() if context is not None else ""
            if state["keyset_id"] != expected_keyset:
                raise ProtocolError(f"checkpoint {path} belongs to another key set")
            if state["expected_length"] != server.expected_length:
                raise ProtocolError(
                    f"checkpoint {path} is for contributions of length {state['expected_length']}, "
                    f"not {server.expected_length}"
                )
            server.completed = [_round_state(s, server.clients) for s in state["completed"]]
            server.rejections.extend(Rejection(**r) for r in state["rejections"])
            server.rejected_total = int(state.get("rejected_total", len(server.rejections)))
            server.bytes_received = {str(k): int(v) for k, v in state["bytes_received"].items()}
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as exc:
            if isinstance(exc, HevitError):
                raise
            raise SerializationError(
                f"corrupt checkpoint {path}: {type(exc).__name__}: {exc}"
            ) from None
        rounds = [s.round for s in server.completed]
        if rounds != list(range(1, len(rounds) + 1)):
            raise SerializationError(f"checkpoint {path} has rounds {rounds}, not 1..{len(rounds)}")
        return server


def _round_state(s: dict, clients: tuple[str, ...]) -> RoundState:
    """One completed round of a checkpoint, with every field checked (types, finiteness, known
    clients): a checkpoint is input like any other."""
    round_, seconds = s["round"], float(s["seconds"])
    if not isinstance(round_, int) or isinstance(round_, bool) or not math.isfinite(seconds):
        raise SerializationError(f"bad round {round_!r} or seconds {s['seconds']!r}")
    names = [*s["contributors"], *s["dropped"], *s["bytes_up"]]
    if not all(isinstance(c, str) and c in clients for c in names):
        raise SerializationError("round lists clients that are not registered")
    return RoundState(
        round_,
        list(s["contributors"]),
        list(s["dropped"]),
        base64.b64decode(s["aggregate"], validate=True),
        seconds,
        {str(k): int(v) for k, v in s["bytes_up"].items()},
    )


class InferenceServer:
    """Evaluates a released head on encrypted [CLS] rows (``he-cls``).

    ``head`` is any trained model with ``compile_plan`` (a linear head, a ViT tail's linear head,
    or the two-layer head). ``context`` is the federation's inference key set, used as the
    template of the key sets hospitals encrypt their requests under: each hospital makes a fresh
    key set for each he-cls session (its exact decryptions of the server's replies then reveal
    nothing about a key that outlives the session) and sends its public context with its
    requests; it must have the template's parameters and evaluation keys. The server compiles
    the head's plan once per (key set, layout).
    """

    def __init__(self, context: he.PublicContext, head, *, layout: str, clients=None) -> None:
        self.context = _public_only(context)
        self.head = head
        self.layout = layout
        self.clients = None if clients is None else {str(c) for c in clients}
        self._plans: dict[tuple[bytes, str], object] = {}
        #: each hospital's session key set (public), as its first request sent it
        self._contexts: dict[str, he.PublicContext] = {}
        self._lock = threading.Lock()
        if layout != "auto":
            self.plan_for(layout)  # compile the forced layout's plan up front (fails early)

    def accepts(self, layout: str) -> bool:
        """True when a request in ``layout`` is served (``auto``: the layouts it may choose)."""
        if self.layout != "auto":
            return layout == self.layout
        return layout in (
            ("sample", "batch")
            if getattr(self.head, "kind", "linear") == "mlp"
            else ("coefficient", "batch")
        )

    def plan_for(self, layout: str, context: he.PublicContext | None = None):
        """The head's compiled plan for ``layout`` under ``context`` (default: the template;
        compiled once per key set, on first use)."""
        context = self.context if context is None else context
        key = (context.keyset_id, layout)
        with self._lock:
            if key not in self._plans:
                self._plans[key] = self.head.compile_plan(context, layout=layout)
            return self._plans[key]

    @property
    def plan(self):
        """The plan of the forced layout (or the first one compiled under ``auto``)."""
        if not self._plans:
            raise ProtocolError("no plan compiled yet: the server has not served a request")
        return next(iter(self._plans.values()))

    def _session_context(self, msg: Message) -> he.PublicContext:
        """The requesting hospital's session key set: sent with its requests, checked against
        the template (same parameters and evaluation keys), kept for its later requests."""
        data = msg.blobs.get("context")
        if data is None:
            if msg.sender not in self._contexts:
                raise ProtocolError(f"{msg.sender}'s first he-cls request carries no key set")
            return self._contexts[msg.sender]
        if not isinstance(data, bytes):
            raise ProtocolError("an he-cls key set is public-context bytes")
        ctx = _public_only(he.PublicContext.from_bytes(data))
        t = self.context
        if (ctx.params, ctx.rotation_steps, ctx.conjugation, ctx.relinearization) != (
            t.params,
            t.rotation_steps,
            t.conjugation,
            t.relinearization,
        ):
            raise ProtocolError(
                "an he-cls key set with other parameters or evaluation keys than the federation's"
            )
        held = self._contexts.get(msg.sender)
        if held is not None and held.keyset_id != ctx.keyset_id:
            raise ProtocolError(f"{msg.sender} sent a second key set in one he-cls session")
        self._contexts[msg.sender] = ctx
        return ctx

    def handle(
        self, data: bytes, *, threads: int | None = None, expected_sender: str | None = None
    ) -> bytes:
        """The encrypted logits for one infer-request. ``expected_sender``: the client id the
        transport authenticated the request as coming from (see AggregationServer.receive)."""
        msg = Message.from_bytes(data)
        if msg.kind != "infer-request" or msg.strategy != "he-cls":
            raise ProtocolError(
                f"expected an he-cls infer-request, got {msg.kind} / {msg.strategy}"
            )
        if self.clients is not None and msg.sender not in self.clients:
            raise ProtocolError(f"unknown client {msg.sender!r}")
        if expected_sender is not None and msg.sender != expected_sender:
            raise ProtocolError(
                f"a request claiming to be from {msg.sender!r} arrived from {expected_sender!r}"
            )
        if not {"features"} <= set(msg.blobs) <= {"features", "context"}:
            raise ProtocolError("an infer-request holds a 'features' ciphertext (and its key set)")
        context = self._session_context(msg)
        if msg.keyset_id != context.keyset_id.hex():
            raise ProtocolError("infer-request under another key set than the one it sent")
        blob = msg.blobs["features"]
        if not isinstance(blob, bytes):
            raise ProtocolError("he-cls features are a ciphertext, got a plaintext array")
        # cheapest first, before the checksum pass and the seed expansion: a request is a fresh
        # (one-seed) encryption at the context's scale and norm bound, in a layout served here
        header = he.EncryptedBatch.peek(blob)
        params = self.context.params
        if not self.accepts(header.layout):
            raise ProtocolError(
                f"features in the {header.layout} layout, this server serves {self.layout}"
            )
        if (header.seed_count, header.scale, header.norm_bound) != (
            1,
            2.0**params.scale_bits,
            params.max_norm,
        ):
            raise ProtocolError(
                "he-cls features must be a fresh encryption (one seed, the context's scale and "
                f"norm bound), got {header.seed_count} seeds, scale {header.scale!r}, "
                f"norm bound {header.norm_bound!r}"
            )
        batch = he.EncryptedBatch.from_bytes(blob, context, threads=threads)
        plan = self.plan_for(batch.layout, context)
        if batch.layout == "coefficient":
            # the key holder reads C coefficients per row: send the compact reply
            return Message(
                "infer-reply",
                "he-cls",
                msg.round,
                "server",
                msg.keyset_id,
                {"logits": plan.apply_compact(batch, threads=threads).to_bytes()},
                {"compact": True},
            ).to_bytes()
        out = plan.apply(batch, threads=threads)
        return Message(
            "infer-reply", "he-cls", msg.round, "server", msg.keyset_id, {"logits": out.to_bytes()}
        ).to_bytes()
