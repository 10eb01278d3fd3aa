"""A Flower run's settings: ``run_config`` (flat scalar keys) to the objects hevit runs on.

Both apps read the same ``run_config``; the federation's :class:`FederatedConfig` comes from it
the same way on the ServerApp and on every ClientApp, so they agree on rounds, heads, DP and
flooding without a message carrying them.

Keys (defaults in the bundled app's ``pyproject.toml``, see :func:`~hevit.federated.flower.app_dir`):

- what runs: ``strategies`` (comma-separated from ``plain-fedavg``, ``he-fedavg``,
  ``he-ridge``), ``heads`` (``linear``, ``mlp`` or both, for the FedAvg strategies),
  ``num-clients``, ``dim``, ``classes``; ``he-cls`` of every trained head always runs
- training, as :class:`~hevit.federated.FederatedConfig` (dashes for underscores):
  ``rounds``, ``local-epochs``, ``learning-rate`` (0: the head's default), ``batch-size``,
  ``weight-decay``, ``ridge-alpha``, ``hidden``, ``standardize``, ``inference-layout``,
  ``count-scale``, ``quorum`` (0: all), ``seed``; differential privacy with
  ``dp-noise-multiplier`` (0: off), ``dp-clip-norm``, ``dp-delta``; flooding with
  ``flooding-security-bits`` and ``flooding-max-decryptions``
- data: ``features`` (a FeatureSet ``.npz``; each SuperNode takes the part its
  ``partition-id`` node config names, the split ``hevit experiment`` makes), ``test-fraction``,
  ``partition`` (``iid`` or ``dirichlet``), ``dirichlet-alpha``
- keys: ``keys-dir`` (hospitals), ``server-keys-dir`` (public contexts)
- output: ``report-dir`` (``report.json``, ``report.md``, plots), ``result-path`` (optional
  audit JSON: aggregates, what the server parsed, rejections), ``received-dir`` (optional: every
  message the server receives), ``checkpoint-dir`` (optional: server state after every round;
  a run that finds it resumes)
- transport: ``insecure`` (default false). The ServerApp and every node read how their Flower
  process was started (:func:`~hevit.federated.flower.security.observe_transport`) and refuse a
  network without TLS and SuperNode authentication unless ``insecure = true``; the report
  records the declaration and what each side observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...he.flooding import FloodingPolicy
from ..config import STRATEGIES, FederatedConfig
from ..models import HEADS
from ..privacy import DPConfig

__all__ = ["RunSettings", "as_bool", "config_from_run"]

#: run_config keys that map one to one onto FederatedConfig fields, with their types
_CONFIG_KEYS = {
    "rounds": int,
    "local-epochs": int,
    "batch-size": int,
    "weight-decay": float,
    "ridge-alpha": float,
    "hidden": int,
    "standardize": bool,
    "inference-layout": str,
    "count-scale": float,
    "seed": int,
}


def as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def config_from_run(run_config, *, head: str = "linear") -> FederatedConfig:
    """The federation's FederatedConfig from ``run_config`` (``head``: the model being trained)."""
    kwargs = {}
    for key, kind in _CONFIG_KEYS.items():
        if key in run_config:
            value = run_config[key]
            kwargs[key.replace("-", "_")] = as_bool(value) if kind is bool else kind(value)
    learning_rate = float(run_config.get("learning-rate", 0.0))
    quorum = int(run_config.get("quorum", 0))
    noise = float(run_config.get("dp-noise-multiplier", 0.0))
    dp = None
    if noise > 0:
        dp = DPConfig(
            noise,
            clip_norm=float(run_config.get("dp-clip-norm", 1.0)),
            delta=float(run_config.get("dp-delta", 1e-5)),
        )
    default_flooding = FloodingPolicy()
    flooding = FloodingPolicy(
        statistical_security_bits=int(
            run_config.get("flooding-security-bits", default_flooding.statistical_security_bits)
        ),
        max_decryptions=int(
            run_config.get("flooding-max-decryptions", default_flooding.max_decryptions)
        ),
    )
    return FederatedConfig(
        **kwargs,
        head=head,
        learning_rate=learning_rate or None,
        quorum=quorum or None,
        dp=dp,
        flooding=flooding,
    )


def _names(value, allowed, what: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in str(value).split(",") if s.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"{what} must be distinct names from {allowed}, got {value!r}")
    return names


def _partition_name(run_config) -> str:
    from ...data import partition_name

    return partition_name(
        str(run_config.get("partition", "iid")), float(run_config.get("dirichlet-alpha", 0.5))
    )


@dataclass(frozen=True)
class RunSettings:
    """What the ServerApp runs and where it writes (see the module docstring for the keys)."""

    strategies: tuple[str, ...]
    heads: tuple[str, ...]
    clients: int
    dim: int
    classes: int
    config: FederatedConfig
    #: how training rows are dealt to the hospitals, as the report names it
    partition: str
    timeout: float
    insecure: bool
    report_dir: Path | None
    result_path: Path | None
    received_dir: Path | None
    checkpoint_dir: Path | None
    server_keys_dir: Path

    @classmethod
    def from_run_config(cls, run_config) -> RunSettings:
        def path(key: str) -> Path | None:
            value = str(run_config.get(key, ""))
            return Path(value) if value else None

        server_keys = path("server-keys-dir")
        if server_keys is None:
            raise ValueError("run_config needs server-keys-dir (the public contexts)")
        clients = int(run_config["num-clients"])
        if clients < 1:
            raise ValueError(f"num-clients must be >= 1, got {clients}")
        return cls(
            strategies=_names(run_config["strategies"], STRATEGIES, "strategies"),
            heads=_names(run_config.get("heads", "linear"), HEADS, "heads"),
            clients=clients,
            dim=int(run_config["dim"]),
            classes=int(run_config["classes"]),
            config=config_from_run(run_config),
            partition=_partition_name(run_config),
            timeout=float(run_config.get("timeout", 600.0)),
            insecure=as_bool(run_config.get("insecure", False)),
            report_dir=path("report-dir"),
            result_path=path("result-path"),
            received_dir=path("received-dir"),
            checkpoint_dir=path("checkpoint-dir"),
            server_keys_dir=server_keys,
        )

    @property
    def client_ids(self) -> list[str]:
        return [f"client-{k}" for k in range(self.clients)]

    def runs(self) -> list[tuple[str, str]]:
        """(strategy, head) pairs in the order ``hevit experiment`` runs them."""
        return [
            (name, head)
            for name in self.strategies
            for head in (("linear",) if name == "he-ridge" else self.heads)
        ]
