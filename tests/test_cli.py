"""The command line jobs, run as a user runs them (small sizes)."""

import json

import numpy as np
import pytest

from hevit.cli.main import main
from hevit.features import FeatureSet
from tests.helpers import require_lc25000


def _check_run_folder(run, strategies=("plain-fedavg", "he-fedavg", "he-ridge")):
    report = json.loads((run / "report.json").read_text())
    assert [s["strategy"] for s in report["strategies"]] == list(strategies)
    for s in report["strategies"]:
        assert s["inference"]["agreement"] == 1.0
        assert s["inference"]["accuracy_encrypted"] == s["inference"]["accuracy_plaintext"]
        assert all(b > 0 for b in s["bytes_per_round"])
    for png in ("accuracy_per_round.png", "bytes_per_round.png", "latency_per_phase.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (run / "report.md").read_text()
    assert "0.9612" in md and "66.0" in md  # the paper's numbers beside ours
    return report


def test_demo_runs_end_to_end_on_synthetic_tiles(tmp_path, capsys):
    code = main(
        [
            "demo",
            "--per-class",
            "8",
            "--model",
            "vit_base_patch16_224",
            "--img-size",
            "200",
            "--patch-size",
            "25",
            "--rounds",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC" in out and "RANDOM initialisation" in out and "CPUExecutionProvider" in out
    assert "| he-ridge | linear head (" in out and "he-cls ms/image" in out
    assert "vit_tiny_patch16_224" in out  # the demo says how to run the pretrained path
    report = _check_run_folder(tmp_path / "run")
    assert report["features"]["weights"]["source"] == "random"
    assert report["features"]["provider"] == "CPUExecutionProvider"
    balance = report["client_class_balance"]
    assert len(balance) == 3 and sum(map(sum, balance)) == report["train_rows"]
    assert report["config"]["seed"] == 0 and report["versions"]["SEAL"].startswith("4.1")


def test_experiment_on_lc25000_with_separate_test_folder_options(tmp_path, capsys):
    code = main(
        [
            "experiment",
            "--data",
            str(require_lc25000()),
            "--limit-per-class",
            "12",
            "--img-size",
            "200",
            "--patch-size",
            "25",
            "--rounds",
            "2",
            "--quorum",
            "2",
            "--partition",
            "dirichlet",
            "--alpha",
            "5",
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0, capsys.readouterr().out
    report = _check_run_folder(tmp_path / "run")
    assert report["train_rows"] + report["test_rows"] == 36
    assert report["partition"] == "dirichlet(alpha=5.0)"
    assert report["classes"] == ["lung_aca", "lung_n", "lung_scc"]


def test_experiment_is_deterministic_for_a_seed(tmp_path):
    from tests.federated.conftest import clustered_features

    x, y = clustered_features(21, rows=300, dim=64)
    path = FeatureSet(
        x.astype(np.float32), y, [str(i) for i in range(300)], ("a", "b", "c"), {}
    ).save(tmp_path / "f.npz")
    runs = []
    for k in range(2):
        assert (
            main(
                [
                    "experiment",
                    "--features",
                    str(path),
                    "--rounds",
                    "3",
                    "--out",
                    str(tmp_path / f"r{k}"),
                ]
            )
            == 0
        )
        runs.append(json.loads((tmp_path / f"r{k}" / "report.json").read_text()))

    def numbers(report):
        # timings vary; flooding noise (OS entropy by design) moves parameters by ~1e-10 only
        return [
            (
                s["strategy"],
                [r["accuracy"] for r in s["rounds"]],
                s["bytes_per_round"],
                [r["contributors"] for r in s["rounds"]],
                s["inference"]["accuracy_encrypted"],
                s["inference"]["agreement"],
                s["inference"]["bytes_up_per_image"],
            )
            for s in report["strategies"]
        ] + [report["client_class_balance"], report["centralized_ridge_accuracy"]]

    assert numbers(runs[0]) == numbers(runs[1])


def test_extract_writes_features_labels_and_metadata(tmp_path, capsys):
    out = tmp_path / "lc.npz"
    code = main(
        [
            "extract",
            "--data",
            str(require_lc25000()),
            "--limit-per-class",
            "2",
            "--out",
            str(out),
            "--img-size",
            "200",
            "--patch-size",
            "25",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    fs = FeatureSet.load(out)
    assert fs.features.shape == (6, 768) and fs.features.dtype == np.float32
    assert fs.classes == ("lung_aca", "lung_n", "lung_scc")
    assert fs.metadata["provider"] == "CPUExecutionProvider"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.slow
def test_attack_job_on_the_pretrained_vit_writes_tables_grid_and_privacy_utility_plot(
    tmp_path, capsys
):
    """Small budgets, the real model and images: the job's numbers must mean what they say."""
    from tests.features.test_features import SHARED_VIT_TI

    if not SHARED_VIT_TI.is_file():
        pytest.fail(f"shared pretrained ViT-Ti missing at {SHARED_VIT_TI}")
    out = tmp_path / "attack"
    code = main(
        [
            "attack",
            "--data",
            str(require_lc25000()),
            "--weights",
            str(SHARED_VIT_TI),
            "--n-images",
            "2",
            "--budget",
            "2",
            "--game-trials",
            "30",
            "--dp-noise",
            "2.0",
            "--dp-rounds",
            "1",
            "--utility-per-class",
            "10",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads((out / "attack_report.json").read_text())
    assert report["budget"] == 2 and report["lpips"] is True
    assert report["token_summary"]["1"] > 0.9999  # one image: the head update gives its token
    images = report["image_summary"]
    analytic = images["paper-setting/analytic/all parameters, B=1"]
    assert analytic["psnr"][0] > 30 and analytic["lpips"] is not None
    assert set(report["token_summary"]) == {"1", "4", "16"}
    games = {(g["strategy"], g["observed"]): g["result"] for g in report["game_rows"]}
    assert games[("he-cls", "plaintext [CLS] row (unencrypted)")]["advantage"] > 0.5
    assert len(report["dp_points"]) == 2 and report["dp_points"][1]["epsilon"] > 0
    md = (out / "attack_report.md").read_text()
    assert "PSNR 52.26" in md and "What leaks by design" in md
    for png in ("attack_grid.png", "privacy_utility.png"):
        assert (out / png).stat().st_size > 1000
    assert "privacy_utility.png" in captured.out
    # progress: 2 feature inversions, inverting gradients at B = 1, 4, 8, the analytic
    # inversion, the games, 2 DP points; the bar ends exactly at its total, and every
    # optimisation attack shows its iterations
    bars = [chunk for chunk in captured.err.split("\r") if chunk.startswith("attacks:")]
    assert "| 9/9 [" in bars[-1] and not any("10/9" in b for b in bars)
    for b in (1, 4, 8):
        assert f"inverting gradients B={b}: 100%" in captured.err


def test_extract_with_local_finetuning_records_it(tmp_path, capsys):
    out = tmp_path / "ft.npz"
    code = main(
        [
            "extract",
            "--data",
            str(require_lc25000()),
            "--limit-per-class",
            "2",
            "--out",
            str(out),
            "--img-size",
            "200",
            "--patch-size",
            "25",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--finetune-epochs",
            "1",
        ]
    )
    assert code == 0
    fs = FeatureSet.load(out)
    assert "fine-tuned locally for 1 epoch(s) on 6 images" in fs.metadata["weights"]["description"]
    assert len(fs.metadata["weights"]["extra"]["finetune"]["loss_per_epoch"]) == 1


def test_keygen_writes_secret_files_0600_and_public_server_files(tmp_path, capsys):
    import stat

    from hevit import he
    from hevit.federated import FederationKeys, ServerKeys

    assert (
        main(
            [
                "keygen",
                "--dim",
                "32",
                "--classes",
                "3",
                "--hospital-keys",
                str(tmp_path / "h"),
                "--server-keys",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    for name in ("updates.key", "aggregation.key", "inference.key"):
        assert stat.S_IMODE((tmp_path / "h" / name).stat().st_mode) == 0o600
    keys, server = FederationKeys.load(tmp_path / "h"), ServerKeys.from_files(tmp_path / "s")
    assert server.aggregation.keyset_id == keys.aggregation.public_context().keyset_id
    assert isinstance(server.inference, he.PublicContext)
    # the default he-cls layout (auto: coefficient or batch) needs no Galois key at all
    assert server.inference.rotation_steps == ()
    assert (
        main(
            [
                "keygen",
                "--dim",
                "32",
                "--classes",
                "3",
                "--hospital-keys",
                str(tmp_path / "h2"),
                "--server-keys",
                str(tmp_path / "s2"),
                "--inference-preset",
                "single-row",
                "--inference-layout",
                "sample",
            ]
        )
        == 0
    )
    sample = ServerKeys.from_files(tmp_path / "s2")
    assert set(sample.inference.rotation_steps) == set(
        he.LinearPlan.required_rotation_steps(
            sample.inference.params, in_dim=32, out_dim=3, layout="sample"
        )
    )


def test_user_errors_print_one_line_and_exit_nonzero(tmp_path, capsys):
    """No traceback for bad input; --debug shows it."""
    from hevit.errors import DataError

    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        features=np.zeros((4, 3), np.float32),
        labels=np.array([0, 1, 0]),
        paths=np.array(list("abcd")),
        classes=np.array(["x", "y"]),
        metadata=np.array("{}"),
    )
    assert main(["experiment", "--features", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: 4 feature rows need as many integer labels" in err
    assert "Traceback" not in err
    with pytest.raises(DataError):
        main(["--debug", "experiment", "--features", str(bad), "--out", str(tmp_path / "o")])


def test_keygen_refuses_one_folder_for_both_and_a_world_writable_folder(tmp_path, capsys):
    import os

    same = tmp_path / "keys"
    args = ["keygen", "--classes", "3", "--dim", "16"]
    assert main([*args, "--hospital-keys", str(same), "--server-keys", str(same)]) == 1
    assert "name the same folder" in capsys.readouterr().err and not same.exists()
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    assert main([*args, "--hospital-keys", str(loose), "--server-keys", str(tmp_path / "s")]) == 1
    assert "writable by other users" in capsys.readouterr().err
    assert not any(loose.iterdir())


def test_secret_key_files_in_a_folder_others_can_write_are_refused(tmp_path):
    import os

    from hevit import he

    folder = tmp_path / "k"
    folder.mkdir(mode=0o700)
    sk = he.SecretContext.generate(he.CkksParams.preset("throughput"))
    path = sk.save(folder / "a.key")
    assert he.SecretContext.load(path).public_context().keyset_id == sk.public_context().keyset_id
    os.chmod(folder, 0o777)
    with pytest.raises(PermissionError, match="writable by other users"):
        he.SecretContext.load(path)
