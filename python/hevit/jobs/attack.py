"""``hevit attack``: what each party of a hevit federation really learns, on the model we deploy.

Every observation comes from the code that sends it (:mod:`hevit.attacks.threat_models`):

1. Token recovery: the server of ``plain-fedavg`` reads a hospital's head update and divides
   weight by bias changes (:mod:`hevit.attacks.token_recovery`); cosine to the true [CLS] tokens
   for victims holding 1, 4 and 16 images.
2. Token -> image: feature inversion (cosine objective, total-variation prior) of the recovered
   token and of a leaked one, with the attacked ViT.
3. Full-model updates (``--trainable-blocks all``: 12 blocks, norm and head; patch and position
   embeddings frozen): inverting gradients on the update message at batch 1, 4 and 8.
4. The paper's setting (every parameter trainable, which hevit never sends): the analytic
   patch-embedding inversion.
5. Ciphertext-only: a distinguishing game on the bytes of ``he-cls``, ``he-fedavg`` and
   ``he-ridge`` messages, beside the same adversary on the plaintext messages (which must win);
   the old "decode ciphertext bytes as pixels" row stays as a labelled baseline.
6. Differential privacy: token recovery and inversion quality against epsilon, beside accuracy
   against epsilon, for ``plain-fedavg`` and ``he-fedavg`` (one privacy-utility plot).

Image rows score PSNR, SSIM, NMI ([0, 1] and scikit-image's [1, 2]) and LPIPS per image.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import metrics
from .._optional import require
from ..attacks import (
    THREAT_MODELS,
    ciphertext_features,
    cosine_to_truth,
    decode_as_plaintext,
    distinguishing_game,
    feature_inversion,
    head_delta,
    invert_patch_embedding,
    inverting_gradients,
    message_payload,
    paper_setting_gradients,
    plain_update_delta,
    recover_tokens,
    victim_client,
)
from ..data import ImageFolder, iid_partition, stratified_split
from ..errors import ModelError
from ..federated import (
    DPConfig,
    FederatedConfig,
    FederationKeys,
    centralized_ridge,
    make_clients,
    normalize_rows,
    run_strategy,
)
from ..federated.models import LinearHead
from ._figures import agg_figure

__all__ = ["PAPER", "AttackReport", "run_attacks"]

#: The reference paper's numbers (unprotected gradient inversion; protected updates).
PAPER = {
    "unprotected": "PSNR 52.26 dB, SSIM 0.999, NMI 0.741",
    "protected": "PSNR < 20 dB, SSIM ~ 0, NMI ~ 0",
}

#: What an observer of the encrypted protocol still learns, whatever the attack.
LEAKS_BY_DESIGN = (
    "Message sizes: a ciphertext's size depends only on the parameters and the shape (rows x "
    "features), so the server learns how many images each request carries and how many rows "
    "each hospital trains on (FedAvg updates carry the count in the encrypted vector, but the "
    "number of requests and their timing are visible). Counts: which hospital takes part in "
    "which round, and dropouts. Timing: when each hospital sends, and the server's own "
    "evaluation time (which depends on the shape, not the values). Released aggregates: every "
    "key holder sees the flooded global model, i.e. the sum of all updates (DP bounds what that "
    "sum says about one image)."
)

_METRICS = ("psnr", "ssim", "nmi", "nmi_skimage", "lpips")


@dataclass
class ImageRow:
    """One (threat, attack, setting) row scored per image."""

    threat: str
    attack: str
    setting: str
    encrypted: bool = False
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    nmi: list[float] = field(default_factory=list)
    nmi_skimage: list[float] = field(default_factory=list)
    lpips: list[float] = field(default_factory=list)
    seconds: float = 0.0
    objective_first_last: list[tuple[float, float]] = field(default_factory=list)

    def summary(self, name: str) -> tuple[float, float] | None:
        values = np.asarray(getattr(self, name), dtype=float)
        return (float(values.mean()), float(values.std())) if values.size else None


@dataclass
class TokenRow:
    """Token recovery from one plain-fedavg head update of a victim holding ``batch`` images."""

    batch: int
    cosines: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.cosines))


@dataclass
class GameRow:
    strategy: str
    observed: str
    result: dict


@dataclass
class DpPoint:
    noise_multiplier: float | None
    epsilon: float
    accuracy: dict[str, float]
    token_cosine: dict[str, float]
    inversion: dict[str, float]


@dataclass
class AttackReport:
    data: str
    model: str
    weights: str
    n_images: int
    seed: int
    budget: int
    lpips: bool
    images: list[str] = field(default_factory=list)
    image_rows: list[ImageRow] = field(default_factory=list)
    token_rows: list[TokenRow] = field(default_factory=list)
    game_rows: list[GameRow] = field(default_factory=list)
    dp_points: list[DpPoint] = field(default_factory=list)
    dp_rounds: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    leaks_by_design: str = LEAKS_BY_DESIGN

    def image_table(self) -> str:
        lines = [
            "| threat model | attack | setting | PSNR dB | SSIM | NMI [0,1] | NMI skimage [1,2] "
            "| LPIPS | paper |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.image_rows:
            cells = []
            for name in _METRICS:
                s = r.summary(name)
                digits = 2 if name == "psnr" else 3
                cells.append("n/a" if s is None else f"{s[0]:.{digits}f} ± {s[1]:.{digits}f}")
            paper = PAPER["protected"] if r.encrypted else ""
            if r.threat == "paper-setting":
                paper = PAPER["unprotected"]
            lines.append(
                f"| {r.threat} | {r.attack} | {r.setting} | " + " | ".join(cells) + f" | {paper} |"
            )
        return "\n".join(lines)

    def token_table(self) -> str:
        lines = [
            "| victim's images in the update | cos(recovered, true token): mean | min |",
            "|---|---|---|",
        ]
        for r in self.token_rows:
            lines.append(f"| {r.batch} | {r.mean:.4f} | {min(r.cosines):.4f} |")
        return "\n".join(lines)

    def game_table(self) -> str:
        lines = [
            "| strategy | the adversary sees | advantage [95% CI] | train / test | features |",
            "|---|---|---|---|---|",
        ]
        for g in self.game_rows:
            r = g.result
            lines.append(
                f"| {g.strategy} | {g.observed} | {r['advantage']:+.3f} "
                f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['train']} / {r['test']} "
                f"| {r['features']} |"
            )
        return "\n".join(lines)

    def dp_table(self) -> str:
        lines = [
            "| noise multiplier | epsilon | acc plain-fedavg | acc he-fedavg | token cos (server, "
            "plain-fedavg) | token cos (key holder, he-fedavg aggregate) | inversion PSNR / SSIM |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in self.dp_points:
            z = "no DP" if p.noise_multiplier is None else f"{p.noise_multiplier:g}"
            eps = "inf" if math.isinf(p.epsilon) else f"{p.epsilon:.2f}"
            lines.append(
                f"| {z} | {eps} | {p.accuracy['plain-fedavg']:.4f} | "
                f"{p.accuracy['he-fedavg']:.4f} | {p.token_cosine['plain-fedavg']:.4f} | "
                f"{p.token_cosine['he-fedavg']:.4f} | {p.inversion['psnr']:.2f} / "
                f"{p.inversion['ssim']:.3f} |"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        return (
            f"# Privacy evaluation\n\ndata: {self.data}; model: {self.model}; weights: "
            f"{self.weights}; {self.n_images} images; optimisation budget {self.budget} "
            f"iterations; LPIPS {'on' if self.lpips else 'off (--no-lpips)'}\n\n"
            "## Image reconstruction\n\n"
            f"{self.image_table()}\n\n"
            "## Token recovery from plain-fedavg head updates\n\n"
            f"{self.token_table()}\n\n"
            "## Ciphertext-only adversary: distinguishing game (class 0 vs class 1)\n\n"
            f"{self.game_table()}\n\n"
            f"## Differential privacy against the attacks ({self.dp_rounds} rounds)\n\n"
            f"{self.dp_table()}\n\n"
            f"## What leaks by design\n\n{self.leaks_by_design}\n"
        )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["image_summary"] = {
            f"{r.threat}/{r.attack}/{r.setting}": {n: r.summary(n) for n in _METRICS}
            for r in self.image_rows
        }
        out["token_summary"] = {str(r.batch): r.mean for r in self.token_rows}
        return out


# ---------------------------------------------------------------------------------- the model
def _build_classifier(classes: int, *, model_name: str, overrides: dict, weights, seed: int):
    """The ViT the clients fine-tune, with a seeded classification head for their classes."""
    timm = require("timm", "vit")
    torch = require("torch", "vit")

    from ..features.vit import ViTSpec, build_model

    spec = ViTSpec.make(model_name, **overrides)
    backbone, info = build_model(spec, weights=weights, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(model_name, num_classes=classes, **overrides)
    # the backbone has no head (num_classes=0): every other key must match
    missing, unexpected = model.load_state_dict(backbone.state_dict(), strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise ModelError(f"backbone does not fit the classifier: {missing}, {unexpected}")
    return model.eval(), info


def _cls_tokens(model, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """Final-norm [CLS] tokens (what ``--tokens cls`` extracts) of preprocessed images."""
    torch = require("torch", "vit")

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch])
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).numpy())
    return np.concatenate(out).astype(np.float64)


def _front_and_tail(base, tail_module):
    """The adversary's copy of a ViT-tail federation as one torch module: the frozen front of
    ``base`` (patch and position embeddings) followed by the shared tail, whose parameters are
    named ``tail.<name>``."""
    torch = require("torch", "vit")

    class FrontAndTail(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.tail = tail_module
            for p in self.base.parameters():
                p.requires_grad_(False)

        def forward(self, x):
            x = self.base.patch_embed(x)
            x = self.base._pos_embed(x)
            x = self.base.norm_pre(x)
            return self.tail(x)

    return FrontAndTail().eval()


# ---------------------------------------------------------------------------------- scoring
class _Scorer:
    """Adds one image pair's scores to a row (LPIPS only when asked for)."""

    def __init__(self, use_lpips: bool) -> None:
        self.lpips = metrics.lpips if use_lpips else None

    def add(self, row: ImageRow, truth: np.ndarray, guess: np.ndarray) -> None:
        row.psnr.append(metrics.psnr(truth, guess, data_range=1.0))
        row.ssim.append(metrics.ssim(truth, guess, data_range=1.0))
        row.nmi.append(metrics.nmi(truth, guess, data_range=1.0))
        row.nmi_skimage.append(metrics.nmi_skimage(truth, guess))
        if self.lpips is not None:
            row.lpips.append(self.lpips(truth, guess, data_range=1.0))


