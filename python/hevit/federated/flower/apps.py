"""The Flower ``ServerApp`` and ``ClientApp`` (Message API; settings in ``run_config``, see
:mod:`hevit.federated.flower.settings`).

The ServerApp runs what ``hevit experiment`` runs, on Flower (:class:`FlowerExperiment`): the
moments round, every training strategy and head, and ``he-cls`` of every trained head, and writes
the same report. The ClientApp answers:

- ``query.describe``: the node's row counts, class balance and feature metadata (for the report);
- ``train``: its signed contribution to the round (moments, FedAvg update or ridge statistics);
  from round 2 on it first certifies the previous round (the quorum's commitments the message
  carries) and reports the correct count of that round's model on its test rows;
- ``evaluate``: it verifies the round's aggregate (nothing is decrypted otherwise), commits to
  it, decrypts its flooded release into its copy of the global model (moments: adopts the
  federation's moments) and replies with its signed commitment only;
- ``query.certify``: the last round's commitments: the counts of the last model and the
  released model itself (what the server evaluates under he-cls);
- ``query.he_cls_request`` / ``query.he_cls_reply``: it encrypts its test rows for the server's
  head, then decrypts the server's encrypted logits and reports counts only, once.

Every message first passes the Mods of :mod:`hevit.federated.flower.mods` (the transport check,
the process's peak memory).
"""

from __future__ import annotations

import json
import logging

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ...errors import ProtocolError
from ..client import task_name
from ..config import inference_chunk_rows, inference_layout_for
from ..keys import inference_keys_for
from .experiment import FlowerExperiment
from .mods import TRANSPORT, peak_memory_mod, secure_transport_mod
from .node import FlowerHospital, client_partition
from .settings import RunSettings, config_from_run
from .strategy import RECORD_KEY, aggregate_bytes

__all__ = [
    "client_app",
    "client_partition",
    "config_from_run",
    "server_app",
]

log = logging.getLogger(__name__)

# every message: the transport check first (before any row or key is read), memory last
client_app = ClientApp(mods=[secure_transport_mod, peak_memory_mod])
server_app = ServerApp()


def _reply(msg: Message, hospital: FlowerHospital | None, **records) -> Message:
    """A reply with the wall time per phase the node spent on this message (peak_memory_mod
    adds the process's peak memory)."""
    metrics = {} if hospital is None else hospital.seconds_metrics()
    extra = records.pop("metrics", {})
    return Message(
        RecordDict({**records, "metrics": MetricRecord({**metrics, **extra})}), reply_to=msg
    )


def _request(msg: Message) -> tuple[int, str, str]:
    record = msg.content[RECORD_KEY]
    return int(record["round"]), str(record["strategy"]), str(record["head"])


def _hospital(msg: Message, context: Context, head: str = "linear") -> FlowerHospital:
    """The node's hospital for this message, in the session the server runs."""
    hospital = FlowerHospital.from_context(context, head=head)
    record = msg.content[RECORD_KEY]
    if "session" in record:
        hospital.client.session = str(record["session"])
    return hospital


def _commitments(msg: Message) -> list[bytes]:
    value = msg.content[RECORD_KEY].get("commitments", [])
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise ProtocolError("commitments must be a list of bytes")
    return list(value)


def _counts(hospital: FlowerHospital, model) -> dict:
    """Correct predictions of a certified (released) model on this node's own test rows."""
    c = hospital.client
    correct = int(np.sum(model.predict(c.preprocess(hospital.x_test)) == hospital.y_test))
    return {"correct": correct, "total": len(hospital.y_test)}


@client_app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """Row counts, the class balance of the training rows, dimensions and the feature file's
    metadata (model, weights, provider): what ``report.json`` says about the data."""
    hospital = FlowerHospital.from_context(context)
    c = hospital.client
    return _reply(
        msg,
        None,
        **{
            RECORD_KEY: ConfigRecord(
                {
                    "client": c.client_id,
                    "rows": len(c.y),
                    "test-rows": len(hospital.y_test),
                    "dim": c.dim,
                    "class-names": hospital.class_names,
                    "class-counts": np.bincount(c.y, minlength=c.classes).tolist(),
                    "metadata": json.dumps(hospital.metadata),
                    # observed by secure_transport_mod before this handler ran
                    "transport": str(context.state[TRANSPORT]["observed"]),
                }
            )
        },
    )


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    r, strategy, head = _request(msg)
    hospital = _hospital(msg, context, head)
    c = hospital.client
    metrics = {}
    if strategy == "moments":
        data = c.moments_message(r)
    else:
        hospital.require_moments()
        if strategy == "he-ridge":
            data = c.statistics_message(r)
        else:
            model = hospital.model_copy(strategy, r - 1)
            if model is None:  # this node did not read the previous aggregate (resumed run)
                model = hospital.read_global_model(
                    strategy, aggregate_bytes(msg.content["arrays"]), r - 1
                )
            if r > 1 and strategy != "plain-fedavg":
                # the previous round's release is reported only once a quorum committed to it
                c.certify(task_name(strategy, head), r - 1, _commitments(msg))
            if r > 1:
                metrics = _counts(hospital, model)
            data = c.update_message(strategy, model, r)
    hospital.keep_chain()
    record = ConfigRecord({"message": data, "client": c.client_id})
    return _reply(msg, hospital, **{RECORD_KEY: record}, metrics=metrics)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    r, strategy, head = _request(msg)
    hospital = _hospital(msg, context, head)
    c = hospital.client
    aggregate = aggregate_bytes(msg.content["arrays"])
    if strategy == "moments":
        c.read_moments_aggregate(aggregate, r)
        hospital.keep_moments()
    else:
        hospital.require_moments()
        hospital.read_global_model(strategy, aggregate, r)
    hospital.keep_chain()
    record = {"client": c.client_id}
    if strategy != "plain-fedavg":
        task = task_name(strategy, "linear" if strategy in ("moments", "he-ridge") else head)
        record["commitment"] = c.commitment(task, r)
    # nothing derived from the release leaves before the round is certified
    return _reply(msg, hospital, **{RECORD_KEY: ConfigRecord(record)})


