"""Report plots and headers a reader can trust: every series visible, legends beside the data,
accuracy within [0, 1], no black tiles, and report.md naming the features it was run on."""

import numpy as np

from hevit.jobs.attack import _save_grid
from hevit.jobs.experiment import PAPER_REFERENCE, ExperimentReport, _features_line, _plot


def _entry(strategy, head, accuracy):
    rounds = [
        {"round": k + 1, "accuracy": a, "bytes_up": {"c0": 10}, "bytes_down": {"c0": 10}}
        for k, a in enumerate(accuracy)
    ]
    return {
        "strategy": strategy,
        "head": head,
        "rounds": rounds,
        "bytes_per_round": [1000 * (k + 1) for k in range(len(rounds))],
        "seconds": {"train": 0.5, "encrypt": 0.1},
        "epsilon": None,
        "final_accuracy": accuracy[-1],
        "inference": {
            "seconds": {"encrypt": 0.01, "infer": 0.02},
            "rows": 10,
            "accuracy_encrypted": accuracy[-1],
            "agreement": 1.0,
            "bytes_up_per_image": 1,
            "bytes_down_per_image": 1,
            "layout": "batch",
        },
    }


def _report(features):
    same = [0.8, 0.95, 1.0]  # plain-fedavg and he-fedavg train the same model: same numbers
    report = ExperimentReport(
        data="d", clients=3, classes=["a", "b"], train_rows=10, test_rows=10, seed=0,
        partition="iid", config={}, features=features, client_class_balance=[[1, 1]] * 3,
        centralized_ridge_accuracy=None, keygen_seconds=None,
    )  # fmt: skip
    report.strategies = [
        _entry("plain-fedavg", "linear", same),
        _entry("plain-fedavg", "mlp", [0.5, 0.7, 0.9]),
        _entry("he-fedavg", "linear", same),
        _entry("he-fedavg", "mlp", [0.5, 0.7, 0.9]),
        _entry("he-ridge", "linear", [1.0]),
    ]
    return report


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_every_series_is_visible_and_legends_sit_beside_the_data(tmp_path):
    report = _report({})
    figures = _plot(report, tmp_path)
    assert sorted(figures) == [p.name for p in sorted(tmp_path.glob("*.png"))]
    for name in ("accuracy_per_round.png", "bytes_per_round.png"):
        ax = figures[name].axes[0]
        lines = {
            line.get_label(): line for line in ax.get_lines() if "paper" not in line.get_label()
        }
        assert len(lines) == len(report.strategies)
        looks = {
            (s.get_linestyle(), s.get_marker(), s.get_markersize(), s.get_linewidth(), s.get_color())
            for s in lines.values()
        }  # fmt: skip
        assert len(looks) == len(lines), "two series drawn alike hide each other"
        # identical data: the first drawn is wider and has larger markers than the one on top
        under, over = lines["plain-fedavg"], lines["he-fedavg"]
        np.testing.assert_array_equal(under.get_ydata(), over.get_ydata())
        assert under.get_linewidth() > over.get_linewidth()
        assert under.get_markersize() > over.get_markersize()
    for fig in figures.values():
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend()
        assert not _overlaps(legend.get_window_extent(), ax.get_window_extent())
    accuracy = figures["accuracy_per_round.png"].axes[0]
    low, high = accuracy.get_ylim()
    assert 0.0 <= low and high == 1.0
    assert all(not line.get_clip_on() for line in accuracy.get_lines()[:5])  # 1.0 stays whole


def test_report_md_names_model_weights_tokens_and_tta():
    features = {
        "model": {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 200}},
        "weights": {"description": "weights from shared.safetensors (sha256 ab...)"},
        "tokens": "cls:7,9,11,12",
        "tta": 8,
        "provider": "CPUExecutionProvider",
    }
    md = _report(features).markdown()
    line = next(text for text in md.splitlines() if text.startswith("Features: model"))
    for text in (
        "vit_tiny_patch16_224 (img_size=200)",
        "weights from shared.safetensors",
        "tokens cls:7,9,11,12 (the [CLS] after blocks 7, 9, 11, 12",
        "mean over 8 rotations/flips",
        "CPUExecutionProvider",
    ):
        assert text in line, (text, line)
    assert "no test-time augmentation" in _features_line({**features, "tta": 1})
    assert PAPER_REFERENCE["plaintext_accuracy"] == 0.9612


def test_features_without_metadata_are_called_unknown():
    md = _report({}).markdown()
    assert "Features: unknown (features file without metadata)." in md and "?" not in md


def test_attack_grid_draws_no_black_tile_for_an_attack_on_fewer_images(tmp_path):
    rng = np.random.default_rng(0)
    original = [rng.random((8, 8, 3)) for _ in range(3)]
    grid = {"original": original, "attack\nB=1": [rng.random((8, 8, 3))], "other": original}
    fig = _save_grid(grid, tmp_path / "grid.png")
    shown = [im.get_array() for ax in fig.axes for im in ax.get_images()]
    assert len(shown) == 3 + 1 + 3  # the two missing cells hold no image
    for image in shown:
        assert np.ptp(image) > 0  # no constant (black) tile
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("attacks image 1 only\n(batch of 1)") == 2


def test_privacy_utility_plot_keeps_both_strategies_visible_and_legends_off_the_data(tmp_path):
    import math

    from hevit.jobs.attack import AttackReport, DpPoint, _save_privacy_utility

    report = AttackReport("d", "m", "w", 2, 0, 2, False, dp_rounds=1)
    for z, eps, acc in ((None, math.inf, 0.9), (0.5, 30.0, 0.6), (2.0, 3.0, 0.35)):
        same = {"plain-fedavg": acc, "he-fedavg": acc}
        report.dp_points.append(DpPoint(z, eps, same, same, {"psnr": 8.0, "ssim": 0.01}))
    fig = _save_privacy_utility(report, tmp_path / "pu.png")
    fig.canvas.draw()
    for ax in fig.axes:
        assert not _overlaps(ax.get_legend().get_window_extent(), ax.get_window_extent())
        assert [t.get_text() for t in ax.get_xticklabels()] == ["no DP", "30", "3"]
    plain, he = fig.axes[1].get_lines()[:2]
    np.testing.assert_array_equal(plain.get_ydata(), he.get_ydata())
    assert plain.get_linewidth() > he.get_linewidth()
    assert plain.get_markersize() > he.get_markersize()
