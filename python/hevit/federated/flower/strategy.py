"""A Flower ``Strategy`` that runs every hevit aggregation with hevit's server.

One class serves the moments round (``moments``) and the training strategies (``he-fedavg``,
``he-ridge`` and the unprotected ``plain-fedavg`` baseline), for the linear and the two-layer
head. The strategy never holds a secret key: it validates and sums the clients' serialized
:class:`~hevit.federated.Message` bytes with :class:`~hevit.federated.AggregationServer`. The
aggregate is the ``ArrayRecord`` the strategy returns from ``aggregate_train``; Flower hands that
record back to ``configure_train``/``configure_evaluate``, which send it on as is (one copy, in
Flower's own seam). A node's training reply is its message bytes in a ``ConfigRecord`` (key
``"hevit"``), so for the HE strategies Flower carries ciphertexts only.

Evaluation: every node verifies the round's aggregate, commits to it and decrypts its flooded
release into its copy of the global model (bit-identical at every node; kept for the next round),
replying with its signed commitment only. The next round's training messages carry the
commitments the server collected; a node certifies the round with them (a quorum of hospitals
holds the same aggregate) and only then reports its correct/total count for that round's model
on its test rows. The last round is certified by :meth:`HevitStrategy.certify_round`, whose
replies also carry each node's copy of the final model (the published model). The moments
round's evaluation is each node adopting the federation's moments. Node replies also carry their
wall time per phase and peak memory.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ... import he
from ...errors import ProtocolError
from ..server import AggregationServer

__all__ = [
    "RECORD_KEY",
    "HevitStrategy",
    "NodeEvaluation",
    "aggregate_bytes",
    "record_node_metrics",
    "reply_field",
    "wait_for_nodes",
]

log = logging.getLogger(__name__)

#: Name of the ConfigRecord that carries hevit bytes in every Flower message.
RECORD_KEY = "hevit"


@dataclass(frozen=True)
class NodeEvaluation:
    """One client's evaluation of a certified round: its copy of the global model (identical
    at every hospital) on its own test rows."""

    correct: int
    total: int


class HevitStrategy(Strategy):
    """Encrypted aggregation on Flower's engine.

    Parameters
    ----------
    strategy : ``moments``, ``plain-fedavg``, ``he-fedavg`` or ``he-ridge``
    context : PublicContext or None
        The strategy's aggregation context (no secret key; ``None`` for ``plain-fedavg``).
    clients : ids the clients report (``client-<partition-id>``)
    head : the model the FedAvg strategies train (``linear`` or ``mlp``)
    quorum : fewest valid contributions per round (``None``: all)
    min_nodes : nodes to wait for before a round starts
    received_dir : if given, every message body the server receives is written there (audits
        and the deployment test's secret-key search)
    checkpoint : server state file, rewritten atomically after every completed round (see
        AggregationServer)
    expected_length : length of every contribution vector (see AggregationServer)
    model_size : parameters of the global model nodes report with their evaluation
    node_clients : {Flower node id: client id} the nodes described themselves as; a node's
        contributions and evaluations must carry that id (``None``: not checked)
    roster : the federation's Roster (contributions' signatures are checked against it)
    session : the session id of this run (a resumed run keeps its checkpoint's)
    resume : continue from ``checkpoint`` (a restarted SuperLink or ServerApp): the completed
        rounds are kept, Flower's round k of this run is hevit round ``rounds_done + k``, and the
        round that was open when the previous run stopped is redone from the start (no round is
        lost or counted twice). The checkpoint must be for the same strategy, key set, clients and
        quorum.
    """

    def __init__(
        self,
        strategy: str,
        context: he.PublicContext | None,
        *,
        clients,
        head: str = "linear",
        quorum: int | None = None,
        min_nodes: int | None = None,
        received_dir=None,
        checkpoint=None,
        expected_length: int,
        model_size: int | None = None,
        node_clients: dict[int, str] | None = None,
        resume: bool = False,
        roster=None,
        session: str = "session",
    ) -> None:
        if strategy not in ("moments", "plain-fedavg", "he-fedavg", "he-ridge"):
            raise ValueError(
                "the Flower strategy runs moments, plain-fedavg, he-fedavg or he-ridge, not "
                f"{strategy!r}"
            )
        self.name = strategy
        self.head = head
        #: parameters of the model nodes report in evaluation (None: moments, no model)
        self.model_size = model_size
        fresh = AggregationServer(
            strategy,
            context,
            clients=clients,
            quorum=quorum,
            checkpoint=checkpoint,
            expected_length=expected_length,
            roster=roster,
            session=session,
        )
        if resume:
            if checkpoint is None:
                raise ValueError("resume needs the checkpoint to continue from")
            self.server = AggregationServer.resume(
                checkpoint, context, expected_length=expected_length, roster=roster
            )
            theirs = (self.server.strategy, self.server.clients, self.server.quorum)
            if theirs != (fresh.strategy, fresh.clients, fresh.quorum):
                raise ProtocolError(
                    f"checkpoint {checkpoint} is for {theirs}, this run is for "
                    f"{(fresh.strategy, fresh.clients, fresh.quorum)}"
                )
        else:
            self.server = fresh
        self.node_clients = dict(node_clients or {})
        #: largest peak RSS (KiB) a node's ClientApp processes reported with their replies
        self.peak_rss_kb: dict[int, int] = {}
        #: hevit rounds completed before this Flower run (Flower numbers its rounds from 1)
        self.round_offset = self.server.last_completed_round
        self.min_nodes = len(self.server.clients) if min_nodes is None else int(min_nodes)
        self.received_dir = Path(received_dir) if received_dir else None
        self.aggregates: dict[int, bytes] = {}
        #: per hevit round, what each client reported on its test rows (see NodeEvaluation)
        self.evaluations: dict[int, dict[str, NodeEvaluation]] = {}
        #: per hevit round, the hospitals' signed commitments to the aggregate they hold
        self.commitments: dict[int, list[bytes]] = {}
        #: per certified round, each client's copy of the released model (certify_round)
        self.published: dict[int, dict[str, np.ndarray]] = {}
        #: wall seconds per phase: the nodes' train/encrypt/decrypt summed over their replies,
        #: and the server's aggregation
        self.seconds: dict[str, float] = defaultdict(float)

    def summary(self) -> None:
        log.info(
            "hevit %s (%s head): %d registered clients, quorum %d",
            self.name,
            self.head,
            len(self.server.clients),
            self.server.quorum,
        )

    # ------------------------------------------------------------------ training rounds
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Round r carries the aggregate of round r - 1: the ``arrays`` Flower passes (empty in
        round 1)."""
        node_ids = wait_for_nodes(grid, self.min_nodes)
        r = self.server.open_round()
        if r != self.round_offset + server_round:
            raise RuntimeError(
                f"Flower round {server_round} after {self.round_offset} resumed rounds, but hevit "
                f"server round {r}"
            )
        return self._messages(arrays, r, MessageType.TRAIN, node_ids)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        for reply in replies:
            if reply.has_error():
                log.warning(
                    "round %d: node %s failed: %s",
                    server_round,
                    reply.metadata.src_node_id,
                    reply.error.reason,
                )
                continue
            node = int(reply.metadata.src_node_id)
            try:
                data = reply_field(reply, RECORD_KEY, "message", bytes)
            except ProtocolError as exc:
                self.server.reject(self._client_of(node) or f"node {node}", f"ProtocolError: {exc}")
                continue
            self._store(server_round, node, data)
            # the one parse; rejections are logged and recorded. A node contributes only under
            # the id it described itself as (its SuperNode key authenticates the node)
            self.server.receive(data, expected_sender=self._client_of(node))
            self._record_node_metrics(reply)
            previous = self.round_offset + server_round - 1
            if previous >= 1 and self.name != "moments":
                self._keep_evaluation(previous, reply)
        t0 = time.perf_counter()
        aggregate = self.server.close_round()
        self.seconds["aggregate"] += time.perf_counter() - t0
        self.aggregates[self.round_offset + server_round] = aggregate
        state = self.server.completed[-1]
        metrics = MetricRecord(
            {
                "contributors": len(state.contributors),
                "bytes-up": sum(state.bytes_up.values()),
                "bytes-down-per-client": len(aggregate),
            }
        )
        return ArrayRecord({"aggregate": Array(np.frombuffer(aggregate, dtype=np.uint8))}), metrics

    # ------------------------------------------------------------------ evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Every node reads the round's aggregate (the ``arrays`` Flower passes): it scores its
        copy of the global model on its test rows (moments: adopts the moments)."""
        node_ids = wait_for_nodes(grid, self.min_nodes)
        return self._messages(
            arrays, self.round_offset + server_round, MessageType.EVALUATE, node_ids
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        r = self.round_offset + server_round
        reports = self.evaluations.setdefault(r, {})
        for reply in replies:
            if reply.has_error():
                log.warning(
                    "round %d: evaluation failed on node %s: %s",
                    r,
                    reply.metadata.src_node_id,
                    reply.error.reason,
                )
                continue
            self._record_node_metrics(reply)
            if self.name == "plain-fedavg":
                continue
            try:
                commitment = reply_field(reply, RECORD_KEY, "commitment", bytes)
            except ProtocolError as exc:
                log.warning("round %d: a commitment left out: %s", r, exc)
                continue
            self.commitments.setdefault(r, []).append(commitment)
        correct = sum(e.correct for e in reports.values())
        total = sum(e.total for e in reports.values())
        return MetricRecord({"accuracy": correct / total if total else 0.0, "num-examples": total})

    # ------------------------------------------------------------------ certification
    def certify_round(self, grid: Grid, round_: int, timeout: float) -> None:
        """Sends round ``round_``'s commitments to every node (``query.certify``): each certifies
        it and replies with its count on its test rows and its copy of the released model."""
        node_ids = wait_for_nodes(grid, self.min_nodes)
        content = {
            RECORD_KEY: ConfigRecord(
                {
                    "round": round_,
                    "strategy": self.name,
                    "head": self.head,
                    "session": self.server.session,
                    "commitments": self.commitments.get(round_, []),
                }
            )
        }
        messages = [
            Message(
                content=RecordDict(content),
                message_type=f"{MessageType.QUERY}.certify",
                dst_node_id=n,
            )
            for n in node_ids
        ]
        for reply in grid.send_and_receive(messages, timeout=timeout):
            if reply.has_error():
                log.warning(
                    "certify %d failed on node %s: %s",
                    round_,
                    reply.metadata.src_node_id,
                    reply.error.reason,
                )
                continue
            self._record_node_metrics(reply)
            if self.name == "moments":
                continue
            client = self._keep_evaluation(round_, reply)
            if client is None:
                continue
            try:
                model = np.asarray(reply.content["model"]["vector"].numpy(), dtype=np.float64)
                if self.model_size is not None and model.shape != (self.model_size,):
                    raise ProtocolError(f"a model of shape {model.shape}")
                if not np.all(np.isfinite(model)):
                    raise ProtocolError("a model with non-finite parameters")
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("certify %d: %s's model left out: %s", round_, client, exc)
                continue
            self.published.setdefault(round_, {})[client] = model

    def released_model(self, round_: int, quorum: int) -> np.ndarray:
        """The model of a certified round as the federation released it: the vector at least
        ``quorum`` hospitals sent bit for bit (they release identical copies), never one
        node's word."""
        copies = list(self.published.get(round_, {}).values())
        for candidate in copies:
            if sum(np.array_equal(candidate, c) for c in copies) >= quorum:
                return candidate
        raise ProtocolError(
            f"{self.name} round {round_}: no {quorum} hospitals sent the same released model"
        )

    def _keep_evaluation(self, round_: int, reply: Message) -> str | None:
        """Records a node's count for a certified round (left out, logged, when malformed)."""
        try:
            client, evaluation = self._evaluation(reply)
        except ProtocolError as exc:
            # a node's own report: wrong, it is left out of the round's record, never fatal
            log.warning("round %d: an evaluation left out: %s", round_, exc)
            return None
        self.evaluations.setdefault(round_, {})[client] = evaluation
        return client

    # ------------------------------------------------------------------ audit
    @property
    def received_kinds(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """What the server parsed (kind, sender, blob types), from its one parse (the most
        recent ``audit_limit`` messages)."""
        return list(self.server.received_kinds)

    def _client_of(self, node: int) -> str | None:
        """The id node ``node`` must send as (None: no node has described itself, as when the
        strategy runs outside FlowerExperiment)."""
        if not self.node_clients:
            return None
        return self.node_clients.get(node, f"<node {node}, which never described itself>")

    def _evaluation(self, reply: Message) -> tuple[str, NodeEvaluation]:
        """A node's evaluation reply, checked: its own id, counts within its rows, a finite
        model of the round's size."""
        node = int(reply.metadata.src_node_id)
        client = reply_field(reply, RECORD_KEY, "client", str)
        expected = self._client_of(node)
        if expected is not None and client != expected:
            raise ProtocolError(
                f"node {node} reports as {client!r}, it described itself as {expected!r}"
            )
        correct = reply_field(reply, "metrics", "correct", int)
        total = reply_field(reply, "metrics", "total", int)
        if not 0 <= correct <= total:
            raise ProtocolError(f"node {node} reports {correct} correct of {total}")
        return client, NodeEvaluation(correct, total)

    def _record_node_metrics(self, reply: Message) -> None:
        record_node_metrics(reply, self.peak_rss_kb, self.seconds)

    def _messages(self, arrays: ArrayRecord, round_: int, kind, node_ids) -> list[Message]:
        record = {
            "round": round_,
            "strategy": self.name,
            "head": self.head,
            "session": self.server.session,
        }
        if kind == MessageType.TRAIN and round_ > 1:
            # the previous round's commitments: nodes certify it before reporting on it
            record["commitments"] = self.commitments.get(round_ - 1, [])
        content = {RECORD_KEY: ConfigRecord(record)}
        if "aggregate" in arrays:
            content["arrays"] = arrays
        return [
            Message(content=RecordDict(content), message_type=kind, dst_node_id=n) for n in node_ids
        ]

    def _store(self, server_round: int, node_id: int, data: bytes) -> None:
        if self.received_dir is not None:
            self.received_dir.mkdir(parents=True, exist_ok=True)
            (self.received_dir / f"round{server_round}-node{node_id}.bin").write_bytes(data)


def record_node_metrics(reply: Message, peak_rss_kb: dict[int, int], seconds: dict[str, float]):
    """Adds a node's reported peak memory (KiB, per node) and wall time per phase (train,
    encrypt, decrypt) to ``peak_rss_kb`` and ``seconds``; figures of the wrong type or range are
    left out (logged if the record is missing). Returns the metrics record, or None."""
    node = int(reply.metadata.src_node_id)
    metrics = reply.content.metric_records.get("metrics")
    if metrics is None:
        log.warning("node %d replied without its metrics record", node)
        return None
    for key, value in metrics.items():
        if key == "peak-rss-kb" and isinstance(value, int):
            peak_rss_kb[node] = max(peak_rss_kb.get(node, 0), value)
        elif key.startswith("seconds-") and isinstance(value, float) and 0 <= value < 1e6:
            seconds[key.removeprefix("seconds-")] += value
    return metrics


def reply_field(reply: Message, record: str, key: str, kind: type):
    """``reply.content[record][key]`` if it is a ``kind`` (ints for ``int``), else ProtocolError:
    a node's reply is input like any other (``bytes()`` of an int it sent would allocate that
    many bytes)."""
    node = reply.metadata.src_node_id
    try:
        value = reply.content[record][key]
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"node {node}'s reply has no {record}.{key}") from exc
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(
            f"node {node}'s {record}.{key} is a {type(value).__name__}, expected {kind.__name__}"
        )
    return value


def aggregate_bytes(arrays: ArrayRecord) -> bytes:
    """The aggregate message in an ArrayRecord made by ``aggregate_train`` (empty: none yet)."""
    if "aggregate" not in arrays:
        return b""
    return arrays["aggregate"].numpy().tobytes()


def wait_for_nodes(grid: Grid, count: int, timeout: float = 120.0) -> list[int]:
    """The connected nodes once at least ``count`` are (TimeoutError after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(nodes)} of {count} SuperNodes connected within {timeout:.0f} s"
            )
        time.sleep(0.2)