@client_app.query("certify")
def certify(msg: Message, context: Context) -> Message:
    """The quorum's commitments to a round's aggregate: once certified, the counts of that
    round's released model on the node's test rows and the model itself (moments: nothing)."""
    r, strategy, head = _request(msg)
    hospital = _hospital(msg, context, head)
    c = hospital.client
    task = task_name(strategy, "linear" if strategy in ("moments", "he-ridge") else head)
    if strategy != "plain-fedavg":
        c.certify(task, r, _commitments(msg))
    if strategy == "moments":
        return _reply(msg, hospital, **{RECORD_KEY: ConfigRecord({"client": c.client_id})})
    model = hospital.model_copy(strategy, r)
    if model is None:
        raise ProtocolError(f"{c.client_id} holds no model of {strategy} round {r}")
    return _reply(
        msg,
        hospital,
        **{
            RECORD_KEY: ConfigRecord({"client": c.client_id}),
            # the released (flooded) model, bit-identical at every hospital
            "model": ArrayRecord({"vector": Array(model.to_vector())}),
        },
        metrics=_counts(hospital, model),
    )


def _he_cls_setup(msg: Message, context: Context):
    """(round, hospital, the head the server evaluates, its key set's parameters, rows per
    request): the head's parameters travel with both he-cls messages."""
    r, _, head = _request(msg)
    hospital = FlowerHospital.from_context(context, head=head)
    hospital.require_moments()
    model = hospital.initial_model().with_vector(msg.content["model"]["vector"].numpy())
    params = inference_keys_for(hospital.client.keys, model).params
    chunk = inference_chunk_rows(
        hospital.client.config.inference_layout, params.poly_modulus_degree
    )
    return r, hospital, model, params, chunk


@client_app.query("he_cls_request")
def he_cls_request(msg: Message, context: Context) -> Message:
    """The node's test rows, encrypted in requests of the size ``run_inference`` uses."""
    r, hospital, model, _, chunk = _he_cls_setup(msg, context)
    x = hospital.x_test
    requests = [
        hospital.client.inference_request(x[s : s + chunk], r, model=model)
        for s in range(0, len(x), chunk)
    ]
    hospital.keep_inference_key(model)
    return _reply(msg, hospital, **{RECORD_KEY: ConfigRecord({"requests": requests})})


@client_app.query("he_cls_reply")
def he_cls_reply(msg: Message, context: Context) -> Message:
    """Decrypts the server's replies (exact logits, for this hospital's own use) and reports how
    they compare with the same head in plaintext: counts and the largest logit error only."""
    r, hospital, model, params, chunk = _he_cls_setup(msg, context)
    c = hospital.client
    replies = list(msg.content[RECORD_KEY]["replies"])
    x, y = hospital.x_test, hospital.y_test
    starts = range(0, len(x), chunk)
    if len(replies) != len(starts):
        raise ProtocolError(f"{len(replies)} he-cls replies for {len(starts)} requests")
    plain = model.logits(c.preprocess(x))
    hospital.restore_inference_key(model)
    try:
        logits = np.concatenate(
            [c.read_logits(data, r, model=model) for data in replies] or [np.empty_like(plain)]
        )
    finally:
        # one reply per session: the key set is gone whether or not the replies were valid
        hospital.discard_inference_key(model)
    rows_per_layout: dict[str, int] = {}
    for s in starts:
        rows = len(x[s : s + chunk])
        layout = inference_layout_for(
            model.kind, rows, c.config.inference_layout, params.poly_modulus_degree
        )
        rows_per_layout[layout] = rows_per_layout.get(layout, 0) + rows
    pred = logits.argmax(axis=1)
    return _reply(
        msg,
        hospital,
        **{RECORD_KEY: ConfigRecord({"client": c.client_id})},
        metrics={
            "rows": len(y),
            "correct-encrypted": int(np.sum(pred == y)),
            "correct-plaintext": int(np.sum(plain.argmax(axis=1) == y)),
            "agree": int(np.sum(pred == plain.argmax(axis=1))),
            **{f"rows-{k}": v for k, v in rows_per_layout.items()},
        },
    )


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    settings = RunSettings.from_run_config(context.run_config)
    FlowerExperiment(grid, settings).run()
