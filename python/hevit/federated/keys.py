"""The federation's key sets: what hospitals share, and the public part the server receives.

All hospitals hold the same three secret contexts (provisioned by one of them and exchanged over
their own secure channel, outside hevit):

- ``updates``: FedAvg model updates (``update`` preset: N = 4096, small and fast, enough
  precision for flooded model parameters);
- ``aggregation``: sufficient statistics and feature moments (``release`` preset: N = 8192,
  scale 2^80, the precision an exact ridge solve needs after flooding);
- ``inference``: encrypted [CLS] rows for ``he-cls`` of linear heads, with exactly the Galois
  keys the inference plan needs;
- ``mlp_inference`` (only when the federation trains the two-layer head): encrypted rows for
  ``he-cls`` of that head (``mlp`` preset, relinearisation and conjugation keys, and the rotation
  keys of the sample layout).

The server gets :class:`ServerKeys`, which holds public contexts only.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, fields
from pathlib import Path

from .. import he
from ..errors import ProtocolError, SecretKeyRefusedError
from ..he.context import check_private_folder

__all__ = ["KEY_SETS", "FederationKeys", "KeyFolder", "ServerKeys"]

#: The key sets every federation has, in file-name order.
KEY_SETS = ("updates", "aggregation", "inference")
#: The optional key set of the two-layer head.
MLP_KEY_SET = "mlp_inference"


@dataclass(frozen=True)
class ServerKeys:
    """Public contexts only; constructing one from a secret context is refused."""

    updates: he.PublicContext
    aggregation: he.PublicContext
    inference: he.PublicContext
    mlp_inference: he.PublicContext | None = None

    def __post_init__(self) -> None:
        for name in KEY_SETS + ((MLP_KEY_SET,) if self.mlp_inference is not None else ()):
            ctx = getattr(self, name)
            if isinstance(ctx, he.SecretContext):
                raise SecretKeyRefusedError(
                    f"ServerKeys.{name} got a SecretContext: server-side objects may only hold public contexts"
                )
            if not isinstance(ctx, he.PublicContext):
                raise TypeError(
                    f"ServerKeys.{name} must be a PublicContext, got {type(ctx).__name__}"
                )

    def for_strategy(self, strategy: str) -> he.PublicContext | None:
        """The context a strategy's aggregation runs under (``None`` for plain-fedavg)."""
        table = {
            "plain-fedavg": None,
            "he-fedavg": self.updates,
            "he-ridge": self.aggregation,
            "moments": self.aggregation,
        }
        if strategy not in table:
            raise ValueError(f"no aggregation key set for strategy {strategy!r}")
        return table[strategy]

    def for_head(self, head) -> he.PublicContext:
        """The context ``he-cls`` of ``head`` runs under."""
        return inference_keys_for(self, head)

    def to_files(self, directory) -> None:
        """Writes the public contexts (``*.pub``); refuses a folder that holds secret key files."""
        d = Path(directory)
        if any(d.glob("*.key")):
            raise PermissionError(
                f"{d} holds secret key files (*.key): the server's folder must not; use another"
            )
        d.mkdir(parents=True, exist_ok=True)
        for name in KEY_SETS + ((MLP_KEY_SET,) if self.mlp_inference is not None else ()):
            (d / f"{name}.pub").write_bytes(getattr(self, name).to_bytes())

    @classmethod
    def from_files(cls, directory) -> ServerKeys:
        d = Path(directory)
        mlp = d / f"{MLP_KEY_SET}.pub"
        return cls(
            *(he.PublicContext.from_bytes((d / f"{name}.pub").read_bytes()) for name in KEY_SETS),
            mlp_inference=he.PublicContext.from_bytes(mlp.read_bytes()) if mlp.exists() else None,
        )


def inference_keys_for(keys, head):
    """The key set ``he-cls`` of ``head`` runs under, in a ServerKeys or a FederationKeys: the
    ``mlp_inference`` set for a two-layer head, ``inference`` for every other head. The one rule
    hospitals and server share."""
    if getattr(head, "kind", "linear") != "mlp":
        return keys.inference
    if keys.mlp_inference is None:
        raise ProtocolError(
            "these keys have no mlp_inference key set (generate the federation's keys with "
            "mlp_hidden, i.e. head='mlp')"
        )
    return keys.mlp_inference


