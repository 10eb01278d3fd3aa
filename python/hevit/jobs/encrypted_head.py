"""Encrypted inference of a linear head on [CLS]-like features, client -> server -> client.

A ridge head is fitted on the training rows (the federation's own solver,
:func:`hevit.federated.centralized_ridge`), then the test rows are split across hospitals and
served by ``he-cls`` exactly as a federation serves them (:func:`hevit.federated.run_inference`:
each :class:`~hevit.federated.HospitalClient` encrypts its rows, the
:class:`~hevit.federated.InferenceServer` holds only public keys, the client decrypts), once per
(layout, preset). The report compares encrypted with plaintext predictions and accounts bytes and
time per phase.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..data import class_balance, iid_partition
from ..federated import (
    FederatedConfig,
    FederationKeys,
    InferenceRecord,
    centralized_ridge,
    make_clients,
    normalize_rows,
    run_inference,
)

__all__ = ["EncryptedHeadReport", "run_encrypted_head"]


@dataclass
class EncryptedHeadReport:
    data: str
    clients: int
    classes: int
    dim: int
    seed: int
    ridge_alpha: float
    accuracy_plaintext: float
    #: (clients, classes) counts of the test rows each client encrypts
    client_class_balance: list[list[int]] = field(default_factory=list)
    #: one he-cls run per (layout, preset)
    layouts: list[InferenceRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        head = (
            "| layout | preset | rows | up B/row | down B/row | enc ms/row | server ms/row "
            "| dec ms/row | max |logit err| | agreement | acc (enc) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
        body = ""
        for r in self.layouts:
            ms = {phase: 1e3 * r.seconds.get(phase, 0.0) / r.rows for phase in PHASES}
            body += (
                f"| {r.layout} | {r.preset} | {r.rows} | {r.bytes_up_per_image:,.0f} | "
                f"{r.bytes_down_per_image:,.0f} | {ms['encrypt']:.3f} | {ms['infer']:.3f} | "
                f"{ms['decrypt']:.3f} | {r.max_abs_logit_error:.2e} | {r.agreement:.4f} | "
                f"{r.accuracy_encrypted:.4f} |\n"
            )
        return head + body


#: the per-phase times of an InferenceRecord this report shows
PHASES = ("encrypt", "infer", "decrypt")


def run_encrypted_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    data: str,
    clients: int = 3,
    seed: int = 0,
    layouts: tuple[tuple[str, str], ...] = (("batch", "throughput"), ("sample", "single-row")),
    ridge_alpha: float | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> EncryptedHeadReport:
    """Fits a ridge head on the (L2-normalised) training rows, then serves the test rows with
    ``he-cls`` in each (layout, preset); ``ridge_alpha`` defaults to the federation's.
    ``progress``: one line per (layout, preset) as it starts and ends (keys, encryption and the
    server's work take seconds each)."""
    import time

    classes = int(max(y_train.max(), y_test.max()) + 1)
    alpha = FederatedConfig().ridge_alpha if ridge_alpha is None else float(ridge_alpha)
    head = centralized_ridge(normalize_rows(x_train), y_train, classes, alpha=alpha)
    parts = iid_partition(np.arange(len(x_test)), clients=clients, seed=seed)
    report = EncryptedHeadReport(
        data=data,
        clients=clients,
        classes=classes,
        dim=int(x_train.shape[1]),
        seed=seed,
        ridge_alpha=alpha,
        accuracy_plaintext=head.accuracy(normalize_rows(x_test), y_test),
        client_class_balance=class_balance(y_test, parts, classes).tolist(),
    )
    for step, (layout, preset) in enumerate(layouts, start=1):
        if progress:
            print(
                f"he-cls [{step}/{len(layouts)}] layout {layout}, preset {preset}: keys, then "
                f"{len(x_test)} encrypted rows ...",
                flush=True,
            )
        started = time.perf_counter()
        config = FederatedConfig(inference_preset=preset, inference_layout=layout, seed=seed)
        keys = FederationKeys.generate(
            inference_preset=preset, inference_layout=layout, dim=report.dim, classes=classes
        )
        hospitals = make_clients(x_test, y_test, parts, classes=classes, keys=keys, config=config)
        report.layouts.append(
            run_inference(
                head, hospitals, keys.server_keys(), parts, x_test, y_test, config, threads=threads
            )
        )
        if progress:
            print(
                f"he-cls [{step}/{len(layouts)}] done in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
    return report