def _to_unit(x: np.ndarray, preprocess) -> np.ndarray:
    """Normalised (B, 3, H, W) -> list of (H, W, 3) images in [0, 1]."""
    mean = np.asarray(preprocess.mean).reshape(1, 3, 1, 1)
    std = np.asarray(preprocess.std).reshape(1, 3, 1, 1)
    return np.clip(x * std + mean, 0.0, 1.0).transpose(0, 2, 3, 1)


# ---------------------------------------------------------------------------------- the job
def run_attacks(
    data_dir,
    *,
    model: str = "vit_tiny_patch16_224",
    weights="random",
    n_images: int = 4,
    seed: int = 0,
    budget: int = 40,
    img_size: int | None = None,
    patch_size: int | None = None,
    token_batches: tuple[int, ...] = (1, 4, 16),
    ig_batches: tuple[int, ...] = (1, 4, 8),
    game_trials: int = 150,
    dp_noise: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
    dp_rounds: int = 5,
    utility_per_class: int = 40,
    use_lpips: bool = True,
    out_dir=None,
    progress: bool = True,
) -> AttackReport:
    """Runs the privacy evaluation (see the module docstring) and writes ``attack_report.json``,
    ``attack_report.md``, ``attack_grid.png`` and ``privacy_utility.png`` to ``out_dir``."""
    tqdm = require("tqdm.auto", "vit").tqdm

    from ..features.preprocess import PreprocessConfig, preprocess_images
    from ..federated.tail import ViTTail, prefix_tokens

    if budget < 1 or n_images < 1 or game_trials < 10:
        raise ValueError("budget and n_images must be >= 1, game_trials >= 10")
    if use_lpips:
        # fail before any attack work when the LPIPS weights cannot be had
        from ..metrics.lpips import alexnet_weights_path

        alexnet_weights_path()
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    folder = ImageFolder(data_dir)
    classes = len(folder.classes)
    overrides = {
        k: v for k, v in (("img_size", img_size), ("patch_size", patch_size)) if v is not None
    }
    clf, info = _build_classifier(
        classes, model_name=model, overrides=overrides, weights=weights, seed=seed
    )
    preprocess = PreprocessConfig.for_model(clf)
    size = clf.patch_embed.img_size[0]
    print(f"attacked model: {model} {size}px; weights: {info.description}")

    # images: evaluation picks spread over the classes, then a disjoint pool for larger
    # victims, the utility curve and the distinguishing game
    rng = np.random.default_rng(seed)
    labels = np.asarray(folder.labels)
    picks = np.linspace(0, len(folder) - 1, n_images).astype(int)
    rest = np.setdiff1d(np.arange(len(folder)), picks)
    pool = np.concatenate(
        [rng.permutation(rest[labels[rest] == c])[:utility_per_class] for c in range(classes)]
    )
    extra = rng.permutation(pool)[: max(max(token_batches), max(ig_batches))]
    needed = np.unique(np.concatenate([picks, pool, extra]))
    t0 = time.perf_counter()
    images = {
        int(i): preprocess_images([folder.load(int(i))], preprocess)[0]
        for i in tqdm(needed, desc="load images", disable=not progress)
    }
    order = np.array(sorted(images))
    tokens_all = _cls_tokens(clf, np.stack([images[i] for i in order]))
    token = {int(i): tokens_all[k] for k, i in enumerate(order)}
    seconds["load and tokens"] = time.perf_counter() - t0
    report = AttackReport(
        str(folder.root),
        f"{model} {size}px",
        info.description,
        n_images,
        seed,
        budget,
        use_lpips,
        images=[folder.paths[int(i)] for i in picks],
        dp_rounds=dp_rounds,
    )
    scorer = _Scorer(use_lpips)
    truth = _to_unit(np.stack([images[int(i)] for i in picks]), preprocess)
    grid: dict[str, list[np.ndarray]] = {"original": list(truth)}
    pick_tokens = np.stack([token[int(i)] for i in picks])
    pick_labels = labels[picks]

    # the federation's global head after one round: ridge on the pool's normalised tokens
    pool_x = normalize_rows(np.stack([token[int(i)] for i in pool]))
    config = FederatedConfig(seed=seed)
    global_head = centralized_ridge(pool_x, labels[pool], classes, alpha=config.ridge_alpha)

    # 1. token recovery from plain-fedavg head updates ------------------------------------
    t0 = time.perf_counter()
    victims_order = np.concatenate([picks, extra])
    recovered = []
    for b in token_batches:
        idx = victims_order[:b]
        client, estimates = _server_recovers(
            np.stack([token[int(i)] for i in idx]), labels[idx], global_head, classes, config
        )
        report.token_rows.append(
            TokenRow(b, cosine_to_truth(estimates, client.x).round(6).tolist())
        )
    for k in range(n_images):
        client, estimates = _server_recovers(
            pick_tokens[k : k + 1], pick_labels[k : k + 1], global_head, classes, config
        )
        recovered.append(estimates[np.argmax(cosine_to_truth(client.x, estimates))])
    seconds["token recovery"] = time.perf_counter() - t0

    shape = (n_images, 3, size, size)
    # one step per attack run: 2 feature inversions, one inverting-gradients run per batch size,
    # the analytic inversion, the ciphertext games, one DP point per noise level and without DP
    stages = 2 + len(ig_batches) + 1 + 1 + (1 + len(dp_noise))
    bar = tqdm(total=stages, desc="attacks", unit="attack", disable=not progress)

    def iterations(what: str):
        """A per-iteration bar for one optimisation attack (they run for minutes on a CPU)."""
        bar.set_postfix_str(what)
        inner = tqdm(total=budget, desc=f"  {what}", unit="it", leave=False, disable=not progress)
        return inner

    # 2. token -> image: feature inversion of the recovered and of the leaked tokens ---------
    for threat, setting, targets in (
        ("plain-fedavg", "token recovered from the head update (B=1)", np.stack(recovered)),
        ("leak-cls", "leaked token", pick_tokens),
    ):
        row = ImageRow(threat, "feature-inversion", setting)
        t0 = time.perf_counter()
        inner = iterations(f"feature inversion ({threat})")
        trace = feature_inversion(
            clf,
            targets,
            image_shape=shape,
            iterations=budget,
            seed=seed,
            on_iteration=inner.update,
        )
        inner.close()
        row.seconds = time.perf_counter() - t0
        row.objective_first_last.append((trace.objective[0], trace.objective[-1]))
        guesses = _to_unit(trace.image, preprocess)
        for k in range(n_images):
            scorer.add(row, truth[k], guesses[k])
        grid[f"{threat}\nfeature inversion"] = list(guesses)
        report.image_rows.append(row)
        bar.update(1)

    # 3. inverting gradients of hevit's full-model update (--trainable-blocks all) -----------
    depth = len(clf.blocks)
    # a copy: the adversary's front is frozen here, while the paper-setting row below still
    # needs gradients on the original's patch and position embeddings
    backbone = copy.deepcopy(clf)
    tail = ViTTail.from_vit(backbone, depth, classes)
    _set_head(tail, global_head)
    names = [n for n, _ in tail.module.named_parameters()]
    sizes = [p.numel() for _, p in tail.module.named_parameters()]
    shapes = [tuple(p.shape) for _, p in tail.module.named_parameters()]
    adversary_model = _front_and_tail(backbone, tail.module)
    for b in ig_batches:
        idx = victims_order[:b]
        batch_images = np.stack([images[int(i)] for i in idx])
        client = victim_client(
            prefix_tokens(backbone, batch_images, depth),
            labels[idx],
            classes=classes,
            config=config,
        )
        t0 = time.perf_counter()
        inner = iterations(f"inverting gradients B={b}")
        delta = plain_update_delta(client.update_message("plain-fedavg", tail, 1), tail, config)
        parts = np.split(-delta, np.cumsum(sizes)[:-1])
        observed = {
            f"tail.{n}": part.reshape(s) for n, part, s in zip(names, parts, shapes, strict=True)
        }
        trace = inverting_gradients(
            adversary_model,
            observed,
            labels[idx],
            image_shape=batch_images.shape,
            iterations=budget,
            seed=seed + b,
            on_iteration=inner.update,
        )
        inner.close()
        row = ImageRow("plain-fedavg", "inverting-gradients", f"full-model update, B={b}")
        row.seconds = time.perf_counter() - t0
        row.objective_first_last.append((trace.objective[0], trace.objective[-1]))
        truths = _to_unit(batch_images, preprocess)
        guesses = _to_unit(trace.image, preprocess)
        for k in range(b):
            scorer.add(row, truths[k], guesses[k])
        if b == 1:  # one victim image: the other columns stay empty (no tile drawn)
            grid["plain-fedavg\ninverting gradients B=1"] = list(guesses)
        report.image_rows.append(row)
        bar.update(1)

    # 4. the paper's setting: every parameter trainable, analytic inversion ----------------
    bar.set_postfix_str("analytic inversion")
    row = ImageRow(THREAT_MODELS["paper-setting"].name, "analytic", "all parameters, B=1")
    t0 = time.perf_counter()
    guesses = []
    for k in range(n_images):
        grads = paper_setting_gradients(clf, images[int(picks[k])][None], (pick_labels[k],))
        rec = invert_patch_embedding(
            grads["patch_embed.proj.weight"],
            grads["pos_embed"],
            image_size=(size, size),
            num_prefix_tokens=clf.num_prefix_tokens,
        )
        guesses.append(_to_unit(rec, preprocess)[0])
        scorer.add(row, truth[k], guesses[-1])
    row.seconds = time.perf_counter() - t0
    grid["paper setting\nanalytic"] = guesses
    report.image_rows.append(row)
    bar.update(1)

    # 5. ciphertext-only: distinguishing games and the labelled decoding baseline ------------
    bar.set_postfix_str("distinguishing games")
    t0 = time.perf_counter()
    keys = FederationKeys.generate(dim=pool_x.shape[1], classes=classes)
    _games(report, keys, token, pool, labels, global_head, classes, config, game_trials, seed)
    row = ImageRow(
        "he-cls", "baseline: ciphertext bytes read as pixels (noise by construction)", "B=1"
    )
    row.encrypted = True
    guesses = []
    for k in range(n_images):
        client = victim_client(
            pick_tokens[k : k + 1],
            pick_labels[k : k + 1],
            classes=classes,
            config=config,
            keys=keys,
        )
        blob = message_payload(client.inference_request(pick_tokens[k : k + 1]), "features")
        decoded = decode_as_plaintext(blob, int(np.prod(shape[1:]))).reshape(1, *shape[1:])
        guesses.append(_to_unit(decoded.astype(np.float32), preprocess)[0])
        scorer.add(row, truth[k], guesses[-1])
    grid["he-cls\nbytes as pixels (baseline)"] = guesses
    report.image_rows.append(row)
    seconds["ciphertext-only"] = time.perf_counter() - t0
    bar.update(1)

    # 6. differential privacy against the attacks ----------------------------------------
    bar.set_postfix_str("differential privacy")
    t0 = time.perf_counter()
    _dp_curve(
        report,
        clf,
        preprocess,
        keys,
        token,
        pool,
        labels,
        picks,
        images,
        global_head,
        classes,
        dp_noise,
        dp_rounds,
        budget,
        seed,
        scorer,
        on_point=lambda: bar.update(1),
    )
    seconds["differential privacy"] = time.perf_counter() - t0
    bar.close()
    for r in report.image_rows:
        seconds[f"{r.threat}/{r.attack}/{r.setting}"] = r.seconds
    seconds["total"] = time.perf_counter() - started
    report.seconds = seconds

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "attack_report.json").write_text(json.dumps(report.to_dict(), indent=2))
        (out / "attack_report.md").write_text(report.markdown())
        _save_grid(grid, out / "attack_grid.png")
        _save_privacy_utility(report, out / "privacy_utility.png")
    return report


