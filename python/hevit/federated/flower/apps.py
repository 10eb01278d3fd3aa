"""The Flower ``ServerApp`` and ``ClientApp`` (Message API; settings in ``run_config``).

run_config keys (defaults in the bundled app's ``pyproject.toml``, see :func:`app_dir`):

- ``strategy``: ``he-fedavg`` or ``he-ridge``; ``num-clients``; ``rounds``; ``quorum`` (0 = all);
  ``seed``; ``local-epochs``; ``learning-rate``; ``test-fraction``
- ``features``: path of a FeatureSet ``.npz`` (``hevit extract``); each SuperNode takes the
  IID part named by its ``partition-id`` node config (the same split the in-process run makes)
- ``keys-dir``: the hospitals' key folder (``FederationKeys.save``), read by ClientApps only;
  each hospital's count of flooded releases is kept there (``decryption-budget.json``)
- ``server-keys-dir``: the public contexts (``ServerKeys.to_files``), read by the ServerApp
- ``result-path``: where the ServerApp writes the per-round metrics and aggregates (JSON)
- ``received-dir``: optional folder where the ServerApp stores every message it receives
- ``checkpoint-path``: optional server state file, rewritten atomically after every round; a run
  that finds it continues after its last completed round (a restarted SuperLink or ServerApp)
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ...he.flooding import DecryptionBudget
from ..client import HospitalClient, fedavg_vector_length
from ..config import FederatedConfig
from ..keys import FederationKeys, ServerKeys
from ..models import LinearHead, ridge_statistics_length
from .strategy import RECORD_KEY, HevitStrategy, aggregate_bytes

__all__ = ["client_app", "client_partition", "config_from_run", "server_app"]

#: the hospital's flooded-release count, kept in its key folder across ClientApp processes
BUDGET_FILE = "decryption-budget.json"

client_app = ClientApp()
server_app = ServerApp()


def config_from_run(run_config) -> FederatedConfig:
    quorum = int(run_config.get("quorum", 0)) or None
    return FederatedConfig(
        rounds=int(run_config["rounds"]),
        local_epochs=int(run_config["local-epochs"]),
        learning_rate=float(run_config["learning-rate"]),
        quorum=quorum,
        seed=int(run_config["seed"]),
        standardize=False,
    )


def client_partition(run_config, partition_id: int):
    """(train x, train y, test x, test y) of one partition: the experiment's split and IID parts."""
    from ...data import iid_partition, stratified_split
    from ...features import FeatureSet

    fs = FeatureSet.load(run_config["features"])
    seed = int(run_config["seed"])
    clients = int(run_config["num-clients"])
    tr, te = stratified_split(
        fs.labels, test_fraction=float(run_config["test-fraction"]), seed=seed
    )
    x, y = fs.features.astype(np.float64)[tr], fs.labels[tr]
    xt, yt = fs.features.astype(np.float64)[te], fs.labels[te]
    part = iid_partition(np.arange(len(x)), clients=clients, seed=seed)[partition_id]
    test_part = iid_partition(np.arange(len(xt)), clients=clients, seed=seed + 1)[partition_id]
    return x[part], y[part], xt[test_part], yt[test_part], len(fs.classes)


def _hospital(context: Context) -> tuple[HospitalClient, np.ndarray, np.ndarray]:
    run = context.run_config
    partition = int(context.node_config["partition-id"])
    x, y, xt, yt, classes = client_partition(run, partition)
    config = config_from_run(run)
    keys = FederationKeys.load(run["keys-dir"])
    client = HospitalClient(
        f"client-{partition}",
        x,
        y,
        classes=classes,
        keys=keys,
        config=config,
        clients=int(run["num-clients"]),
        # Flower starts a ClientApp process per message: the release count lives beside the keys
        decryption_budget=DecryptionBudget(Path(run["keys-dir"]) / BUDGET_FILE),
    )
    return client, xt, yt


