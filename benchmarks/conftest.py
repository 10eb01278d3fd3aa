"""Benchmark fixtures (contexts, keys, plans are built once, outside the timed code) and the
comparison table printed at the end of a run.

Run the suite with ``pytest benchmarks`` (timed) or ``pytest benchmarks --benchmark-disable``
(each benchmark once, as a smoke test). The table is printed and written to
``benchmark-results/comparison.json``; add ``--benchmark-json=FILE`` for pytest-benchmark's raw
statistics.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from hevit import he

IN_DIM = 768
OUT_DIM = 3
#: (layout, preset) pairs compared: the batch layout, two sample-layout presets, and the
#: coefficient layout (one data prime, no evaluation key)
SETUPS = (
    ("batch", "throughput"),
    ("sample", "latency"),
    ("sample", "single-row"),
    ("coefficient", "latency"),
)


@dataclass
class HevitSetup:
    layout: str
    params: he.CkksParams
    key_holder: he.SecretContext
    server: he.PublicContext
    plan: he.LinearPlan
    weights: np.ndarray
    bias: np.ndarray


def make_head(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((OUT_DIM, IN_DIM)) / np.sqrt(IN_DIM), rng.standard_normal(
        OUT_DIM
    ) * 0.1


def make_features(rows: int, seed: int = 2) -> np.ndarray:
    """[CLS]-like rows: Gaussian, L2 norm 28 (a LayerNorm output of width 768)."""
    x = np.random.default_rng(seed).standard_normal((rows, IN_DIM))
    return x * (28.0 / np.linalg.norm(x, axis=1, keepdims=True))


@pytest.fixture(scope="session")
def hevit_setups() -> dict[str, HevitSetup]:
    setups = {}
    w, b = make_head()
    for layout, preset in SETUPS:
        params = he.CkksParams.preset(preset)
        steps = he.LinearPlan.required_rotation_steps(
            params, in_dim=IN_DIM, out_dim=OUT_DIM, layout=layout
        )
        key_holder = he.SecretContext.generate(params, rotation_steps=steps)
        server = he.PublicContext.from_bytes(key_holder.public_context().to_bytes())
        plan = he.LinearPlan.compile(server, w, b, layout=layout)
        setups[f"{layout}/{preset}"] = HevitSetup(layout, params, key_holder, server, plan, w, b)
    return setups


@dataclass
class Row:
    impl: str
    what: str
    batch: int
    benchmark: object
    up_bytes: float = 0.0
    down_bytes: float = 0.0
    note: str = ""
    extra: dict = field(default_factory=dict)

    def ms_per_image(self) -> float | None:
        stats = getattr(self.benchmark, "stats", None)
        if stats is None:
            return None
        return 1e3 * stats.stats.median / self.batch


class Registry:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)


_REGISTRY = Registry()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return _REGISTRY


def ratio_words(peer_ms: float, ours_ms: float, digits: int = 1) -> str:
    """How our time compares with a peer's, in words: "3.0x faster" or "3.0x slower" (never a
    ratio below 1 called faster)."""
    if not (peer_ms > 0 and ours_ms > 0):
        raise ValueError(f"times must be positive, got {peer_ms} and {ours_ms}")
    if ours_ms <= peer_ms:
        return f"{peer_ms / ours_ms:.{digits}f}x faster"
    return f"{ours_ms / peer_ms:.{digits}f}x slower"


def _table(rows: list[Row]) -> tuple[str, list[dict]]:
    records = []
    for r in rows:
        record = dict(r.extra)
        record.update(
            impl=r.impl,
            what=r.what,
            batch=r.batch,
            ms_per_image=r.ms_per_image(),
            up_bytes_per_image=r.up_bytes,
            down_bytes_per_image=r.down_bytes,
            note=r.note,
        )
        records.append(record)
    e2e = [x for x in records if x["what"] == "end-to-end" and x["ms_per_image"] is not None]
    lines = [
        "| B | implementation | e2e ms/image | up B/image | down B/image | vs best TenSEAL "
        "| vs best OpenFHE |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch in sorted({x["batch"] for x in e2e}):
        at_b = [x for x in e2e if x["batch"] == batch]
        ratios = []
        for peer_name in ("tenseal", "openfhe"):
            peers = [x["ms_per_image"] for x in at_b if x["impl"].startswith(peer_name)]
            ratios.append(min(peers) if peers else None)
        for x in sorted(at_b, key=lambda x: x["ms_per_image"]):
            cells = [
                ratio_words(best, x["ms_per_image"])
                if best and x["impl"].startswith("hevit")
                else ""
                for best in ratios
            ]
            lines.append(
                f"| {batch} | {x['impl']} | {x['ms_per_image']:.4f} | {x['up_bytes_per_image']:,.0f} | "
                f"{x['down_bytes_per_image']:,.0f} | {cells[0]} | {cells[1]} |"
            )
    core = [x for x in records if x["what"] == "core" and x["ms_per_image"] is not None]
    if core:
        lines += ["", "| B | operation | ms/sample | bytes/sample |", "|---|---|---|---|"]
        for x in sorted(core, key=lambda x: (x["impl"], x["batch"])):
            size = f"{x['up_bytes_per_image']:,.0f}" if x["up_bytes_per_image"] else ""
            lines.append(f"| {x['batch']} | {x['impl']} | {x['ms_per_image']:.4f} | {size} |")
    feats = [x for x in records if x["what"] == "features" and x["ms_per_image"] is not None]
    if feats:
        lines += [
            "",
            "| model | engine | ms/image | images/s | vs PyTorch | int8 cos to fp32 (min) |",
            "|---|---|---|---|---|---|",
        ]
        for x in sorted(feats, key=lambda x: x["impl"]):
            model = x["impl"].split()[0]
            torch_ms = next(
                (y["ms_per_image"] for y in feats if y["impl"] == f"{model} torch"), None
            )
            ratio = (
                ratio_words(torch_ms, x["ms_per_image"], digits=2)
                if torch_ms and not x["impl"].endswith(" torch")
                else ""
            )
            cos = x.get("cls_cosine_to_fp32_min")
            lines.append(
                f"| {model} | {x['impl'].split()[1]} | {x['ms_per_image']:.1f} | {1e3 / x['ms_per_image']:.2f} | "
                f"{ratio} | {'' if cos is None else f'{cos:.4f}'} |"
            )
    agg = [x for x in records if x["what"] == "aggregation" and x["ms_per_image"] is not None]
    if agg:
        lines += [
            "",
            "| vector | implementation | ms per round (3 clients) | up B/client | down B/client | vs TenSEAL |",
            "|---|---|---|---|---|---|",
        ]
        for vector in sorted({x["vector"] for x in agg}):
            at_v = [x for x in agg if x["vector"] == vector]
            peer = next((x["ms_per_image"] for x in at_v if x["impl"].startswith("tenseal")), None)
            for x in sorted(at_v, key=lambda x: x["ms_per_image"]):
                ratio = (
                    ratio_words(peer, x["ms_per_image"])
                    if peer and x["impl"].startswith("hevit")
                    else ""
                )
                lines.append(
                    f"| {vector} | {x['impl']} | {x['ms_per_image']:.2f} | {x['up_bytes_per_image']:,.0f} | "
                    f"{x['down_bytes_per_image']:,.0f} | {ratio} |"
                )
    server = [x for x in records if x["what"] == "server" and x["ms_per_image"] is not None]
    if server:
        lines += ["", "| B | implementation | server-only ms/image |", "|---|---|---|"]
        for x in sorted(server, key=lambda x: (x["batch"], x["impl"])):
            lines.append(f"| {x['batch']} | {x['impl']} | {x['ms_per_image']:.4f} |")
    return "\n".join(lines), records


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _REGISTRY.rows:
        return
    table, records = _table(_REGISTRY.rows)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    if not any(r["ms_per_image"] is not None for r in records):
        terminalreporter.write_line(
            "benchmarks ran once (--benchmark-disable): no timings to compare"
        )
        return
    terminalreporter.write_sep("=", f"hevit vs peers (median, {machine})")
    terminalreporter.write_line(table)
    out = Path("benchmark-results")
    out.mkdir(exist_ok=True)
    (out / "comparison.json").write_text(
        json.dumps({"machine": machine, "rows": records}, indent=2)
    )
    (out / "comparison.md").write_text(table + "\n")
    terminalreporter.write_line(f"written: {out / 'comparison.json'}, {out / 'comparison.md'}")
