"""Flower's Grid in one process: the ServerApp's messages go straight to the ClientApp with each
node's own Context (run config, node config, the state its SuperNode would keep). Fast enough
for every CI run; the real deployment test covers processes, TLS and authentication."""

from __future__ import annotations

import tomllib
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from hevit.federated.flower import app_dir
from hevit.federated.flower.apps import client_app


def bundled_run_config(**overrides) -> dict:
    with open(app_dir() / "pyproject.toml", "rb") as f:
        return {**tomllib.load(f)["tool"]["flwr"]["app"]["config"], **overrides}


class LoopbackGrid:
    """``tamper(message, reply) -> reply`` stands for a hostile node: it may rewrite any reply."""

    def __init__(self, run_config: dict, nodes: int, *, tamper=None, first_node_id: int = 101):
        self.run_config = run_config
        self.contexts = {
            first_node_id + k: Context(
                1, first_node_id + k, {"partition-id": k}, RecordDict(), run_config
            )
            for k in range(nodes)
        }
        self.tamper = tamper
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        replies = []
        for msg in messages:
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            TaskIdentity.node_id = node  # the reply's source, as on that SuperNode
            try:
                reply = client_app(message=msg, context=self.contexts[node])
            except Exception as exc:  # what Flower's ClientApp runtime does with an exception
                reply = Message(
                    Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc)}:<'{exc}'>"),
                    reply_to=msg,
                )
            finally:
                TaskIdentity.node_id = 0
            if self.tamper is not None:
                reply = self.tamper(msg, reply)
            replies.append(reply)
        return replies


def task_identity(monkeypatch) -> None:
    """Flower messages read the process's task identity (set by Flower's runtime); a test sets
    it for its own duration."""
    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


def assert_same_numbers(flower: dict, local: dict) -> None:
    """Every number of the two reports that does not depend on a fresh noise draw or a clock."""
    for key in ("clients", "classes", "train_rows", "test_rows", "seed", "partition"):
        assert flower[key] == local[key], key
    assert flower["client_class_balance"] == local["client_class_balance"]
    assert flower["config"] == local["config"]
    if local["standardization"] is not None:
        for key in ("contributors", "bytes_up", "bytes_down"):
            assert flower["standardization"][key] == local["standardization"][key], key
    assert [(s["strategy"], s["head"]) for s in flower["strategies"]] == [
        (s["strategy"], s["head"]) for s in local["strategies"]
    ]
    for f, s in zip(flower["strategies"], local["strategies"], strict=True):
        name = f"{s['strategy']}/{s['head']}"
        # the hospitals' copies differ by their flooding draws only; the test rows are
        # far enough from the decision boundaries that no prediction flips
        assert [r["accuracy"] for r in f["rounds"]] == [r["accuracy"] for r in s["rounds"]], (
            name,
            [r["accuracy"] for r in f["rounds"]],
            [r["accuracy"] for r in s["rounds"]],
        )
        for key in ("round", "contributors", "dropped", "bytes_up", "bytes_down"):
            assert [r[key] for r in f["rounds"]] == [r[key] for r in s["rounds"]], (name, key)
        for key in ("bytes_per_round", "final_accuracy", "epsilon", "parameters", "trained"):
            assert f[key] == s[key], (name, key)
        fi, si = f["inference"], s["inference"]
        for key in (
            "preset",
            "layout",
            "head",
            "rows",
            "accuracy_encrypted",
            "accuracy_plaintext",
            "agreement",
            "bytes_up_per_image",
            "bytes_down_per_image",
            "key_switches",
            "rows_per_layout",
        ):
            assert fi[key] == si[key], (name, key)
        assert fi["agreement"] == 1.0
