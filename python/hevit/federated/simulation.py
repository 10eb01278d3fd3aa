"""In-process federation: the same clients and server objects Flower runs, driven by a loop.

Every byte between a client and the server is a serialized :class:`~hevit.federated.Message`,
counted with ``len()`` where it is produced; times are split per phase.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ProtocolError
from ..protocol import HospitalIdentity, KeyHolder, Roster
from .client import HospitalClient, fedavg_vector_length, moments_vector_length, task_name
from .config import FederatedConfig, inference_chunk_rows, inference_layout_for
from .keys import FederationKeys, ServerKeys
from .models import LinearHead, initial_head, ridge_statistics_length
from .privacy import epsilon as dp_epsilon
from .server import AggregationServer, InferenceServer

__all__ = [
    "InferenceRecord",
    "MomentsRecord",
    "RoundRecord",
    "StrategyResult",
    "checkpoint_file",
    "exchange_commitments",
    "federation_roster",
    "make_clients",
    "merge_seconds",
    "run_inference",
    "run_moments",
    "run_strategy",
]

log = logging.getLogger(__name__)


@dataclass
class RoundRecord:
    round: int
    accuracy: float
    contributors: list[str]
    dropped: list[str]
    bytes_up: dict[str, int]
    bytes_down: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_up.values()) + sum(self.bytes_down.values())


@dataclass
class InferenceRecord:
    """``he-cls`` on one trained head over the clients' test rows."""

    preset: str
    layout: str
    #: the head the server evaluated ("linear" or "mlp")
    head: str
    rows: int
    accuracy_encrypted: float
    accuracy_plaintext: float
    agreement: float
    bytes_up_per_image: float
    bytes_down_per_image: float
    key_switches: int
    #: largest |encrypted - plaintext| logit, measured by the in-process simulation (which holds
    #: both); None on Flower, where a node never reports anything derived from its exact
    #: decryption but counts
    max_abs_logit_error: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: rows served in each layout (``auto`` chooses per request)
    rows_per_layout: dict[str, int] = field(default_factory=dict)


@dataclass
class StrategyResult:
    strategy: str
    rounds: list[RoundRecord]
    #: wall time per phase summed over clients and rounds: train, encrypt, aggregate, decrypt
    seconds: dict[str, float]
    head: LinearHead
    epsilon: float | None
    rejections: list[dict]
    inference: InferenceRecord | None = None
    #: rounds a checkpoint held when this run started (replayed: every hospital reads their
    #: aggregates again, in process and on Flower)
    resumed_after_round: int = 0

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "head"}
        d["final_accuracy"] = self.final_accuracy
        d["bytes_per_round"] = [r.total_bytes for r in self.rounds]
        return d


def merge_seconds(*parts) -> dict[str, float]:
    """Wall time per phase summed over ``parts`` (mappings of phase -> seconds): the one place
    per-client, per-round and per-job phase times are added up."""
    total: dict[str, float] = defaultdict(float)
    for part in parts:
        for phase, s in part.items():
            total[phase] += float(s)
    return dict(total)


def make_clients(
    features,
    labels,
    parts,
    *,
    classes: int,
    keys: FederationKeys | None,
    config: FederatedConfig,
    identities: list[HospitalIdentity] | None = None,
) -> list[HospitalClient]:
    """One :class:`HospitalClient` per index array in ``parts`` (ids ``client-0``, ...), each
    with its own key holder over ``keys``: a fresh Ed25519 identity (or ``identities[k]``), the
    roster of all of them (quorum: ``config.quorum``, default all), the flooding policy of
    ``config`` and an in-memory release ledger."""
    ids = [f"client-{k}" for k in range(len(parts))]
    if identities is None:
        identities = [HospitalIdentity.generate(i) for i in ids]
    if [i.hospital_id for i in identities] != ids:
        raise ValueError(f"identities must be those of {ids}")
    roster = Roster.of("hevit-in-process", identities, quorum=config.quorum)
    return [
        HospitalClient(
            ids[k],
            np.asarray(features)[idx],
            np.asarray(labels)[idx],
            classes=classes,
            keys=keys,
            config=config,
            clients=len(parts),
            keyholder=None
            if keys is None
            else KeyHolder(identities[k], roster, keys, policy=config.flooding),
        )
        for k, idx in enumerate(parts)
    ]


