"""Every example script is smoke-run on a small slice of real data."""

import runpy
import sys
from pathlib import Path

from tests.helpers import require_lc25000

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_lc25000_encrypted_head_example(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lc25000_encrypted_head.py",
            "--data",
            str(require_lc25000()),
            "--limit-per-class",
            "5",
            "--int8",
            "--img-size",
            "200",
            "--patch-size",
            "25",
            "--cache-dir",
            str(tmp_path),
        ],
    )
    try:
        runpy.run_path(str(EXAMPLES / "lc25000_encrypted_head.py"), run_name="__main__")
    except SystemExit as exit_:
        assert exit_.code == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "[fp32] plaintext accuracy" in out and "[int8] plaintext accuracy" in out
    assert "cosine similarity to fp32" in out
    # no long silence: a bar per image while extracting, a line as each layout starts and ends
    assert "[fp32] extracting [CLS] tokens" in out and "15/15" in captured.err
    for step in range(1, 5):
        assert out.count(f"he-cls [{step}/4] layout") == 2 and f"he-cls [{step}/4] done in" in out


def test_encrypted_head_job_serves_every_layout_through_the_federation_path(rng):
    """run_encrypted_head is he-cls (HospitalClient -> InferenceServer -> HospitalClient): the
    predictions equal the plaintext head's in every layout, and each row is served once."""
    from hevit.jobs import run_encrypted_head

    centres = rng.standard_normal((3, 24)) * 3
    y = rng.integers(0, 3, 150)
    x = centres[y] + rng.standard_normal((150, 24))
    report = run_encrypted_head(
        x[:90],
        y[:90],
        x[90:],
        y[90:],
        data="synthetic",
        layouts=(("batch", "throughput"), ("sample", "single-row"), ("coefficient", "latency")),
    )
    assert [(r.layout, r.preset) for r in report.layouts] == [
        ("batch", "throughput"),
        ("sample", "single-row"),
        ("coefficient", "latency"),
    ]
    for r in report.layouts:
        assert r.rows_per_layout == {r.layout: 60} and r.agreement == 1.0
        assert r.accuracy_encrypted == r.accuracy_plaintext == report.accuracy_plaintext
    assert "| coefficient | latency | 60 |" in report.table()
