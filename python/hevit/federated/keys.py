"""The federation's key sets: what hospitals share, and the public part the server receives.

All hospitals hold the same two secret contexts (provisioned by one of them and exchanged over
their own secure channel, outside hevit): one for aggregating updates and statistics, one for
encrypted inference (with exactly the Galois keys the inference plan needs). The server gets
:class:`ServerKeys`, which holds public contexts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import he
from ..errors import SecretKeyRequiredError

__all__ = ["FederationKeys", "ServerKeys"]


@dataclass(frozen=True)
class ServerKeys:
    """Public contexts only; constructing one from a secret context is refused."""

    aggregation: he.PublicContext
    inference: he.PublicContext

    def __post_init__(self) -> None:
        for name in ("aggregation", "inference"):
            ctx = getattr(self, name)
            if isinstance(ctx, he.SecretContext):
                raise SecretKeyRequiredError(
                    f"ServerKeys.{name} got a SecretContext: server-side objects may only hold public contexts"
                )
            if not isinstance(ctx, he.PublicContext):
                raise TypeError(f"ServerKeys.{name} must be a PublicContext, got {type(ctx).__name__}")

    def to_files(self, directory) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "aggregation.pub").write_bytes(self.aggregation.to_bytes())
        (d / "inference.pub").write_bytes(self.inference.to_bytes())

    @classmethod
    def from_files(cls, directory) -> ServerKeys:
        d = Path(directory)
        return cls(he.PublicContext.from_bytes((d / "aggregation.pub").read_bytes()),
                   he.PublicContext.from_bytes((d / "inference.pub").read_bytes()))


@dataclass(frozen=True)
class FederationKeys:
    """The hospitals' shared secret contexts."""

    aggregation: he.SecretContext
    inference: he.SecretContext

    @classmethod
    def generate(cls, *, aggregation_preset: str, inference_preset: str, inference_layout: str,
                 dim: int, classes: int) -> FederationKeys:
        agg = he.SecretContext.generate(he.CkksParams.preset(aggregation_preset))
        # rows are L2-normalised on the client, so the public norm bound is 1: plans size their
        # weight scale from it (a bound of 64 would cost six bits of logit precision)
        params = he.CkksParams.preset(inference_preset, max_norm=1.0)
        steps = he.LinearPlan.rotation_steps(params, in_dim=dim, out_dim=classes, layout=inference_layout)
        return cls(agg, he.SecretContext.generate(params, rotation_steps=steps))

    def server_keys(self) -> ServerKeys:
        """What the server receives: public contexts, re-parsed from their bytes like a real transfer."""
        return ServerKeys(he.PublicContext.from_bytes(self.aggregation.public_context().to_bytes()),
                          he.PublicContext.from_bytes(self.inference.public_context().to_bytes()))

    def save(self, directory) -> Path:
        """Writes both secret contexts with mode 0600 (new files only)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.aggregation.save(d / "aggregation.key")
        self.inference.save(d / "inference.key")
        return d

    @classmethod
    def load(cls, directory) -> FederationKeys:
        d = Path(directory)
        return cls(he.SecretContext.load(d / "aggregation.key"), he.SecretContext.load(d / "inference.key"))