def _server_recovers(rows, labels, head: LinearHead, classes: int, config: FederatedConfig):
    """The victim hospital holding ``rows`` sends its plain-fedavg update on ``head``; returns
    the client and the token estimates the server reads from that message."""
    client = victim_client(rows, labels, classes=classes, config=config)
    delta = plain_update_delta(client.update_message("plain-fedavg", head, 1), head, config)
    return client, recover_tokens(*head_delta(delta, classes, head.dim))


def _set_head(tail, head: LinearHead) -> None:
    """The tail's head takes the federation's global head (a zero head would leave the blocks
    without gradient, which is not the update a trained federation sends)."""
    torch = require("torch", "vit")

    with torch.no_grad():
        tail.module.head.weight.copy_(torch.from_numpy(head.weights))
        tail.module.head.bias.copy_(torch.from_numpy(head.bias))


def _games(report, keys, token, pool, labels, global_head, classes, config, trials, seed) -> None:
    """Class 0 against class 1: ``trials`` messages of each (a random pool image per message),
    under the real protocol, encrypted and plaintext."""
    rng = np.random.default_rng([seed, 0x6A6D])
    byte_features = 2048
    samples: dict[tuple[str, str], list[list[np.ndarray]]] = {}
    for side, cls in enumerate((0, 1)):
        members = pool[labels[pool] == cls]
        for _ in range(trials):
            i = int(rng.choice(members))
            row, y = token[i][None], labels[[i]]
            client = victim_client(row, y, classes=classes, config=config, keys=keys)
            observed = {
                ("he-cls", "ciphertext bytes"): ciphertext_features(
                    message_payload(client.inference_request(row), "features"), byte_features
                ),
                ("he-cls", "plaintext [CLS] row (unencrypted)"): client.preprocess(row)[0],
                ("he-fedavg", "ciphertext bytes"): ciphertext_features(
                    message_payload(client.update_message("he-fedavg", global_head, 1), "update"),
                    byte_features,
                ),
                ("he-fedavg", "plaintext update (plain-fedavg)"): np.asarray(
                    message_payload(client.update_message("plain-fedavg", global_head, 1), "update")
                ),
                ("he-ridge", "ciphertext bytes"): ciphertext_features(
                    message_payload(client.statistics_message(1), "statistics"), byte_features
                ),
                ("he-ridge", "plaintext statistics (unencrypted)"): client.statistics_vector(),
            }
            for key, value in observed.items():
                samples.setdefault(key, [[], []])[side].append(value)
    for (strategy, seen), (a, b) in samples.items():
        result = distinguishing_game(np.stack(a), np.stack(b), seed=seed)
        report.game_rows.append(GameRow(strategy, seen, result.to_dict()))