def _global_head(
    client: HospitalClient, strategy: str, aggregate: bytes, round_: int
) -> LinearHead:
    if strategy == "he-ridge":
        return client.read_ridge_aggregate(aggregate, round_)
    return client.read_fedavg_aggregate(
        aggregate, strategy, LinearHead.zeros(client.classes, client.dim), round_
    )


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    client, _, _ = _hospital(context)
    record = msg.content[RECORD_KEY]
    r, strategy = int(record["round"]), str(record["strategy"])
    aggregate = aggregate_bytes(msg.content["arrays"]) if "arrays" in msg.content else b""
    if strategy == "he-ridge":
        data = client.statistics_message(r)
    else:
        head = (
            LinearHead.zeros(client.classes, client.dim)
            if r == 1
            else _global_head(client, strategy, aggregate, r - 1)
        )
        data = client.update_message(strategy, head, r)
    return Message(
        RecordDict(
            {
                RECORD_KEY: ConfigRecord({"message": data}),
                # this ClientApp process's peak resident memory (Flower starts one per message)
                "metrics": MetricRecord({"peak-rss-kb": _peak_rss_kb()}),
            }
        ),
        reply_to=msg,
    )


def _peak_rss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    client, xt, yt = _hospital(context)
    record = msg.content[RECORD_KEY]
    aggregate = aggregate_bytes(msg.content["arrays"])
    head = _global_head(client, str(record["strategy"]), aggregate, int(record["round"]))
    correct = int(np.sum(head.predict(client.preprocess(xt)) == yt))
    return Message(
        RecordDict({"metrics": MetricRecord({"correct": correct, "total": len(yt)})}), reply_to=msg
    )


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    run = context.run_config
    server_keys = ServerKeys.from_files(run["server-keys-dir"])  # public contexts only
    clients = [f"client-{k}" for k in range(int(run["num-clients"]))]
    dim, classes = int(run["dim"]), int(run["classes"])
    expected_length = (
        ridge_statistics_length(dim, classes)
        if run["strategy"] == "he-ridge"
        else fedavg_vector_length(LinearHead.zeros(classes, dim))
    )
    checkpoint = str(run.get("checkpoint-path", "")) or None
    strategy = HevitStrategy(
        str(run["strategy"]),
        server_keys.for_strategy(str(run["strategy"])),
        clients=clients,
        quorum=int(run.get("quorum", 0)) or None,
        # with a quorum, rounds start once that many nodes are connected (a lost node must
        # not stall the federation); without one, every registered hospital is awaited
        min_nodes=int(run.get("quorum", 0)) or None,
        received_dir=str(run.get("received-dir", "")) or None,
        expected_length=expected_length,
        checkpoint=checkpoint,
        # a restarted SuperLink or ServerApp continues from the last completed round
        resume=checkpoint is not None and Path(checkpoint).exists(),
    )
    rounds = 1 if run["strategy"] == "he-ridge" else int(run["rounds"])
    done = strategy.round_offset
    accuracy: dict[int, float] = {}
    if done < rounds:
        # the model of the last completed round travels in the arrays Flower starts from
        initial = (
            ArrayRecord()
            if done == 0
            else ArrayRecord(
                {
                    "aggregate": Array(
                        np.frombuffer(strategy.server.completed[-1].aggregate, dtype=np.uint8)
                    )
                }
            )
        )
        result = strategy.start(
            grid, initial, num_rounds=rounds - done, timeout=float(run.get("timeout", 600))
        )
        accuracy = {
            done + int(r): float(m["accuracy"])
            for r, m in result.evaluate_metrics_clientapp.items()
        }
    out = {
        "strategy": strategy.name,
        "resumed_after_round": done,
        "rounds": [s.round for s in strategy.server.completed],
        "contributors": [s.contributors for s in strategy.server.completed],
        "bytes_up": [s.bytes_up for s in strategy.server.completed],
        # server-side seconds of each round, from its opening to its aggregate
        "seconds": [s.seconds for s in strategy.server.completed],
        # peak resident memory of each node's ClientApp processes in this run
        "peak_rss_mb_per_node": {
            str(n): kb / 1024 for n, kb in sorted(strategy.peak_rss_kb.items())
        },
        "accuracy": accuracy,
        "aggregates": {r: base64.b64encode(a).decode() for r, a in strategy.aggregates.items()},
        "received_kinds": strategy.received_kinds,
        "rejections": [vars(r) for r in strategy.server.rejections],
    }
    Path(run["result-path"]).write_text(json.dumps(out))
