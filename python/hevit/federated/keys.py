"""The federation's key sets: what hospitals share, and the public part the server receives.

All hospitals hold the same three secret contexts (provisioned by one of them and exchanged over
their own secure channel, outside hevit):

- ``updates``: FedAvg model updates (``update`` preset: N = 4096, small and fast, enough
  precision for flooded model parameters);
- ``aggregation``: sufficient statistics and feature moments (``release`` preset: N = 8192,
  scale 2^80, the precision an exact ridge solve needs after flooding);
- ``inference``: encrypted [CLS] rows for ``he-cls``, with exactly the Galois keys the
  inference plan needs.

The server gets :class:`ServerKeys`, which holds public contexts only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from .. import he
from ..errors import SecretKeyRequiredError

__all__ = ["FederationKeys", "ServerKeys", "KEY_SETS"]

#: The key sets, in file-name order.
KEY_SETS = ("updates", "aggregation", "inference")


@dataclass(frozen=True)
class ServerKeys:
    """Public contexts only; constructing one from a secret context is refused."""

    updates: he.PublicContext
    aggregation: he.PublicContext
    inference: he.PublicContext

    def __post_init__(self) -> None:
        for name in KEY_SETS:
            ctx = getattr(self, name)
            if isinstance(ctx, he.SecretContext):
                raise SecretKeyRequiredError(
                    f"ServerKeys.{name} got a SecretContext: server-side objects may only hold public contexts"
                )
            if not isinstance(ctx, he.PublicContext):
                raise TypeError(f"ServerKeys.{name} must be a PublicContext, got {type(ctx).__name__}")

    def for_strategy(self, strategy: str) -> he.PublicContext | None:
        """The context a strategy's aggregation runs under (``None`` for plain-fedavg)."""
        return {"plain-fedavg": None, "he-fedavg": self.updates}.get(strategy, self.aggregation)

    def to_files(self, directory) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in KEY_SETS:
            (d / f"{name}.pub").write_bytes(getattr(self, name).to_bytes())

    @classmethod
    def from_files(cls, directory) -> ServerKeys:
        d = Path(directory)
        return cls(*(he.PublicContext.from_bytes((d / f"{name}.pub").read_bytes()) for name in KEY_SETS))


@dataclass(frozen=True)
class FederationKeys:
    """The hospitals' shared secret contexts."""

    updates: he.SecretContext
    aggregation: he.SecretContext
    inference: he.SecretContext

    @classmethod
    def generate(cls, *, aggregation_preset: str = "release", inference_preset: str = "sample",
                 inference_layout: str = "sample", dim: int, classes: int,
                 update_preset: str = "update") -> FederationKeys:
        updates = he.SecretContext.generate(he.CkksParams.preset(update_preset))
        aggregation = he.SecretContext.generate(he.CkksParams.preset(aggregation_preset))
        # rows are L2-normalised on the client, so the public norm bound is 1: plans size their
        # weight scale from it (a bound of 64 would cost six bits of logit precision)
        params = he.CkksParams.preset(inference_preset, max_norm=1.0)
        steps = he.LinearPlan.rotation_steps(params, in_dim=dim, out_dim=classes, layout=inference_layout)
        return cls(updates, aggregation, he.SecretContext.generate(params, rotation_steps=steps))

    def for_strategy(self, strategy: str) -> he.SecretContext:
        return self.updates if strategy in ("he-fedavg", "plain-fedavg") else self.aggregation

    def server_keys(self) -> ServerKeys:
        """What the server receives: public contexts, re-parsed from their bytes like a real transfer."""
        return ServerKeys(*(he.PublicContext.from_bytes(getattr(self, f.name).public_context().to_bytes())
                            for f in fields(self)))

    def save(self, directory) -> Path:
        """Writes the secret contexts with mode 0600 (new files only) into a 0700 folder."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in KEY_SETS:
            getattr(self, name).save(d / f"{name}.key")
        return d

    @classmethod
    def load(cls, directory) -> FederationKeys:
        d = Path(directory)
        return cls(*(he.SecretContext.load(d / f"{name}.key") for name in KEY_SETS))