def _dp_curve(
    report,
    clf,
    preprocess,
    keys,
    token,
    pool,
    labels,
    picks,
    images,
    global_head,
    classes,
    dp_noise,
    rounds,
    budget,
    seed,
    scorer,
    on_point=None,
) -> None:
    """Accuracy (3 hospitals on the pool, held-out 30%), the server's token recovery from a
    plain-fedavg update, a key holder's token recovery from the released he-fedavg aggregate,
    and feature inversion of the recovered token, for each noise multiplier (and without DP)."""
    train, test = stratified_split(labels[pool], test_fraction=0.3, seed=seed)
    x = np.stack([token[int(i)] for i in pool])
    y = labels[pool]
    parts = iid_partition(train, clients=3, seed=seed)
    server_keys = keys.server_keys()
    truth0 = _to_unit(images[int(picks[0])][None], preprocess)[0]
    for z in (None, *dp_noise):
        dp = None if z is None else DPConfig(noise_multiplier=z)
        config = FederatedConfig(rounds=rounds, dp=dp, seed=seed)
        accuracy, epsilon = {}, math.inf
        for strategy in ("plain-fedavg", "he-fedavg"):
            clients = make_clients(
                x,
                y,
                parts,
                classes=classes,
                keys=keys if strategy != "plain-fedavg" else None,
                config=config,
            )
            result = run_strategy(
                strategy,
                clients,
                server_keys if strategy != "plain-fedavg" else None,
                x[test],
                y[test],
                config,
                progress=False,
            )
            accuracy[strategy] = result.final_accuracy
            if result.epsilon is not None:
                epsilon = result.epsilon
        cos_plain, cos_he, recovered0 = [], [], None
        one_round = FederatedConfig(rounds=1, dp=dp, seed=seed)
        for k, i in enumerate(picks):
            row, yy = token[int(i)][None], labels[[i]]
            victim, estimates = _server_recovers(row, yy, global_head, classes, one_round)
            cos_plain.append(float(cosine_to_truth(estimates, victim.x).max()))
            if k == 0:
                recovered0 = estimates[np.argmax(cosine_to_truth(victim.x, estimates))]
            # a key holder (another hospital) sees the flooded global model after one round of
            # the victim and two hospitals with their training rows
            # one federation (one roster): the victim's row is client-0's, the others' parts
            hospitals = make_clients(
                np.concatenate([row, x]),
                np.concatenate([yy, y]),
                [np.array([0]), *(np.asarray(p) + 1 for p in parts[:2])],
                classes=classes,
                keys=keys,
                config=one_round,
            )
            released = run_strategy(
                "he-fedavg",
                hospitals,
                server_keys,
                x[test],
                y[test],
                one_round,
                progress=False,
                initial_model=global_head,
            ).head
            agg = released.to_vector() - global_head.to_vector()
            estimates = recover_tokens(*head_delta(agg, classes, global_head.dim))
            cos_he.append(float(cosine_to_truth(estimates, hospitals[0].x).max()))
        trace = feature_inversion(
            clf,
            recovered0[None],
            image_shape=(1, *images[int(picks[0])].shape),
            iterations=budget,
            seed=seed,
        )
        guess = _to_unit(trace.image, preprocess)[0]
        report.dp_points.append(
            DpPoint(
                z,
                epsilon,
                accuracy,
                {"plain-fedavg": float(np.mean(cos_plain)), "he-fedavg": float(np.mean(cos_he))},
                {
                    "psnr": metrics.psnr(truth0, guess, data_range=1.0),
                    "ssim": metrics.ssim(truth0, guess, data_range=1.0),
                },
            )
        )
        if on_point is not None:
            on_point()


