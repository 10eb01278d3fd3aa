"""The command line jobs, run as a user runs them (small sizes)."""

import json

import numpy as np

from hevit.cli.main import main
from hevit.features import FeatureSet

from tests.helpers import require_lc25000


def test_demo_runs_end_to_end_on_synthetic_tiles(tmp_path, capsys):
    code = main([
        "demo", "--per-class", "8", "--model", "vit_base_patch16_224", "--img-size", "200", "--patch-size", "25",
        "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC" in out and "RANDOM initialisation" in out and "CPUExecutionProvider" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    layouts = report["report"]["layouts"]
    assert {r["layout"] for r in layouts} == {"batch", "sample"}
    assert all(r["agreement"] == 1.0 for r in layouts)
    assert report["features"]["weights"]["source"] == "random"
    balance = report["report"]["client_class_balance"]
    assert len(balance) == 3 and sum(map(sum, balance)) == layouts[0]["rows"]
    assert "client 0 encrypts" in out


def test_extract_writes_features_labels_and_metadata(tmp_path, capsys):
    out = tmp_path / "lc.npz"
    code = main([
        "extract", "--data", str(require_lc25000()), "--limit-per-class", "2", "--out", str(out),
        "--img-size", "200", "--patch-size", "25", "--cache-dir", str(tmp_path / "cache"),
    ])
    assert code == 0
    fs = FeatureSet.load(out)
    assert fs.features.shape == (6, 768) and fs.features.dtype == np.float32
    assert fs.classes == ("lung_aca", "lung_n", "lung_scc")
    assert fs.metadata["provider"] == "CPUExecutionProvider"
    assert "wrote" in capsys.readouterr().out


def test_attack_job_writes_table_report_and_grid(tmp_path, capsys):
    out = tmp_path / "attack"
    code = main([
        "attack", "--data", str(require_lc25000()), "--n-images", "1", "--out", str(out),
        "--strategies", "plain-fedavg,he-cls,leak-cls", "--ig-iterations", "2", "--fi-iterations", "2",
    ])
    assert code == 0
    report = json.loads((out / "attack_report.json").read_text())
    summary = report["summary"]
    assert summary["plain-fedavg/analytic"]["psnr"][0] >= 40
    assert summary["plain-fedavg/analytic"]["ssim"][0] >= 0.95
    assert summary["he-cls/ciphertext-only"]["psnr"][0] < 12
    assert (out / "attack_grid.png").stat().st_size > 1000
    assert "PSNR 52.26" in (out / "attack_report.md").read_text()


def test_extract_with_local_finetuning_records_it(tmp_path, capsys):
    out = tmp_path / "ft.npz"
    code = main([
        "extract", "--data", str(require_lc25000()), "--limit-per-class", "2", "--out", str(out),
        "--img-size", "200", "--patch-size", "25", "--cache-dir", str(tmp_path / "cache"), "--finetune-epochs", "1",
    ])
    assert code == 0
    fs = FeatureSet.load(out)
    assert "fine-tuned locally for 1 epoch(s) on 6 images" in fs.metadata["weights"]["description"]
    assert len(fs.metadata["weights"]["extra"]["finetune"]["loss_per_epoch"]) == 1