def federation_roster(clients: list[HospitalClient]) -> Roster | None:
    """The roster the clients' key holders share (None without key holders)."""
    rosters = [c.keyholder.roster for c in clients if c.keyholder is not None]
    if not rosters:
        return None
    if len({r.digest for r in rosters}) != 1:
        raise ValueError("the clients' key holders hold different rosters")
    return rosters[0]


def exchange_commitments(clients: list[HospitalClient], task: str, round_: int) -> list[bytes]:
    """Every hospital's commitment to the aggregate it verified, handed to all of them (the
    server relays them); each certifies the round before reporting anything derived from it."""
    commitments = [c.commitment(task, round_) for c in clients]
    for c in clients:
        c.certify(task, round_, commitments)
    return commitments


def checkpoint_file(checkpoint_dir, strategy: str, head: str = "linear") -> Path:
    """Where a strategy's server state is checkpointed: one file per strategy, a two-layer
    head's in a subfolder of its name (the in-process and the Flower runs share the layout)."""
    folder = Path(checkpoint_dir) if head == "linear" else Path(checkpoint_dir) / head
    return folder / f"{strategy}.ckpt.json"


def run_strategy(
    strategy: str,
    clients: list[HospitalClient],
    server_keys: ServerKeys | None,
    x_test,
    y_test,
    config: FederatedConfig,
    *,
    checkpoint_dir=None,
    dropouts: dict[int, set[str]] | None = None,
    progress: bool = True,
    on_round_end=None,
    initial_model=None,
) -> StrategyResult:
    """Runs one training strategy to completion (resuming from ``checkpoint_dir`` if it holds a
    checkpoint of this strategy) and returns its per-round record.

    Parameters
    ----------
    dropouts : {round: client ids}
        Clients that vanish in that round after the round started (they send nothing).
    on_round_end : callable(round) or None
        Called after each round's checkpoint is written (tests use it to kill the process).
    initial_model : LinearHead, MlpHead or ViTTail
        The global model before round 1 (default: ``config.head``'s start, a zero linear head or
        the seeded two-layer start; ``he-ridge`` always solves a linear head); a ViTTail for
        clients holding token sequences.
    """
    classes, dim = clients[0].classes, clients[0].dim
    x_test = clients[0].preprocess(x_test)
    rounds = 1 if strategy == "he-ridge" else config.rounds
    context = None if strategy == "plain-fedavg" else server_keys.for_strategy(strategy)
    if initial_model is None:
        kind = "linear" if strategy == "he-ridge" else config.head
        initial_model = initial_head(kind, classes, dim, hidden=config.hidden, seed=config.seed)
    length = (
        ridge_statistics_length(dim, classes)
        if strategy == "he-ridge"
        else fedavg_vector_length(initial_model)
    )
    ids = [c.client_id for c in clients]
    checkpoint = (
        checkpoint_file(
            checkpoint_dir, strategy, "linear" if strategy == "he-ridge" else config.head
        )
        if checkpoint_dir is not None
        else None
    )
    roster = None if strategy == "plain-fedavg" else federation_roster(clients)
    if checkpoint is not None and checkpoint.exists():
        server = AggregationServer.resume(
            checkpoint, context, expected_length=length, roster=roster
        )
        log.warning(
            "%s: resuming after round %d from %s", strategy, server.last_completed_round, checkpoint
        )
    else:
        server = AggregationServer(
            strategy,
            context,
            clients=ids,
            quorum=config.quorum,
            expected_length=length,
            roster=roster,
            session=_new_session(),
            checkpoint=checkpoint,
        )
    task = task_name(strategy, getattr(initial_model, "kind", "linear"))
    seconds: dict[str, float] = defaultdict(float)
    for c in clients:
        c.seconds.clear()
        c.session = server.session
    # each hospital holds its own copy of the global model: it decrypts the aggregate itself, and
    # independent flooding draws make the copies differ by the flooding noise
    heads = [initial_model for _ in clients]
    records: list[RoundRecord] = []
    resumed = server.last_completed_round
    # rounds already in the checkpoint: replay their aggregates (clients rebuild the global model)
    for state in server.completed:
        heads = _read_aggregate(strategy, clients, state.aggregate, heads, state.round)
        if strategy != "plain-fedavg":
            exchange_commitments(clients, task, state.round)
        records.append(_record(state, heads, x_test, y_test))
    dropouts = dropouts or {}
    bar = _progress(total=rounds, initial=len(records), desc=strategy, enabled=progress)
    while server.last_completed_round < rounds:
        r = server.open_round()
        for c, head in zip(clients, heads, strict=True):
            if c.client_id in dropouts.get(r, ()):
                continue
            data = (
                c.statistics_message(r)
                if strategy == "he-ridge"
                else c.update_message(strategy, head, r)
            )
            server.receive(data)
        t0 = time.perf_counter()
        server.close_round()
        seconds["aggregate"] += time.perf_counter() - t0
        state = server.completed[-1]
        heads = _read_aggregate(strategy, clients, state.aggregate, heads, r)
        if strategy != "plain-fedavg":
            # nothing derived from the round's release is reported before a quorum of
            # hospitals confirmed they hold the same aggregate
            exchange_commitments(clients, task, r)
        records.append(_record(state, heads, x_test, y_test))
        bar.update(1)
        if on_round_end is not None:
            on_round_end(r)
    bar.close()
    seconds = merge_seconds(seconds, *(c.seconds for c in clients))
    eps = None
    if config.dp is not None:
        releases = 1 if strategy == "he-ridge" else rounds
        eps = dp_epsilon(config.dp.noise_multiplier, releases, config.dp.delta)
    # the first hospital releases its copy (already flooded) as the trained head
    return StrategyResult(
        strategy,
        records,
        dict(seconds),
        heads[0],
        eps,
        [asdict(r) for r in server.rejections],
        resumed_after_round=resumed,
    )