@dataclass(frozen=True)
class FederationKeys:
    """The hospitals' shared secret contexts."""

    updates: he.SecretContext
    aggregation: he.SecretContext
    inference: he.SecretContext
    mlp_inference: he.SecretContext | None = None

    @classmethod
    def generate(
        cls,
        *,
        aggregation_preset: str = "release",
        inference_preset: str = "latency",
        inference_layout: str = "auto",
        dim: int,
        classes: int,
        update_preset: str = "update",
        mlp_hidden: int | None = None,
        mlp_inference_preset: str = "mlp",
    ) -> FederationKeys:
        """Fresh key sets; with ``mlp_hidden`` also the ``mlp_inference`` key set for a two-layer
        head of that hidden size. ``inference_layout`` decides the evaluation keys: rotation keys
        for ``sample`` only (``auto`` uses the keyless batch and coefficient layouts for linear
        heads, and the sample layout's keys for the two-layer head's small requests)."""
        updates = he.SecretContext.generate(he.CkksParams.preset(update_preset))
        aggregation = he.SecretContext.generate(he.CkksParams.preset(aggregation_preset))
        # rows are L2-normalised on the client, so the public norm bound is 1: plans size their
        # weight scale from it (a bound of 64 would cost six bits of logit precision)
        params = he.CkksParams.preset(inference_preset, max_norm=1.0)
        if (
            inference_layout in ("auto", "coefficient")
            and len(params.coeff_modulus_bits) - params.supports_rotations > 1
        ):
            raise ValueError(
                f"inference layout {inference_layout!r} uses the coefficient layout, which needs a preset "
                f"with one data prime ('latency', 'latency-precise' or 'throughput'), not {inference_preset!r}"
            )
        linear_layout = (
            "sample" if inference_layout == "sample" else "batch"
        )  # batch/coefficient: no key
        steps = he.LinearPlan.required_rotation_steps(
            params, in_dim=dim, out_dim=classes, layout=linear_layout
        )
        mlp = None
        if mlp_hidden is not None:
            mlp_params = he.CkksParams.preset(mlp_inference_preset, max_norm=1.0)
            keys = he.MlpPlan.evaluation_keys(
                mlp_params,
                in_dim=dim,
                hidden=mlp_hidden,
                out_dim=classes,
                layout="batch" if inference_layout == "batch" else "sample",
            )
            mlp = he.SecretContext.generate(mlp_params, **keys.as_kwargs())
        return cls(
            updates, aggregation, he.SecretContext.generate(params, rotation_steps=steps), mlp
        )

    def server_keys(self) -> ServerKeys:
        """What the server receives: public contexts, re-parsed from their bytes like a real transfer."""
        public = {
            f.name: None
            if getattr(self, f.name) is None
            else he.PublicContext.from_bytes(getattr(self, f.name).public_context().to_bytes())
            for f in fields(self)
        }
        return ServerKeys(**public)

    def save(self, directory) -> Path:
        """Writes the secret contexts with mode 0600 (new files only) into a 0700 folder. An
        existing folder must be private (no group/other access) and hold no server files."""
        d = Path(directory)
        if d.exists():
            check_private_folder(d, what="the hospital key folder")
            if d.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise PermissionError(
                    f"the hospital key folder {d} is readable by other users; run `chmod 700 {d}`"
                )
            if any(d.glob("*.pub")):
                raise PermissionError(
                    f"{d} holds server files (*.pub): hospital and server keys need separate folders"
                )
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in KEY_SETS + ((MLP_KEY_SET,) if self.mlp_inference is not None else ()):
            getattr(self, name).save(d / f"{name}.key")
        return d

    @classmethod
    def load(cls, directory) -> FederationKeys:
        d = Path(directory)
        mlp = d / f"{MLP_KEY_SET}.key"
        return cls(
            *(he.SecretContext.load(d / f"{name}.key") for name in KEY_SETS),
            mlp_inference=he.SecretContext.load(mlp) if mlp.exists() else None,
        )


class KeyFolder:
    """A hospital's key folder (``FederationKeys.save``) read on demand: each key set is loaded
    the first time it is used, then kept. It offers the attributes of :class:`FederationKeys`.

    A Flower ClientApp process serves one message and needs one key set; loading all of them
    would parse the two-layer head's 49 MB of evaluation keys for every FedAvg update (0.29 of
    0.33 s at 768 -> 64 -> 3, measured).
    """

    def __init__(self, directory) -> None:
        self.directory = Path(directory)
        if not (self.directory / "updates.key").exists():
            raise FileNotFoundError(
                f"{self.directory} is not a hospital key folder (no updates.key; see "
                "`hevit keygen`)"
            )
        self._loaded: dict[str, he.SecretContext | None] = {}

    def _key_set(self, name: str) -> he.SecretContext | None:
        if name not in self._loaded:
            path = self.directory / f"{name}.key"
            if name == MLP_KEY_SET and not path.exists():
                self._loaded[name] = None  # optional: only federations with the two-layer head
            else:
                self._loaded[name] = he.SecretContext.load(path)
        return self._loaded[name]

    @property
    def updates(self) -> he.SecretContext:
        return self._key_set("updates")

    @property
    def aggregation(self) -> he.SecretContext:
        return self._key_set("aggregation")

    @property
    def inference(self) -> he.SecretContext:
        return self._key_set("inference")

    @property
    def mlp_inference(self) -> he.SecretContext | None:
        return self._key_set(MLP_KEY_SET)

    @property
    def loaded(self) -> tuple[str, ...]:
        """The key sets read so far."""
        return tuple(self._loaded)
