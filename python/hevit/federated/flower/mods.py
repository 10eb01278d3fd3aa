"""Flower Mods of hevit's ClientApp: what every message goes through, whatever its handler.

- :func:`secure_transport_mod`: before a node's first message of a run, its SuperNode's
  connection must be what the run declared (TLS and SuperNode authentication, or
  ``insecure = true``); observed once per run and kept in the run's ``context.state``.
- :func:`peak_memory_mod`: every reply carries the ClientApp process's peak resident memory
  (Flower starts one process per message, so this is that message's peak).
"""

from __future__ import annotations

import json
import resource

from flwr.app import ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable

from .security import observe_transport, require_secure_transport
from .settings import as_bool

__all__ = ["TRANSPORT", "peak_memory_mod", "secure_transport_mod"]

#: context.state entry: the transport this node observed for the run (JSON, Transport.to_dict)
TRANSPORT = "hevit-transport"


def secure_transport_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if TRANSPORT not in context.state:
        transport = observe_transport("node")
        require_secure_transport(
            transport,
            insecure_declared=as_bool(context.run_config.get("insecure", False)),
            where=f"node {context.node_id}'s SuperNode",
        )
        context.state[TRANSPORT] = ConfigRecord({"observed": json.dumps(transport.to_dict())})
    return call_next(msg, context)


def peak_memory_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    if not reply.has_error():
        metrics = reply.content.metric_records.get("metrics")
        if metrics is None:
            reply.content["metrics"] = metrics = MetricRecord()
        # KiB on Linux
        metrics["peak-rss-kb"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return reply
