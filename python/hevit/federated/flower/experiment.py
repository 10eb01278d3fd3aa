"""``hevit experiment`` on Flower: the ServerApp's whole run, and the report it writes.

The phases are those of :func:`hevit.jobs.experiment.run_experiment`, with the same server
objects and client methods, so the numbers agree with the in-process run for the same seed and
key set (timings aside; flooding and DP noise are fresh draws in either): the nodes describe
their data, the moments round, every (strategy, head) pair for its rounds through
:class:`HevitStrategy` on ``Strategy.start``, and ``he-cls`` of every trained head through two
query messages per node. What cannot exist in a federation is left out of the report: the
centralised ridge reference (it pools every hospital's rows) and key generation time (keys are
made before the run, ``hevit keygen``).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ...errors import HevitError, ProtocolError
from ...protocol import Roster
from ..client import fedavg_vector_length, moments_vector_length
from ..config import INFERENCE_LAYOUTS, inference_chunk_rows
from ..keys import ServerKeys
from ..models import initial_head, ridge_statistics_length
from ..privacy import epsilon as dp_epsilon
from ..server import InferenceServer
from ..simulation import (
    InferenceRecord,
    MomentsRecord,
    RoundRecord,
    StrategyResult,
    checkpoint_file,
)
from .security import observe_transport, require_secure_transport
from .settings import RunSettings
from .strategy import (
    RECORD_KEY,
    HevitStrategy,
    record_node_metrics,
    reply_field,
    wait_for_nodes,
)

__all__ = ["FlowerExperiment"]

log = logging.getLogger(__name__)


class FlowerExperiment:
    """Runs the experiment of ``settings`` over ``grid`` and writes its report."""

    def __init__(self, grid: Grid, settings: RunSettings) -> None:
        self.grid = grid
        self.settings = settings
        self.config = settings.config
        # before any key or message: the SuperLink must be what the run declared
        self.transport = observe_transport("server")
        require_secure_transport(
            self.transport, insecure_declared=settings.insecure, where="the SuperLink"
        )
        self.server_keys = ServerKeys.from_files(settings.server_keys_dir)  # public contexts only
        #: the registered hospitals' public keys and quorum (contributions are checked against it)
        self.roster = Roster.load(Path(settings.server_keys_dir) / "roster.json")
        #: nodes to wait for before each phase: the quorum, or every registered hospital
        self.min_nodes = self.config.quorum or settings.clients
        #: the audit file (``result-path``): per run what the server received and produced
        self.audit: dict = {"runs": {}, "insecure": settings.insecure}
        self.peak_rss_kb: dict[int, int] = {}
        #: the client id each Flower node described itself as, and each client's test rows
        self.client_of_node: dict[int, str] = {}
        self.test_rows: dict[str, int] = {}

    # ------------------------------------------------------------------ the run
    def run(self):
        from ...jobs.experiment import ExperimentReport, strategy_entry, versions

        s, config = self.settings, self.config
        nodes = self._describe()
        moments = self._moments() if config.standardize else None
        first = nodes[min(nodes, key=_client_number)]
        metadata = json.loads(str(first["metadata"]))
        report = ExperimentReport(
            data=str(metadata.get("data", "?")),
            clients=s.clients,
            classes=[str(c) for c in first["class-names"]],
            train_rows=sum(int(n["rows"]) for n in nodes.values()),
            test_rows=sum(int(n["test-rows"]) for n in nodes.values()),
            seed=config.seed,
            partition=s.partition,
            config=config.to_dict(),
            features=metadata,
            client_class_balance=[
                [int(v) for v in nodes[c]["class-counts"]]
                for c in sorted(nodes, key=_client_number)
            ],
            centralized_ridge_accuracy=None,
            keygen_seconds=None,
            versions=versions(),
            standardization=None if moments is None else asdict(moments),
            deployment=self._deployment(nodes),
        )
        for name, head in s.runs():
            result = self._train(name, head)
            result.inference = self._he_cls(result.head)
            report.strategies.append(strategy_entry(result))
        # peak resident memory of each hospital's ClientApp processes in this run
        report.deployment["peak_rss_mb_per_node"] = {
            self.client_of_node.get(n, str(n)): kb / 1024 for n, kb in self.peak_rss_kb.items()
        }
        if s.report_dir is not None:
            report.write(s.report_dir)
        if s.result_path is not None:
            self.audit["peak_rss_mb_per_node"] = report.deployment["peak_rss_mb_per_node"]
            Path(s.result_path).write_text(json.dumps(self.audit))
        return report

    def _deployment(self, nodes: dict) -> dict:
        import flwr

        clients = sorted(nodes, key=_client_number)
        return {
            "engine": "flower",
            "flwr": flwr.__version__,
            # declared in run_config; observed from the Flower processes' command lines
            "insecure": self.settings.insecure,
            "transport": self.transport.to_dict(),
            "node_transports": {c: json.loads(str(nodes[c]["transport"])) for c in clients},
            "nodes_described": clients,
        }

    # ------------------------------------------------------------------ phases
    def _describe(self) -> dict[str, ConfigRecord]:
        """Every hospital's row counts, class balance and feature metadata; checks they fit the
        run's shape before any key is used. A node whose description does not fit is logged and
        left out of the run (its later messages carry no id the server accepts)."""
        s = self.settings
        nodes: dict[str, ConfigRecord] = {}
        for node, reply in self._query("describe", RecordDict({})).items():
            try:
                client = reply_field(reply, RECORD_KEY, "client", str)
                if client not in s.client_ids or client in nodes:
                    raise ProtocolError(f"node {node} describes itself as {client!r}")
                dim = reply_field(reply, RECORD_KEY, "dim", int)
                names = reply_field(reply, RECORD_KEY, "class-names", list)
                counts = reply_field(reply, RECORD_KEY, "class-counts", list)
                rows = reply_field(reply, RECORD_KEY, "rows", int)
                test_rows = reply_field(reply, RECORD_KEY, "test-rows", int)
                for key in ("metadata", "transport"):
                    json.loads(reply_field(reply, RECORD_KEY, key, str))
                if dim != s.dim or len(names) != s.classes or len(counts) != s.classes:
                    raise ProtocolError(
                        f"{client} holds {dim}-dim features of {len(names)} classes; this run is "
                        f"for {s.dim} and {s.classes}"
                    )
                if sum(counts) != rows or rows < 1 or test_rows < 0:
                    raise ProtocolError(f"{client} describes {rows} rows as {counts}")
            except (ProtocolError, ValueError) as exc:
                log.warning("describe: node %d left out: %s", node, exc)
                continue
            nodes[client] = reply.content[RECORD_KEY]
            self.client_of_node[node] = client
        if len(nodes) < self.min_nodes:
            raise ProtocolError(
                f"{len(nodes)} hospitals described themselves validly; the run needs "
                f"{self.min_nodes}"
            )
        names = {tuple(r["class-names"]) for r in nodes.values()}
        if len(names) != 1:
            raise ProtocolError(f"the hospitals name their classes differently: {sorted(names)}")
        self.test_rows = {c: int(r["test-rows"]) for c, r in nodes.items()}
        return nodes

    def _moments(self) -> MomentsRecord:
        strategy = self._strategy(
            "moments", "linear", expected_length=moments_vector_length(self.settings.dim)
        )
        strategy.start(self.grid, ArrayRecord(), num_rounds=1, timeout=self.settings.timeout)
        # every node certifies the moments it adopted before it trains on them
        strategy.certify_round(self.grid, 1, self.settings.timeout)
        self._audit_run("moments", strategy)
        state = strategy.server.completed[-1]
        return MomentsRecord(
            list(state.contributors),
            dict(state.bytes_up),
            {c: len(state.aggregate) for c in state.contributors},
            dict(strategy.seconds),
        )

    def _train(self, name: str, head: str) -> StrategyResult:
        s, config = self.settings, self.config
        kind = "linear" if name == "he-ridge" else head
        initial = initial_head(kind, s.classes, s.dim, hidden=config.hidden, seed=config.seed)
        length = (
            ridge_statistics_length(s.dim, s.classes)
            if name == "he-ridge"
            else fedavg_vector_length(initial)
        )
        strategy = self._strategy(name, kind, expected_length=length, model_size=initial.size)
        rounds = 1 if name == "he-ridge" else config.rounds
        done = strategy.round_offset
        if done:
            # a resumed run replays the checkpoint as the in-process run does: every node reads
            # each completed aggregate in order, which gives every round's record and the
            # copies the next round trains from (a DP aggregate adds to the previous copy)
            log.warning("%s (%s): resuming after round %d", name, kind, done)
            for state in strategy.server.completed:
                flower_round = state.round - done  # hevit round = offset + Flower round
                replies = self.grid.send_and_receive(
                    strategy.configure_evaluate(
                        flower_round, _aggregate_record(state.aggregate), ConfigRecord(), self.grid
                    ),
                    timeout=s.timeout,
                )
                strategy.aggregate_evaluate(flower_round, replies)
                strategy.certify_round(self.grid, state.round, s.timeout)
        if done < rounds:
            initial_arrays = (
                ArrayRecord()
                if done == 0
                else _aggregate_record(strategy.server.completed[-1].aggregate)
            )
            strategy.start(self.grid, initial_arrays, num_rounds=rounds - done, timeout=s.timeout)
            # the last round's commitments: its counts and the released model
            strategy.certify_round(self.grid, strategy.server.last_completed_round, s.timeout)
        self._audit_run(f"{name}/{kind}", strategy)
        records = [
            _round_record(state, strategy.evaluations[state.round])
            for state in strategy.server.completed
            if strategy.evaluations.get(state.round)
        ]
        if not records:
            raise ProtocolError(f"{name} ({kind}): no node evaluated any round")
        # the model the federation released (a quorum of identical copies), never one node's word
        model = initial.with_vector(
            strategy.released_model(strategy.server.last_completed_round, self.roster.quorum)
        )
        eps = None
        if config.dp is not None:
            eps = dp_epsilon(config.dp.noise_multiplier, rounds, config.dp.delta)
        result = StrategyResult(
            name,
            records,
            dict(strategy.seconds),
            model,
            eps,
            [asdict(r) for r in strategy.server.rejections],
        )
        result.resumed_after_round = done
        return result

    def _he_cls(self, model) -> InferenceRecord:
        """Each node encrypts its test rows for ``model``, the server evaluates them, the node
        decrypts and reports how the encrypted logits compare with the plaintext head."""
        s, config = self.settings, self.config
        context = self.server_keys.for_head(model)
        server = InferenceServer(
            context, model, layout=config.inference_layout, clients=s.client_ids
        )
        content = {
            RECORD_KEY: ConfigRecord({"round": 0, "strategy": "he-cls", "head": model.kind}),
            "model": ArrayRecord({"vector": Array(model.to_vector())}),
        }
        chunk = inference_chunk_rows(config.inference_layout, context.params.poly_modulus_degree)
        requests = self._query("he_cls_request", RecordDict(content))
        seconds: dict[str, float] = defaultdict(float)
        answers, sizes = {}, {}
        for node, reply in requests.items():
            client = self.client_of_node.get(node)
            try:
                if client is None:
                    raise ProtocolError(f"node {node} never described itself")
                record_node_metrics(reply, self.peak_rss_kb, seconds)
                batch = reply_field(reply, RECORD_KEY, "requests", list)
                # as many requests as its test rows make, each checked before it is loaded
                if len(batch) != -(-self.test_rows[client] // chunk):
                    raise ProtocolError(
                        f"{client} sent {len(batch)} requests for {self.test_rows[client]} rows"
                    )
                out = []
                for data in batch:
                    if not isinstance(data, bytes):
                        raise ProtocolError(f"{client} sent a request that is not bytes")
                    t0 = time.perf_counter()
                    out.append(server.handle(data, expected_sender=client))
                    seconds["infer"] += time.perf_counter() - t0
            except (HevitError, ValueError) as exc:
                log.warning("he-cls: node %d left out: %s", node, exc)
                continue
            answers[node] = out
            sizes[node] = (sum(map(len, batch)), sum(map(len, out)))
        results = self._query(
            "he_cls_reply",
            {
                node: RecordDict(
                    {
                        **content,
                        RECORD_KEY: ConfigRecord(
                            {"round": 0, "strategy": "he-cls", "head": model.kind, "replies": out}
                        ),
                    }
                )
                for node, out in answers.items()
            },
        )
        totals: dict[str, float] = defaultdict(float)
        up = down = 0
        rows_per_layout: dict[str, int] = defaultdict(int)
        for node, reply in results.items():
            try:
                report = _he_cls_report(reply, self.test_rows[self.client_of_node[node]])
            except ProtocolError as exc:
                log.warning("he-cls: node %d's report left out: %s", node, exc)
                continue
            record_node_metrics(reply, self.peak_rss_kb, seconds)
            for key in ("rows", "correct-encrypted", "correct-plaintext", "agree"):
                totals[key] += report[key]
            for layout, rows in report["layouts"].items():
                rows_per_layout[layout] += rows
            up, down = up + sizes[node][0], down + sizes[node][1]
        n = int(totals["rows"])
        if n == 0:
            raise ProtocolError("he-cls: no node reported any test row")
        return InferenceRecord(
            preset=context.params.matching_preset() or "custom",
            layout=config.inference_layout,
            head=model.kind,
            rows=n,
            accuracy_encrypted=totals["correct-encrypted"] / n,
            accuracy_plaintext=totals["correct-plaintext"] / n,
            agreement=totals["agree"] / n,
            bytes_up_per_image=up / n,
            bytes_down_per_image=down / n,
            key_switches=max(server.plan_for(lay).key_switches for lay in rows_per_layout),
            seconds=dict(seconds),
            rows_per_layout=dict(rows_per_layout),
        )

    # ------------------------------------------------------------------ helpers
    def _strategy(
        self, name: str, head: str, *, expected_length: int, model_size: int | None = None
    ) -> HevitStrategy:
        s = self.settings
        checkpoint = None
        if s.checkpoint_dir is not None and name != "moments":
            checkpoint = checkpoint_file(s.checkpoint_dir, name, head)
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
        return HevitStrategy(
            name,
            self.server_keys.for_strategy(name),
            clients=s.client_ids,
            head=head,
            quorum=self.config.quorum,
            # with a quorum, rounds start once that many nodes are connected (a lost node must
            # not stall the federation); without one, every registered hospital is awaited
            min_nodes=self.min_nodes,
            received_dir=None if s.received_dir is None else s.received_dir / f"{name}-{head}",
            expected_length=expected_length,
            model_size=model_size,
            node_clients=self.client_of_node,
            roster=self.roster,
            session=secrets.token_hex(8),
            checkpoint=checkpoint,
            # a restarted SuperLink or ServerApp continues from the last completed round
            resume=checkpoint is not None and checkpoint.exists(),
        )

    def _query(self, action: str, content) -> dict[int, Message]:
        """Sends ``query.<action>`` to every connected node (``content``: one RecordDict for all,
        or one per node id) and returns the replies that came back; failures are logged."""
        if isinstance(content, RecordDict):
            nodes = wait_for_nodes(self.grid, self.min_nodes)
            content = dict.fromkeys(nodes, content)
        messages = [
            Message(content=c, message_type=f"{MessageType.QUERY}.{action}", dst_node_id=n)
            for n, c in content.items()
        ]
        replies, failures = {}, []
        for reply in self.grid.send_and_receive(messages, timeout=self.settings.timeout):
            node = int(reply.metadata.src_node_id)
            if reply.has_error():
                log.warning("%s failed on node %d: %s", action, node, reply.error.reason)
                failures.append(f"node {node}: {reply.error.reason}")
                continue
            replies[node] = reply
        if len(replies) < min(self.min_nodes, len(messages)):
            raise ProtocolError(
                f"{action}: {len(replies)} of {len(messages)} nodes answered, the run needs "
                f"{self.min_nodes}" + "".join(f"; {f}" for f in failures[:3])
            )
        return replies

    def _audit_run(self, key: str, strategy: HevitStrategy) -> None:
        for node, kb in strategy.peak_rss_kb.items():
            self.peak_rss_kb[node] = max(self.peak_rss_kb.get(node, 0), kb)
        completed = strategy.server.completed
        self.audit["runs"][key] = {
            "strategy": strategy.name,
            "head": strategy.head,
            "resumed_after_round": strategy.round_offset,
            "rounds": [st.round for st in completed],
            "contributors": [st.contributors for st in completed],
            "bytes_up": [st.bytes_up for st in completed],
            # server-side seconds of each round, from its opening to its aggregate
            "seconds": [st.seconds for st in completed],
            "accuracy": {
                r: sum(e.correct for e in ev.values()) / max(sum(e.total for e in ev.values()), 1)
                for r, ev in strategy.evaluations.items()
                if ev
            },
            "aggregates": {r: base64.b64encode(a).decode() for r, a in strategy.aggregates.items()},
            "received_kinds": strategy.received_kinds,
            "rejections": [vars(r) for r in strategy.server.rejections],
        }


def _he_cls_report(reply: Message, rows: int) -> dict:
    """A node's he-cls comparison, checked: counts within its test rows, a finite error, rows
    per known layout adding up."""
    report = {"rows": reply_field(reply, "metrics", "rows", int)}
    if report["rows"] != rows:
        raise ProtocolError(f"reports {report['rows']} rows, it described {rows}")
    for key in ("correct-encrypted", "correct-plaintext", "agree"):
        report[key] = reply_field(reply, "metrics", key, int)
        if not 0 <= report[key] <= rows:
            raise ProtocolError(f"reports {report[key]} {key} of {rows} rows")
    report["layouts"] = {
        layout: reply_field(reply, "metrics", f"rows-{layout}", int)
        for layout in INFERENCE_LAYOUTS
        if layout != "auto" and f"rows-{layout}" in reply.content["metrics"]
    }
    if sum(report["layouts"].values()) != rows:
        raise ProtocolError(f"reports rows per layout {report['layouts']} for {rows} rows")
    return report


def _client_number(client: str) -> int:
    return int(client.rsplit("-", 1)[1])


def _aggregate_record(aggregate: bytes) -> ArrayRecord:
    return ArrayRecord({"aggregate": Array(np.frombuffer(aggregate, dtype=np.uint8))})


def _round_record(state, evaluations: dict) -> RoundRecord:
    """A round as the in-process run records it: accuracy over every node's test rows (each
    scoring its copy of the released model, identical at every hospital)."""
    return RoundRecord(
        round=state.round,
        accuracy=sum(e.correct for e in evaluations.values())
        / max(sum(e.total for e in evaluations.values()), 1),
        contributors=list(state.contributors),
        dropped=list(state.dropped),
        bytes_up=dict(state.bytes_up),
        bytes_down={c: len(state.aggregate) for c in state.contributors},
    )