def _save_grid(grid: dict[str, list[np.ndarray]], path: Path):
    """One row per attack, one column per original image; a row with fewer images (an attack on
    the first image only) leaves its other cells empty and says so, instead of black tiles."""
    names = list(grid)
    cols = len(grid["original"])
    fig, axes = agg_figure((1.8 * cols + 1.6, 1.8 * len(names)), len(names), cols, extra="attacks")
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
            if c >= len(grid[name]):
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.text(
                    0.5,
                    0.5,
                    f"attacks image 1 only\n(batch of {len(grid[name])})",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="grey",
                    transform=ax.transAxes,
                )
                continue
            ax.imshow(np.clip(grid[name][c], 0.0, 1.0), vmin=0.0, vmax=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return fig


def _save_privacy_utility(report: AttackReport, path: Path):
    """One figure: what the attacks recover (left) and the accuracy (right) against epsilon.
    Legends sit below the axes; plain-fedavg and he-fedavg often reach the same accuracy, so the
    first is drawn wide with hollow markers and the second thin and dashed on top of it."""
    points = report.dp_points
    finite = [p.epsilon for p in points if not math.isinf(p.epsilon)]
    no_dp_at = 2 * max(finite) if finite else 1.0
    eps = [no_dp_at if math.isinf(p.epsilon) else p.epsilon for p in points]
    labels = ["no DP" if math.isinf(p.epsilon) else f"{p.epsilon:.3g}" for p in points]
    fig, axes = agg_figure((11, 4.8), 1, 2, extra="attacks")
    left, right = axes[0]
    wide = dict(ls="-", lw=3.0, marker="o", ms=10, mfc="none", mew=1.5, alpha=0.75)
    thin = dict(ls="--", lw=1.3, marker="s", ms=4)
    left.plot(
        eps,
        [p.token_cosine["plain-fedavg"] for p in points],
        label="token cos: server, plain-fedavg update",
        clip_on=False,
        **wide,
    )
    left.plot(
        eps,
        [p.token_cosine["he-fedavg"] for p in points],
        label="token cos: key holder, he-fedavg aggregate",
        clip_on=False,
        **thin,
    )
    left.plot(
        eps,
        [p.inversion["ssim"] for p in points],
        "^:",
        label="SSIM of the inverted token (image 1)",
        clip_on=False,
    )
    left.set_ylabel("attack success")
    left.set_title("What the attacks recover")
    for strategy, style in (("plain-fedavg", wide), ("he-fedavg", thin)):
        right.plot(
            eps, [p.accuracy[strategy] for p in points], label=strategy, clip_on=False, **style
        )
    right.set_ylabel(f"test accuracy after {report.dp_rounds} rounds")
    right.set_title("Utility")
    NullFormatter = require("matplotlib.ticker", "attacks").NullFormatter

    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(eps, labels)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("epsilon")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return fig
