"""Federated training and encrypted inference: hospitals (clients) and a server without the key.

Strategies (names are the contract): ``plain-fedavg`` (unprotected baseline), ``he-fedavg``
(CKKS-encrypted updates summed on the server), ``he-ridge`` (encrypted sufficient statistics,
ridge head solved exactly in one round) and ``he-cls`` (encrypted inference of any trained head).
Clients and servers exchange serialized :class:`Message` bytes only, so the same objects run in
process (:func:`run_strategy`) and on Flower (``hevit.federated.flower``).
"""

from .client import HospitalClient
from .config import STRATEGIES, FederatedConfig
from .keys import FederationKeys, ServerKeys
from .messages import Message
from .models import LinearHead, MlpHead, centralized_ridge, initial_head, normalize_rows
from .privacy import DPConfig
from .server import AggregationServer, InferenceServer
from .simulation import (
    InferenceRecord,
    MomentsRecord,
    RoundRecord,
    StrategyResult,
    make_clients,
    merge_seconds,
    run_inference,
    run_moments,
    run_strategy,
)

__all__ = [
    "STRATEGIES",
    "AggregationServer",
    "DPConfig",
    "FederatedConfig",
    "FederationKeys",
    "HospitalClient",
    "InferenceRecord",
    "InferenceServer",
    "LinearHead",
    "Message",
    "MlpHead",
    "MomentsRecord",
    "RoundRecord",
    "ServerKeys",
    "StrategyResult",
    "centralized_ridge",
    "initial_head",
    "make_clients",
    "merge_seconds",
    "normalize_rows",
    "run_inference",
    "run_moments",
    "run_strategy",
]
