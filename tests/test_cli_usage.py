"""What a new user trips over on the command line (issue 28): every everyday mistake is one line
naming the fix, found before any work starts; outputs are never overwritten silently; Ctrl-C is
one line and an interrupted extraction resumes; secrets are created owner-only."""

import json
import os
import stat

import numpy as np
import pytest

from hevit.cli.main import UsageError, main
from hevit.features import FeatureSet
from tests.helpers import require_lc25000


def _features(path, rows=120, dim=16, metadata=None):
    rng = np.random.default_rng(0)
    y = np.arange(rows) % 3
    x = rng.standard_normal((rows, dim)) + 3 * np.eye(3, dim)[y]
    return FeatureSet(
        x.astype(np.float32), y, [str(i) for i in range(rows)], ("a", "b", "c"), metadata or {}
    ).save(path)


@pytest.fixture
def no_work(monkeypatch):
    """Every job entry point fails the test if reached: validation must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the command line was validated")

    import hevit.federated
    import hevit.jobs.attack
    import hevit.jobs.experiment
    import hevit.jobs.extract

    monkeypatch.setattr(hevit.jobs.extract, "extract_features", forbidden)
    monkeypatch.setattr(hevit.jobs.extract, "extract_tail_inputs", forbidden)
    monkeypatch.setattr(hevit.jobs.experiment, "run_experiment", forbidden)
    monkeypatch.setattr(hevit.jobs.attack, "run_attacks", forbidden)
    monkeypatch.setattr(hevit.federated.FederationKeys, "generate", forbidden)
    monkeypatch.setattr("hevit.features.vit.build_model", forbidden)


def _one_line_error(capsys, code):
    captured = capsys.readouterr()
    assert code in (1, 2), (code, captured)
    assert "Traceback" not in captured.err
    assert captured.err.count("\n") == 1, captured.err
    return captured.err


def _cases(tmp_path):
    from hevit.federated.config import STRATEGIES
    from hevit.federated.models import HEADS
    from hevit.he import PRESETS

    feats = str(_features(tmp_path / "f.npz"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "report.json").write_text("{}")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    (keys / "updates.key").write_bytes(b"x")
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(3):
        (flat / f"tile{k}.png").write_bytes(b"not decoded: listing only")
    lc = str(require_lc25000())
    out = str(tmp_path / "new-run")
    exp = ["experiment", "--features", feats, "--out", out]
    return [
        ([*exp, "--strategies", "he-x"], ["'he-x'", ", ".join(STRATEGIES)]),
        ([*exp, "--head", "linear,lin"], ["'lin'", ", ".join(HEADS)]),
        ([*exp, "--inference-preset", "bogus"], ["'bogus'", ", ".join(PRESETS)]),
        ([*exp, "--inference-preset", "single-row"], ["--inference-layout sample"]),
        ([*exp, "--clients", "500"], ["at most --clients 84"]),
        ([*exp, "--quorum", "5"], ["from 1 to --clients (3)"]),
        ([*exp, "--cv", "1"], ["at least 2 folds"]),
        ([*exp, "--rounds", "0"], ["rounds must be >= 1"]),
        (["experiment", "--data", lc, "--model", "vit_tiy_patch16_224", "--out", out], ["did you mean vit_tiny_patch16_224"]),
        (["demo", "--model", "resnet50", "--out", out], ["not a ViT"]),
        (["experiment", "--data", lc, "--weights", str(tmp_path / "none.pt"), "--out", out], ["no such file"]),
        (["experiment", "--data", str(flat), "--out", out], ["3 images but no class sub-folders", "own sub-folder"]),
        (["extract", "--data", str(flat), "--out", str(tmp_path / "x.npz")], ["no class sub-folders"]),
        (["experiment", "--out", out], ["exactly one of --data"]),
        (["experiment", "--features", feats, "--test-data", lc, "--out", out], ["--test-data goes with --data"]),
        (["experiment", "--features", feats, "--tokens", "cls:x", "--out", out, "--trainable-blocks", "2"], ["--trainable-blocks needs --data"]),
        ([*exp[:-1], str(full)], ["already holds 1 entries (report.json)", "--overwrite"]),
        (["demo", "--out", str(full)], ["--overwrite"]),
        (["attack", "--data", lc, "--out", str(full)], ["--overwrite"]),
        (["extract", "--data", lc, "--out", feats], ["f.npz already exists", "--overwrite"]),
        (["keygen", "--classes", "3", "--hospital-keys", str(keys), "--server-keys", str(tmp_path / "s")], ["never overwritten", "new folder"]),
        (["keygen", "--classes", "3", "--hospital-keys", str(tmp_path / "h"), "--server-keys", str(keys)], ["never overwritten"]),
        (["keygen", "--classes", "3", "--update-preset", "nope", "--hospital-keys", str(tmp_path / "h"), "--server-keys", str(tmp_path / "s")], ["'nope'"]),
        (["flower-credentials", "--out", str(keys)], ["never overwritten"]),
        ([*exp, "--partition", "x"], ["invalid choice", "--help"]),
    ]  # fmt: skip


def test_everyday_mistakes_are_one_line_naming_the_fix_before_any_work(tmp_path, capsys, no_work):
    for argv, expected in _cases(tmp_path):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own errors exit
            code = exit_.code
        err = _one_line_error(capsys, code)
        for text in expected:
            assert text in err, (argv, err)
        assert not (tmp_path / "new-run").exists()


def test_debug_keeps_the_traceback(tmp_path):
    feats = str(_features(tmp_path / "f.npz"))
    with pytest.raises(UsageError, match="unknown strategy"):
        main(["--debug", "experiment", "--features", feats, "--strategies", "x", "--out", "o"])


def test_an_output_is_replaced_only_with_overwrite_and_that_is_said(tmp_path, capsys):
    feats = str(_features(tmp_path / "f.npz"))
    run = tmp_path / "run"
    args = ["experiment", "--features", feats, "--rounds", "1", "--strategies", "he-ridge"]
    assert main([*args, "--out", str(run)]) == 0
    first = json.loads((run / "report.json").read_text())
    capsys.readouterr()
    assert main([*args, "--out", str(run), "--seed", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((run / "report.json").read_text()) == first  # untouched
    assert main([*args, "--out", str(run), "--seed", "1", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert sum("--overwrite" in line for line in out.splitlines()) == 1
    assert json.loads((run / "report.json").read_text())["seed"] == 1 != first["seed"]


def test_test_features_from_another_extraction_are_refused(tmp_path, capsys, no_work):
    meta = {"model": {"name": "vit_tiny_patch16_224", "kwargs": {}}, "tokens": "cls", "tta": 1}
    train = _features(tmp_path / "train.npz", metadata=meta)
    test = _features(tmp_path / "test.npz", metadata={**meta, "tta": 8})
    argv = ["experiment", "--features", str(train), "--test-features", str(test), "--out", "o"]
    err = _one_line_error(capsys, main(argv))
    assert "extracted differently (tta)" in err and "same --model, --weights" in err


def test_ctrl_c_is_one_line(tmp_path, capsys, monkeypatch):
    import hevit.jobs.experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hevit.jobs.experiment, "run_experiment", interrupted)
    feats = str(_features(tmp_path / "f.npz"))
    assert main(["experiment", "--features", feats, "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert err == "hevit experiment: interrupted (Ctrl-C)\n"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "experiment", "--features", feats, "--out", str(tmp_path / "r")])


def test_interrupted_extraction_resumes_from_its_partial_cache(tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first batch: one line saying what is kept; the rerun starts after it and
    gives the features of an uninterrupted extraction."""
    from hevit.features.extractor import ClsExtractor

    common = ["--data", str(require_lc25000()), "--limit-per-class", "2", "--batch-size", "2"]
    common += ["--img-size", "200", "--patch-size", "25", "--cache-dir", str(tmp_path / "cache")]
    assert main(["extract", *common, "--out", str(tmp_path / "whole.npz")]) == 0
    whole = FeatureSet.load(tmp_path / "whole.npz")

    original = ClsExtractor.extract_images
    calls = []

    def interrupt_second_batch(self, images):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, images)

    monkeypatch.setattr(ClsExtractor, "extract_images", interrupt_second_batch)
    capsys.readouterr()
    out = tmp_path / "resumed.npz"
    assert main(["extract", *common, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    lines = [line for line in err.split("\n") if line and not line.startswith("\r")]  # no bar
    assert "Traceback" not in err and len(lines) == 1, err
    assert "interrupted (Ctrl-C): 2 of 6 images extracted and kept in" in err
    assert "run the same command again to resume" in err and not out.exists()
    partial = list((tmp_path / "cache" / "partial").glob("*.npz"))
    assert len(partial) == 1

    monkeypatch.setattr(ClsExtractor, "extract_images", original)
    assert main(["extract", *common, "--out", str(out)]) == 0
    assert "resuming: 2 of 6 images already extracted" in capsys.readouterr().out
    resumed = FeatureSet.load(out)
    np.testing.assert_array_equal(resumed.features, whole.features)
    assert resumed.paths == whole.paths and resumed.metadata["resumed_after_images"] == 2
    assert not partial[0].exists()  # removed once complete


def test_pretrained_weights_offline_fail_at_once_without_retries(tmp_path, monkeypatch, caplog):
    """No cached weights and no reachable hub: one ModelError naming the alternatives, and no
    request retried (huggingface_hub retries five times per file, a minute in all)."""
    import huggingface_hub.constants as hub

    from hevit.errors import ModelError
    from hevit.features.vit import ViTSpec, build_model

    monkeypatch.setattr(hub, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    caplog.set_level("DEBUG")
    with pytest.raises(
        ModelError, match="not in the local Hugging Face cache and the hub cannot be reached"
    ):
        build_model(ViTSpec.make("vit_tiny_patch16_224"), weights="pretrained")
    assert not [r for r in caplog.records if "Retry" in r.getMessage()]
    assert hub.HF_HUB_OFFLINE is False  # the offline switch is put back


def test_secret_folders_are_created_owner_only(tmp_path, capsys):
    old = os.umask(0o022)  # a usual umask: folders would be 0755 by default
    try:
        hospital, server = tmp_path / "a" / "hospital-keys", tmp_path / "server-keys"
        argv = ["keygen", "--dim", "8", "--classes", "3"]
        assert main([*argv, "--hospital-keys", str(hospital), "--server-keys", str(server)]) == 0
        assert stat.S_IMODE(hospital.stat().st_mode) == 0o700
        creds = tmp_path / "b" / "creds"
        assert main(["flower-credentials", "--out", str(creds), "--nodes", "1"]) == 0
        for folder in (creds, creds / "tls", creds / "nodes"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    finally:
        os.umask(old)
