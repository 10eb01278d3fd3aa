"""A hospital on Flower: its HospitalClient, rebuilt for each message from what the node keeps.

Flower 1.41's SuperNode starts one ClientApp process per message, so nothing stays in memory
between messages. What a hospital keeps lives in the run's ``context.state``, which the
SuperNode holds for the run and hands to every ClientApp process of it:

- its data partition (the feature file is read and split once per node and run, not per
  message);
- the federation's feature moments it released (the moments round);
- its own copy of each global model it released (one decryption per hospital per round, as in
  the in-process federation; the next round trains from that copy).

Secret keys are not put there: the context travels between the SuperNode and each ClientApp
process over Flower's local runtime API, which is not where a secret key belongs. They stay in
the key folder (files 0600) and each process reads only the key set its message needs
(:class:`~hevit.federated.keys.KeyFolder`: 9-25 ms per set, the two-layer head's set 0.29 s).
Each hospital's release ledger (commitments, release count) lives beside the keys (``release-ledger-<id>.json``), so it
survives a SuperNode restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context

from ...errors import ProtocolError
from ...protocol import HospitalIdentity, KeyHolder, ReleaseLedger, Roster
from ..client import HospitalClient
from ..keys import KeyFolder
from ..models import initial_head
from .settings import config_from_run

__all__ = [
    "IDENTITIES",
    "LEDGER_FILE",
    "ROSTER_FILE",
    "FlowerHospital",
    "client_partition",
    "ledger_file",
]

#: the hospital's release ledger (commitments, budget), kept in its key folder across ClientApp
#: processes: one file per hospital id
LEDGER_FILE = "release-ledger-{client}.json"
#: the federation's roster and the hospitals' signing keys in a key folder (``hevit keygen``)
ROSTER_FILE = "roster.json"
IDENTITIES = "identities"
#: context.state entries (one run)
PARTITION = "hevit-partition"
PARTITION_INFO = "hevit-partition-info"
MOMENTS = "hevit-moments"
#: the digests of the aggregates this node verified and the rounds it contributed to (public)
CHAIN = "hevit-chain"


def ledger_file(keys_dir, client: str) -> Path:
    return Path(keys_dir) / LEDGER_FILE.format(client=client)


def client_partition(run_config, partition_id: int) -> dict:
    """One SuperNode's rows: (x, y, x-test, y-test) arrays plus the feature file's class names
    and metadata; the split and client parts ``hevit experiment`` makes for the same seed."""
    from ...data import client_parts, stratified_split
    from ...features import FeatureSet

    fs = FeatureSet.load(run_config["features"])
    seed = int(run_config["seed"])
    clients = int(run_config["num-clients"])
    if not 0 <= partition_id < clients:
        raise ValueError(f"partition-id {partition_id} is not one of the {clients} clients")
    tr, te = stratified_split(
        fs.labels, test_fraction=float(run_config["test-fraction"]), seed=seed
    )
    x, y = fs.features.astype(np.float64)[tr], fs.labels[tr]
    xt, yt = fs.features.astype(np.float64)[te], fs.labels[te]
    parts, test_parts = client_parts(
        y,
        len(xt),
        clients=clients,
        seed=seed,
        partition=str(run_config.get("partition", "iid")),
        dirichlet_alpha=float(run_config.get("dirichlet-alpha", 0.5)),
    )
    part, test_part = parts[partition_id], test_parts[partition_id]
    return {
        "x": x[part],
        "y": y[part],
        "x-test": xt[test_part],
        "y-test": yt[test_part],
        "class-names": list(fs.classes),
        "metadata": fs.metadata,
    }


@dataclass
class FlowerHospital:
    """One message's view of a hospital: its client, test rows and the run's node state."""

    client: HospitalClient
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    metadata: dict
    context: Context

    @classmethod
    def from_context(cls, context: Context, *, head: str = "linear") -> FlowerHospital:
        run = context.run_config
        partition = int(context.node_config["partition-id"])
        state = context.state
        if PARTITION not in state:  # the first message of this run on this node
            rows = client_partition(run, partition)
            state[PARTITION] = ArrayRecord(
                {k: Array(np.ascontiguousarray(rows[k])) for k in ("x", "y", "x-test", "y-test")}
            )
            state[PARTITION_INFO] = ConfigRecord(
                {
                    "class-names": rows["class-names"],
                    "metadata": json.dumps(rows["metadata"], default=str),
                }
            )
        arrays = state[PARTITION]
        info = state[PARTITION_INFO]
        class_names = [str(c) for c in info["class-names"]]
        config = config_from_run(run, head=head)
        client_id = f"client-{partition}"
        keys_dir = Path(run["keys-dir"])
        keys = KeyFolder(keys_dir)
        keyholder = KeyHolder(
            HospitalIdentity.load(keys_dir / IDENTITIES / f"{client_id}.key"),
            Roster.load(keys_dir / ROSTER_FILE),
            keys,
            policy=config.flooding,
            # Flower starts a ClientApp process per message: commitments and the release count
            # live beside the keys
            ledger=ReleaseLedger(ledger_file(keys_dir, client_id)),
        )
        client = HospitalClient(
            client_id,
            arrays["x"].numpy(),
            arrays["y"].numpy(),
            classes=len(class_names),
            keys=keys,
            config=config,
            clients=int(run["num-clients"]),
            keyholder=keyholder,
        )
        if MOMENTS in state:
            client.adopt_moments(state[MOMENTS]["mean"].numpy(), state[MOMENTS]["std"].numpy())
        if CHAIN in state:
            chain = json.loads(str(state[CHAIN]["json"]))
            for task, rounds in chain["digests"].items():
                client.digests[task] = {int(r): bytes.fromhex(d) for r, d in rounds.items()}
            client.contributed = set(chain["contributed"])
        return cls(
            client,
            arrays["x-test"].numpy(),
            arrays["y-test"].numpy(),
            class_names,
            json.loads(str(info["metadata"])),
            context,
        )

    def require_moments(self) -> None:
        """Training on standardised features needs the moments this node released in the
        moments round of this run; a node that lost them (a restarted SuperNode) must not train
        on unstandardised rows."""
        if self.client.config.standardize and self.client.mean is None:
            raise ProtocolError(
                f"{self.client.client_id} has no feature moments for this run (its SuperNode "
                "restarted after the moments round?): rerun the run"
            )

    def keep_chain(self) -> None:
        """Keeps the digests this node verified and the rounds it contributed to for the next
        messages of the run (public facts; the ledger in the key folder is the authority)."""
        c = self.client
        body = {
            "digests": {t: {str(r): d.hex() for r, d in rs.items()} for t, rs in c.digests.items()},
            "contributed": sorted(c.contributed),
        }
        self.context.state[CHAIN] = ConfigRecord({"json": json.dumps(body)})

    def _inference_key_file(self) -> Path:
        return Path(self.context.run_config["keys-dir"]) / f"he-cls-{self.client.client_id}.key"

    def keep_inference_key(self, model) -> None:
        """Keeps this he-cls session's secret key set between the request and the reply message
        (each a separate ClientApp process) in the key folder, mode 0600."""
        path = self._inference_key_file()
        path.unlink(missing_ok=True)
        self.client._inference_keys(model).save(path)

    def restore_inference_key(self, model) -> None:
        from ... import he

        path = self._inference_key_file()
        if not path.exists():
            raise ProtocolError(f"{self.client.client_id} holds no he-cls key set for this reply")
        self.client._session_keys[self.client._session_key_name(model)] = he.SecretContext.load(
            path
        )

    def discard_inference_key(self, model) -> None:
        self.client.end_inference(model)
        self._inference_key_file().unlink(missing_ok=True)

    def keep_moments(self) -> None:
        self.context.state[MOMENTS] = ArrayRecord(
            {"mean": Array(self.client.mean), "std": Array(self.client.std)}
        )

    # ------------------------------------------------------------------ global model copies
    def initial_model(self):
        c = self.client
        return initial_head(
            c.config.head, c.classes, c.dim, hidden=c.config.hidden, seed=c.config.seed
        )

    def model_copy(self, strategy: str, round_: int):
        """This hospital's released copy of the global model of ``round_`` (its initial model for
        round 0), or None when this node does not hold it (it joined or restarted later)."""
        if round_ == 0:
            return self.initial_model()
        record = self.context.state.get(_model_key(strategy, self.client.config.head))
        if record is None or int(record["round"].numpy()[0]) != round_:
            return None
        return self.initial_model().with_vector(record["vector"].numpy())

    def keep_model(self, strategy: str, round_: int, model) -> None:
        self.context.state[_model_key(strategy, self.client.config.head)] = ArrayRecord(
            {"vector": Array(model.to_vector()), "round": Array(np.array([round_]))}
        )

    def read_global_model(self, strategy: str, aggregate: bytes, round_: int):
        """Decrypts (and floods, counted) the aggregate of ``round_`` into this hospital's copy of
        the global model and keeps it for the next round."""
        c = self.client
        if strategy == "he-ridge":
            model = c.read_ridge_aggregate(aggregate, round_)
        else:
            base = self.model_copy(strategy, round_ - 1)
            if base is None:
                if c.config.dp is not None:
                    # DP aggregates sum clipped deltas: the new model is the previous copy plus
                    # their mean, and this node no longer has that copy
                    raise ProtocolError(
                        f"{c.client_id} does not hold its copy of round {round_ - 1}'s model, "
                        "which a DP FedAvg aggregate (a sum of deltas) needs"
                    )
                base = self.initial_model()  # its shape only: the aggregate holds the whole model
            model = c.read_fedavg_aggregate(aggregate, strategy, base, round_)
        self.keep_model(strategy, round_, model)
        return model

    def seconds_metrics(self) -> dict[str, float]:
        """This message's wall time per phase (train, encrypt, decrypt), for the report."""
        return {f"seconds-{phase}": float(s) for phase, s in self.client.seconds.items()}


def _model_key(strategy: str, head: str) -> str:
    return f"hevit-model-{strategy}-{head}"
