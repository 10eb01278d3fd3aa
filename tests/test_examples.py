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
    out = capsys.readouterr().out
    assert "[fp32] plaintext accuracy" in out and "[int8] plaintext accuracy" in out
    assert "cosine similarity to fp32" in out
