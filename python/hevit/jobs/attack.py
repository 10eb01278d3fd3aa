"""``hevit attack``: reconstruct real images from what each strategy exposes, and score them.

Rows are (threat model, attack) pairs; columns PSNR, SSIM, NMI ([0, 1] and scikit-image's
[1, 2]) and LPIPS as mean and standard deviation over K images, with the paper's numbers beside.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import he, metrics
from ..attacks import (
    ciphertext_only_reconstruction,
    feature_inversion,
    invert_patch_embedding,
    inverting_gradients,
    observe,
)
from ..attacks.threat_models import THREAT_MODELS, Victim
from ..data import ImageFolder
from ..features.preprocess import PreprocessConfig, preprocess_images
from ._figures import agg_figure

__all__ = ["ATTACKS_BY_THREAT", "PAPER", "AttackReport", "AttackRow", "run_attacks"]

#: Which attacks apply to what each threat model observes.
ATTACKS_BY_THREAT = {
    "plain-fedavg": ("analytic", "inverting-gradients"),
    "leak-cls": ("feature-inversion",),
    "he-fedavg": ("ciphertext-only",),
    "he-ridge": ("ciphertext-only",),
    "he-cls": ("ciphertext-only",),
}

#: The reference paper's numbers (unprotected gradient inversion; protected updates).
PAPER = {
    "unprotected": "PSNR 52.26 dB, SSIM 0.999, NMI 0.741",
    "protected": "PSNR < 20 dB, SSIM ~ 0, NMI ~ 0",
}


@dataclass
class AttackRow:
    threat: str
    attack: str
    encrypted: bool
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    nmi: list[float] = field(default_factory=list)
    nmi_skimage: list[float] = field(default_factory=list)
    lpips: list[float] = field(default_factory=list)
    seconds: float = 0.0
    objective_first_last: list[tuple[float, float]] = field(default_factory=list)

    def summary(self, name: str) -> tuple[float, float]:
        values = np.asarray(getattr(self, name), dtype=float)
        return float(values.mean()), float(values.std())


@dataclass
class AttackReport:
    data: str
    model: str
    weights: str
    n_images: int
    seed: int
    rows: list[AttackRow] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = [
            "| threat model | attack | PSNR dB | SSIM | NMI [0,1] | NMI skimage [1,2] | LPIPS | paper |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            cells = []
            for name in ("psnr", "ssim", "nmi", "nmi_skimage", "lpips"):
                m, s = r.summary(name)
                cells.append(f"{m:.3f} ± {s:.3f}" if name != "psnr" else f"{m:.2f} ± {s:.2f}")
            paper = (
                PAPER["protected"]
                if r.encrypted
                else (PAPER["unprotected"] if r.attack == "analytic" else "")
            )
            lines.append(f"| {r.threat} | {r.attack} | " + " | ".join(cells) + f" | {paper} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["summary"] = {
            f"{r.threat}/{r.attack}": {
                n: r.summary(n) for n in ("psnr", "ssim", "nmi", "nmi_skimage", "lpips")
            }
            for r in self.rows
        }
        return out


def _build_model(
    classes: int,
    *,
    model_name: str,
    img_size: int | None,
    patch_size: int | None,
    weights,
    seed: int,
):
    import timm
    import torch

    from ..features.vit import ViTSpec, build_model

    overrides = {
        k: v for k, v in (("img_size", img_size), ("patch_size", patch_size)) if v is not None
    }
    spec = ViTSpec.make(model_name, **overrides)
    backbone, info = build_model(spec, weights=weights, seed=seed)
    # the clients fine-tune the ViT with a classification head for their classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(model_name, num_classes=classes, **overrides)
    model.load_state_dict(backbone.state_dict(), strict=False)
    return model.eval(), info


def run_attacks(
    data_dir,
    *,
    threats,
    n_images: int = 4,
    seed: int = 0,
    img_size: int | None = 200,
    patch_size: int | None = 25,
    weights="random",
    ig_iterations: int = 30,
    fi_iterations: int = 30,
    out_dir=None,
    progress: bool = True,
    model: str = "vit_base_patch16_224",
) -> AttackReport:
    """Runs every applicable attack of every threat model on ``n_images`` images of ``data_dir``
    (``model`` with ``img_size``/``patch_size`` overrides, ``None`` keeping the model's own)."""
    from tqdm.auto import tqdm

    for t in threats:
        if t not in THREAT_MODELS:
            raise ValueError(f"unknown threat model {t!r}; choose from {sorted(THREAT_MODELS)}")
    folder = ImageFolder(data_dir)
    model_name = model
    model, info = _build_model(
        len(folder.classes),
        model_name=model_name,
        img_size=img_size,
        patch_size=patch_size,
        weights=weights,
        seed=seed,
    )
    size, patch = model.patch_embed.img_size[0], model.patch_embed.patch_size[0]
    print(f"attacked model: {model_name} {size}px / patch {patch}; weights: {info.description}")
    img_size, patch_size = size, patch
    config = PreprocessConfig(
        (3, img_size, img_size), "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.9
    )
    picks = np.linspace(0, len(folder) - 1, n_images).astype(int)
    key_holder = he.SecretContext.generate(he.CkksParams.preset("throughput"))
    report = AttackReport(
        str(folder.root),
        f"{model_name} {img_size}px patch {patch_size}",
        info.description,
        n_images,
        seed,
        images=[folder.paths[int(i)] for i in picks],
    )
    rows = {
        (t, a): AttackRow(t, a, THREAT_MODELS[t].encrypted)
        for t in threats
        for a in ATTACKS_BY_THREAT[t]
    }
    grid = {"original": []}
    bar = tqdm(total=len(picks) * len(rows), desc="attacks", disable=not progress)
    for k, i in enumerate(picks):
        image = preprocess_images([folder.load(int(i))], config)
        victim = Victim(model, image, (int(folder.labels[i]),), config.mean, config.std, patch_size)
        truth = victim.to_unit_range(image)
        grid["original"].append(truth)
        for (threat, attack), row in rows.items():
            start = time.perf_counter()
            obs = observe(
                threat,
                victim,
                secret_context=key_holder if THREAT_MODELS[threat].encrypted else None,
            )
            if attack == "analytic":
                rec = invert_patch_embedding(
                    obs.plaintext["patch_embed.proj.weight"],
                    obs.plaintext["pos_embed"],
                    image_size=(img_size, img_size),
                )
            elif attack == "inverting-gradients":
                trace = inverting_gradients(
                    model,
                    obs.plaintext,
                    victim.labels,
                    image_shape=image.shape,
                    iterations=ig_iterations,
                    seed=seed + k,
                    parameter_names=["patch_embed.proj.weight", "pos_embed", "head.weight"],
                )
                rec = trace.image
                row.objective_first_last.append((trace.objective[0], trace.objective[-1]))
            elif attack == "feature-inversion":
                trace = feature_inversion(
                    model,
                    obs.plaintext["cls"],
                    image_shape=image.shape,
                    iterations=fi_iterations,
                    seed=seed + k,
                )
                rec = trace.image
                row.objective_first_last.append((trace.objective[0], trace.objective[-1]))
            else:
                rec = ciphertext_only_reconstruction(obs, shape=image.shape)
            row.seconds += time.perf_counter() - start
            guess = victim.to_unit_range(rec)
            grid.setdefault(f"{threat}\n{attack}", []).append(guess)
            row.psnr.append(metrics.psnr(truth, guess, data_range=1.0))
            row.ssim.append(metrics.ssim(truth, guess, data_range=1.0))
            row.nmi.append(metrics.nmi(truth, guess, data_range=1.0))
            row.nmi_skimage.append(metrics.nmi_skimage(truth, guess))
            row.lpips.append(metrics.lpips(truth, guess, data_range=1.0))
            bar.update(1)
    bar.close()
    report.rows = list(rows.values())
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "attack_report.json").write_text(json.dumps(report.to_dict(), indent=2))
        (out / "attack_report.md").write_text(
            f"# Privacy evaluation\n\ndata: {report.data}; model: {report.model}; weights: {report.weights}; "
            f"{n_images} images\n\n{report.table()}\n"
        )
        _save_grid(grid, out / "attack_grid.png")
    return report


def _save_grid(grid: dict[str, list[np.ndarray]], path: Path) -> None:
    names = list(grid)
    cols = len(grid["original"])
    fig, axes = agg_figure((1.8 * cols + 1.6, 1.8 * len(names)), len(names), cols)
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(grid[name][c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