def _read_aggregate(
    strategy, clients, aggregate: bytes, heads: list[LinearHead], round_: int
) -> list[LinearHead]:
    """Every hospital decrypts (and floods) the aggregate into its own copy of the global model."""
    if strategy == "he-ridge":
        return [c.read_ridge_aggregate(aggregate, round_) for c in clients]
    return [
        c.read_fedavg_aggregate(aggregate, strategy, h, round_)
        for c, h in zip(clients, heads, strict=True)
    ]


class _LogProgress:
    """Round progress as log lines, where tqdm (an extra, not a core dependency) is missing."""

    def __init__(self, total: int, initial: int, desc: str) -> None:
        self.n, self.total, self.desc = initial, total, desc

    def update(self, k: int) -> None:
        self.n += k
        log.info("%s: round %d of %d", self.desc, self.n, self.total)

    def close(self) -> None:
        pass


def _progress(*, total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar when tqdm is installed, else one log line per round (said once, not silent)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if enabled:
            log.info("tqdm is not installed (pip install 'hevit[vit]'): progress as log lines")
        return _LogProgress(total, initial, desc)
    return tqdm(
        total=total, initial=initial, desc=desc, unit="round", disable=not enabled, leave=False
    )


def _new_session() -> str:
    """A fresh session id: every signature of a run is bound to it (a checkpoint keeps it)."""
    import secrets

    return secrets.token_hex(8)


def _record(state, heads: list[LinearHead], x_test, y_test) -> RoundRecord:
    reference = heads[0].to_vector()
    if not all(np.array_equal(h.to_vector(), reference) for h in heads):
        # every hospital releases the same bits of a verified aggregate (derived flooding)
        raise ProtocolError(f"round {state.round}: the hospitals' released models differ")
    return RoundRecord(
        round=state.round,
        accuracy=heads[0].accuracy(x_test, y_test),
        contributors=list(state.contributors),
        dropped=list(state.dropped),
        bytes_up=dict(state.bytes_up),
        bytes_down={c: len(state.aggregate) for c in state.contributors},
    )


@dataclass
class MomentsRecord:
    """The preprocessing round: encrypted feature moments for federation-wide standardisation."""

    contributors: list[str]
    bytes_up: dict[str, int]
    bytes_down: dict[str, int]
    seconds: dict[str, float]


def run_moments(
    clients: list[HospitalClient], server_keys: ServerKeys, config: FederatedConfig
) -> MomentsRecord:
    """Every client learns the federation's feature mean and std from one encrypted sum."""
    server = AggregationServer(
        "moments",
        server_keys.aggregation,
        clients=[c.client_id for c in clients],
        quorum=config.quorum,
        expected_length=moments_vector_length(clients[0].raw.shape[1]),
        roster=federation_roster(clients),
        session=_new_session(),
    )
    for c in clients:
        c.seconds.clear()
        c.session = server.session
    r = server.open_round()
    for c in clients:
        server.receive(c.moments_message(r))
    t0 = time.perf_counter()
    aggregate = server.close_round()
    aggregate_seconds = time.perf_counter() - t0
    for c in clients:
        c.read_moments_aggregate(aggregate, r)
    exchange_commitments(clients, "moments", r)
    seconds = merge_seconds({"aggregate": aggregate_seconds}, *(c.seconds for c in clients))
    state = server.completed[-1]
    return MomentsRecord(
        state.contributors,
        dict(state.bytes_up),
        {c: len(aggregate) for c in state.contributors},
        dict(seconds),
    )


def run_inference(
    head: LinearHead,
    clients: list[HospitalClient],
    server_keys: ServerKeys,
    test_parts,
    x_test,
    y_test,
    config: FederatedConfig,
    *,
    threads: int | None = None,
) -> InferenceRecord:
    """``he-cls``: each client encrypts its test rows, the server applies the head, the client
    decrypts; compared with the same head in plaintext."""
    layout = config.inference_layout
    context = server_keys.for_head(head)
    params = context.params
    server = InferenceServer(context, head, layout=layout, clients=[c.client_id for c in clients])
    chunk = inference_chunk_rows(layout, params.poly_modulus_degree)
    rows_per_layout: dict[str, int] = defaultdict(int)
    x_test = np.asarray(x_test, dtype=np.float64)
    plain = head.logits(clients[0].preprocess(x_test))  # rows, or token sequences for a ViTTail
    covered = np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in test_parts]))
    if not np.array_equal(covered, np.arange(len(x_test))):
        raise ValueError(
            "test_parts must partition the rows of x_test (each row to exactly one client)"
        )
    logits = np.empty_like(plain)
    up = down = 0
    seconds = defaultdict(float)
    for c in clients:
        c.seconds.clear()
    for c, part in zip(clients, test_parts, strict=True):
        for start in range(0, len(part), chunk):
            idx = part[start : start + chunk]
            request = c.inference_request(x_test[idx], model=head)
            rows_per_layout[
                inference_layout_for(head.kind, len(idx), layout, params.poly_modulus_degree)
            ] += len(idx)
            t0 = time.perf_counter()
            reply = server.handle(request, threads=threads)
            seconds["infer"] += time.perf_counter() - t0
            logits[idx] = c.read_logits(reply, model=head)
            up += len(request)
            down += len(reply)
        c.end_inference(head)  # the session's key set is discarded with its replies read
    seconds = merge_seconds(seconds, *(c.seconds for c in clients))
    n = len(x_test)
    pred = logits.argmax(axis=1)
    return InferenceRecord(
        preset=config.mlp_inference_preset if head.kind == "mlp" else config.inference_preset,
        layout=layout,
        head=head.kind,
        rows=n,
        accuracy_encrypted=float(np.mean(pred == y_test)),
        accuracy_plaintext=float(np.mean(plain.argmax(axis=1) == y_test)),
        agreement=float(np.mean(pred == plain.argmax(axis=1))),
        bytes_up_per_image=up / n,
        bytes_down_per_image=down / n,
        key_switches=max(server.plan_for(lay).key_switches for lay in rows_per_layout),
        max_abs_logit_error=float(np.abs(logits - plain).max()),
        seconds=dict(seconds),
        rows_per_layout=dict(rows_per_layout),
    )
