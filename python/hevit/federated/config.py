"""Settings of a federated run: one frozen object shared by clients, server and reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..he.flooding import FloodingPolicy
from .privacy import DPConfig

__all__ = [
    "INFERENCE_LAYOUTS",
    "STRATEGIES",
    "FederatedConfig",
    "inference_chunk_rows",
    "inference_layout_for",
]

#: Layouts of he-cls: one of the three, or ``auto`` (chosen per request by its row count).
INFERENCE_LAYOUTS = ("auto", "batch", "sample", "coefficient")

#: ``auto`` he-cls layout, linear heads: the coefficient layout costs about 0.23 ms per row at
#: N = 4096 end to end (one row per ciphertext); the batch layout's cost is fixed per group of N
#: rows (about 0.115 s for 768 features: 768 ciphertexts encrypted, sent and multiplied). They
#: cross near 500 rows (2 cores, latency preset, 768 -> 3): coefficient up to N / 8 rows.
COEFFICIENT_ROWS_PER_N = 1 / 8
#: ``auto`` he-cls layout, the two-layer head: the sample layout costs about 0.15 s per
#: ciphertext of two rows (35 key switches at N = 8192), the batch layout about 3 s per group of
#: N rows. Sample up to this many rows.
MLP_SAMPLE_MAX_ROWS = 16


def inference_layout_for(
    head_kind: str, rows: int, requested: str, poly_modulus_degree: int
) -> str:
    """The layout of one he-cls request: ``requested`` unless it is ``auto``, in which case the
    cheaper one for ``rows`` rows (see the constants above for the measured costs)."""
    if requested != "auto":
        return requested
    if head_kind == "mlp":
        return "sample" if rows <= MLP_SAMPLE_MAX_ROWS else "batch"
    return "coefficient" if rows <= poly_modulus_degree * COEFFICIENT_ROWS_PER_N else "batch"


def inference_chunk_rows(requested: str, poly_modulus_degree: int) -> int:
    """Rows a hospital puts in one he-cls request: up to one batch-layout group (N rows) when the
    batch layout may serve it (``auto`` then picks per request), else 256 rows."""
    return poly_modulus_degree if requested in ("batch", "auto") else 256


#: Training strategies (names are the contract). ``he-cls`` is encrypted inference and runs for
#: every trained head.
STRATEGIES = ("plain-fedavg", "he-fedavg", "he-ridge")


@dataclass(frozen=True)
class FederatedConfig:
    """
    Parameters
    ----------
    rounds : FedAvg rounds (``he-ridge`` always takes one).
    head : ``linear`` (softmax regression) or ``mlp`` (``W2 (W1 x + b1)^2 + b2``) for the FedAvg
        strategies; ``he-ridge`` always solves a linear head.
    hidden : hidden units of the ``mlp`` head.
    local_epochs, learning_rate, batch_size, weight_decay : local training. ``learning_rate``
        ``None`` picks 0.5 for the linear head and 0.05 (with momentum 0.9) for the ``mlp`` head.
    ridge_alpha : ridge penalty of ``he-ridge`` (features are unit-norm rows; 0.1 measured best
        on the pretrained ViT-Ti tokens of LC25000 by 5-fold CV).
    standardize : before training, standardise features with the federation's mean and std,
        learned from one encrypted sum of per-client moments (``run_moments``).
    aggregation_preset : CKKS preset of encrypted statistics and moments (released after
        decryption, so it needs the precision left after noise flooding: ``release``).
    update_preset : CKKS preset of encrypted FedAvg updates (``update``: N = 4096).
    inference_preset, inference_layout : CKKS preset and layout of ``he-cls`` for linear heads.
        ``auto`` (default) picks per request (:func:`inference_layout_for`):
        the coefficient layout for small requests, the batch layout for large ones (the default
        ``latency`` preset serves both without evaluation keys); ``batch``, ``sample`` or
        ``coefficient`` force one. ``mlp_inference_preset``: preset of ``he-cls`` for the ``mlp``
        head (``auto``: sample layout for small requests, batch for large ones).
    count_scale : updates and statistics are divided by it before encryption (default 1: the
        ``release`` preset's public row-norm bound of 2^24 holds sums over millions of rows);
        the flooding noise, in value units, is multiplied by it.
    quorum : fewest client contributions a round needs (``None``: all clients); with fewer
        the round fails with ``QuorumError``.
    flooding : noise flooding of released decryptions.
    dp : optional differential privacy (client-level for FedAvg, record-level for ridge).
    seed : data split, partition, initialisation and local shuffling.
    """

    rounds: int = 10
    local_epochs: int = 5
    learning_rate: float | None = None
    batch_size: int = 32
    weight_decay: float = 1e-4
    ridge_alpha: float = 0.1
    head: str = "linear"
    hidden: int = 64
    standardize: bool = True
    aggregation_preset: str = "release"
    update_preset: str = "update"
    inference_preset: str = "latency"
    inference_layout: str = "auto"
    mlp_inference_preset: str = "mlp"
    count_scale: float = 1.0
    quorum: int | None = None
    flooding: FloodingPolicy = field(default_factory=FloodingPolicy)
    dp: DPConfig | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.local_epochs < 1 or self.batch_size < 1:
            raise ValueError("local_epochs and batch_size must be >= 1")
        if self.quorum is not None and self.quorum < 1:
            raise ValueError(f"quorum must be >= 1, got {self.quorum}")
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', got {self.head!r}")
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.inference_layout not in INFERENCE_LAYOUTS:
            raise ValueError(
                f"inference_layout must be one of {INFERENCE_LAYOUTS}, got {self.inference_layout!r}"
            )
        if self.head == "mlp" and self.inference_layout == "coefficient":
            raise ValueError(
                "the mlp head squares slot values: use inference_layout 'auto', 'batch' or 'sample'"
            )

    @property
    def step_size(self) -> float:
        """The local learning rate in use (``learning_rate`` or the head's default)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 0.05 if self.head == "mlp" else 0.5

    def to_dict(self) -> dict:
        d = asdict(self)
        d["step_size"] = self.step_size
        return d
