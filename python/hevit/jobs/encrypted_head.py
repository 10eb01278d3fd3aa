"""Encrypted inference of a linear head on [CLS]-like features, client -> server -> client.

Each client encrypts its feature rows, the server (holding only a PublicContext) evaluates the
head as a compiled LinearPlan, and the client decrypts the logits. The report compares the
encrypted predictions with plaintext ones and accounts bytes and time per phase.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import he
from ..data import class_balance, iid_partition

__all__ = ["EncryptedHeadReport", "fit_ridge_head", "run_encrypted_head"]


def fit_ridge_head(x: np.ndarray, labels: np.ndarray, classes: int, *, alpha: float = 10.0):
    """Closed-form ridge regression onto one-hot targets (bias via an appended constant)."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    y = np.eye(classes)[labels]
    gram = xa.T @ xa + alpha * np.eye(xa.shape[1])
    coef = np.linalg.solve(gram, xa.T @ y)
    return coef[:-1].T.copy(), coef[-1].copy()


@dataclass
class LayoutResult:
    layout: str
    preset: str
    rows: int
    upload_bytes_per_row: float
    download_bytes_per_row: float
    encrypt_ms_per_row: float
    server_ms_per_row: float
    decrypt_ms_per_row: float
    max_abs_logit_error: float
    agreement: float
    accuracy_encrypted: float
    key_switches: int


@dataclass
class EncryptedHeadReport:
    data: str
    clients: int
    classes: int
    dim: int
    seed: int
    accuracy_plaintext: float
    #: (clients, classes) counts of the test rows each client encrypts
    client_class_balance: list[list[int]] = field(default_factory=list)
    layouts: list[LayoutResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        head = (
            "| layout | preset | rows | up B/row | down B/row | enc ms/row | server ms/row | dec ms/row "
            "| max |logit err| | agreement | acc (enc) |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
        body = "".join(
            f"| {r.layout} | {r.preset} | {r.rows} | {r.upload_bytes_per_row:,.0f} | "
            f"{r.download_bytes_per_row:,.0f} | {r.encrypt_ms_per_row:.3f} | {r.server_ms_per_row:.3f} | "
            f"{r.decrypt_ms_per_row:.3f} | {r.max_abs_logit_error:.2e} | {r.agreement:.4f} | "
            f"{r.accuracy_encrypted:.4f} |\n"
            for r in self.layouts
        )
        return head + body


def _run_layout(layout, preset, w, b, x_test, y_test, plain_logits, parts, threads) -> LayoutResult:
    params = he.CkksParams.preset(preset)
    steps = he.LinearPlan.rotation_steps(
        params, in_dim=w.shape[1], out_dim=w.shape[0], layout=layout
    )
    key_holder = he.SecretContext.generate(params, rotation_steps=steps)
    server_context = he.PublicContext.from_bytes(key_holder.public_context().to_bytes())
    plan = he.LinearPlan.compile(server_context, w, b, layout=layout)

    chunk = params.poly_modulus_degree if layout == "batch" else 256
    logits = np.empty_like(plain_logits)
    up = down = 0
    t_enc = t_srv = t_dec = 0.0
    # rows are split across clients; each client sends its rows in chunks the layout holds
    for part in parts:
        for start in range(0, len(part), chunk):
            idx = part[start : start + chunk]
            t0 = time.perf_counter()
            upload = key_holder.encrypt(x_test[idx], layout=layout, threads=threads).to_bytes()
            t1 = time.perf_counter()
            enc = he.EncryptedBatch.from_bytes(upload, server_context, threads=threads)
            download = plan.apply(enc, threads=threads).to_bytes()
            t2 = time.perf_counter()
            out = he.EncryptedBatch.from_bytes(
                download, key_holder.public_context(), threads=threads
            )
            logits[idx] = key_holder.decrypt(out, threads=threads)
            t3 = time.perf_counter()
            up += len(upload)
            down += len(download)
            t_enc += t1 - t0
            t_srv += t2 - t1
            t_dec += t3 - t2
    n = len(x_test)
    pred = logits.argmax(axis=1)
    return LayoutResult(
        layout=layout,
        preset=preset,
        rows=n,
        upload_bytes_per_row=up / n,
        download_bytes_per_row=down / n,
        encrypt_ms_per_row=1e3 * t_enc / n,
        server_ms_per_row=1e3 * t_srv / n,
        decrypt_ms_per_row=1e3 * t_dec / n,
        max_abs_logit_error=float(np.abs(logits - plain_logits).max()),
        agreement=float(np.mean(pred == plain_logits.argmax(axis=1))),
        accuracy_encrypted=float(np.mean(pred == y_test)),
        key_switches=plan.key_switches,
    )


def run_encrypted_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    data: str,
    clients: int = 3,
    seed: int = 0,
    layouts: tuple[tuple[str, str], ...] = (("batch", "batch"), ("sample", "sample")),
    threads: int | None = None,
) -> EncryptedHeadReport:
    """Fits a ridge head on plaintext training features, then runs encrypted inference on the
    test features in each (layout, preset) and reports agreement, bytes and time."""
    classes = int(max(y_train.max(), y_test.max()) + 1)
    parts = iid_partition(np.arange(len(x_test)), clients=clients, seed=seed)
    w, b = fit_ridge_head(x_train, y_train, classes)
    plain_logits = he.reference.linear(x_test, w, b)
    report = EncryptedHeadReport(
        data=data,
        clients=clients,
        classes=classes,
        dim=x_train.shape[1],
        seed=seed,
        accuracy_plaintext=float(np.mean(plain_logits.argmax(axis=1) == y_test)),
        client_class_balance=class_balance(y_test, parts, classes).tolist(),
    )
    for layout, preset in layouts:
        report.layouts.append(
            _run_layout(layout, preset, w, b, x_test, y_test, plain_logits, parts, threads)
        )
    return report
