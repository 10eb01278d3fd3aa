"""``hevit experiment`` / ``hevit demo``: every strategy on the same features and client split.

Writes ``report.json`` (all numbers, parameters, versions, weights and execution provider,
seeds), ``report.md`` (the tables a person reads, with the paper's numbers beside ours) and PNG
plots (accuracy per round, bytes per round on a log axis, latency per phase) to the run folder.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from .._optional import require
from ..data import (
    class_balance,
    client_parts,
    partition_name,
    stratified_folds,
    stratified_split,
)
from ..features import FeatureSet
from ..federated import (
    FederatedConfig,
    FederationKeys,
    StrategyResult,
    centralized_ridge,
    make_clients,
    merge_seconds,
    run_inference,
    run_moments,
    run_strategy,
)
from ._figures import agg_figure

__all__ = [
    "PAPER_REFERENCE",
    "ExperimentReport",
    "run_cross_validation",
    "run_experiment",
    "strategy_entry",
    "versions",
]

#: The numbers of the paper this project started from (3-client lung histopathology).
PAPER_REFERENCE = {
    "plaintext_accuracy": 0.9612,
    "encrypted_accuracy": 0.9002,
    "bytes_per_round": 326_000,
    "traffic_ratio_vs_gradient_encryption": 30.0,
    "encrypted_inference_ms_per_image": 66.0,
}
PHASES = ("extract", "train", "encrypt", "aggregate", "decrypt", "infer")


@dataclass
class ExperimentReport:
    data: str
    clients: int
    classes: list[str]
    train_rows: int
    test_rows: int
    seed: int
    partition: str
    config: dict
    features: dict
    client_class_balance: list[list[int]]
    #: plaintext ridge on the pooled rows (None on Flower: pooled rows never exist there)
    centralized_ridge_accuracy: float | None
    #: None on Flower (the keys exist before the run)
    keygen_seconds: float | None
    #: the encrypted feature-moments round (bytes, seconds), or None without standardisation
    standardization: dict | None = None
    strategies: list[dict] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    paper: dict = field(default_factory=lambda: dict(PAPER_REFERENCE))
    #: K-fold cross-validation (``run_cross_validation``): folds, seed and per (strategy, head)
    #: the accuracy, he-cls accuracy and agreement of every fold
    cross_validation: dict | None = None
    #: how the run was deployed: None in process; on Flower the engine, the declaration
    #: ``insecure``, the transport observed at the SuperLink and at each node, the nodes and
    #: their peak memory
    deployment: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------ tables
    def summary_table(self) -> str:
        paper = self.paper
        cv = self.cross_validation
        cv_head = f" {cv['folds']}-fold CV he-cls (mean ± std) |" if cv else ""
        lines = [
            "| strategy | trained | rounds | accuracy (plaintext model) | he-cls accuracy | enc/plain agreement "
            "| up B/client/round | down B/client/round | total bytes | epsilon |" + cv_head,
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if cv else ""),
        ]
        for s in self.strategies:
            inf = s["inference"]
            rounds = s["rounds"]
            up = np.mean([np.mean(list(r["bytes_up"].values())) for r in rounds])
            down = np.mean([np.mean(list(r["bytes_down"].values())) for r in rounds])
            eps = "-" if s["epsilon"] is None else f"{s['epsilon']:.2f}"
            cv_cell = ""
            if cv:
                folds = cv["results"].get(_cv_key(s), {})
                acc = folds.get("he_cls_accuracy", [])
                cv_cell = (
                    f" {np.mean(acc):.4f} ± {np.std(acc):.4f} (agreement min {min(folds['agreement']):.4f}) |"
                    if acc
                    else " - |"
                )
            lines.append(
                f"| {s['strategy']} | {s.get('trained', 'linear head')} | {len(rounds)} | "
                f"{s['final_accuracy']:.4f} | {inf['accuracy_encrypted']:.4f} | {inf['agreement']:.4f} | "
                f"{up:,.0f} | {down:,.0f} | {sum(s['bytes_per_round']):,} | {eps} |" + cv_cell
            )
        lines.append(
            f"| paper (3 clients, lung) | - | - | {paper['plaintext_accuracy']:.4f} | "
            f"{paper['encrypted_accuracy']:.4f} | - | {paper['bytes_per_round']:,} per round | - | - | - |"
            + (" - |" if cv else "")
        )
        return "\n".join(lines)

    def latency_table(self) -> str:
        lines = [
            "| strategy | "
            + " | ".join(f"{p} s" for p in PHASES)
            + " | he-cls ms/image | he-cls up B/image | he-cls down B/image | he-cls layout (rows) |",
            "|---|" + "---|" * (len(PHASES) + 4),
        ]
        for s in self.strategies:
            sec = _phase_seconds(s, self.features)
            inf = s["inference"]
            per_image = 1e3 * sum(inf["seconds"].values()) / inf["rows"]
            layouts = (
                ", ".join(f"{k} ({v})" for k, v in inf.get("rows_per_layout", {}).items())
                or inf["layout"]
            )
            lines.append(
                f"| {_label(s)} | "
                + " | ".join(f"{sec[p]:.3f}" for p in PHASES)
                + f" | {per_image:.2f} | {inf['bytes_up_per_image']:,.0f} | {inf['bytes_down_per_image']:,.0f} "
                f"| {layouts} |"
            )
        lines.append(
            "| paper | "
            + " | ".join("-" for _ in PHASES)
            + f" | {self.paper['encrypted_inference_ms_per_image']:.1f} | - | - | - |"
        )
        return "\n".join(lines)

    def markdown(self) -> str:
        return "\n".join(
            [
                "# hevit experiment",
                "",
                f"Data: {self.data}; {self.train_rows} training rows split over {self.clients} clients "
                f"({self.partition}), {self.test_rows} held-out test rows; seed {self.seed}.",
                _features_line(self.features),
                self._reference_line(),
                *self._deployment_lines(),
                "",
                "## Accuracy, traffic, agreement",
                "",
                "Accuracy: the trained head in plaintext on the test rows. he-cls: the same head evaluated on",
                "encrypted [CLS] tokens by the server; agreement = share of identical predictions.",
                self._cv_line(),
                "",
                self.summary_table(),
                "",
                "## Latency per phase",
                "",
                "Wall seconds over the whole run, he-cls inference of the trained model included; extract is shared.",
                "",
                self.latency_table(),
                "",
                "Client class balance (rows per class per client): "
                + "; ".join(
                    f"client-{k}: {row}" for k, row in enumerate(self.client_class_balance)
                ),
                "",
                self._standardization_line(),
                "",
                *self._traffic_ratio_lines(),
                "Plots: accuracy_per_round.png, bytes_per_round.png, latency_per_phase.png.",
                "",
            ]
        )

    def _reference_line(self) -> str:
        if self.centralized_ridge_accuracy is None:
            return (
                "Centralised plaintext ridge head: not computed (in a federation the pooled "
                "features never exist)."
            )
        return (
            "Centralised plaintext ridge head on pooled features (reference): "
            f"{self.centralized_ridge_accuracy:.4f}."
        )

    def _deployment_lines(self) -> list[str]:
        d = self.deployment
        if d is None:
            return []
        nodes = "; ".join(
            f"{c}: {t['description']}" for c, t in d.get("node_transports", {}).items()
        )
        lines = [
            f"Deployment: {d['engine']} {d.get('flwr', '')}, {len(d['nodes_described'])} "
            f"SuperNodes. Transport observed at the SuperLink: {d['transport']['description']}; "
            f"at the SuperNodes: {nodes}."
        ]
        if d["insecure"]:
            lines.append(
                "**This run was declared insecure (run_config insecure=true): its messages may "
                "have crossed the network without TLS or node authentication.**"
            )
        return lines

    def _traffic_ratio_lines(self) -> list[str]:
        """Gradient encryption (FedAvg of ViT blocks) against token strategies, as the paper's 30x."""
        heavy = [s for s in self.strategies if s.get("trains_vit") and s["strategy"] == "he-fedavg"]
        light = [
            s
            for s in self.strategies
            if not s.get("trains_vit") and s["strategy"] != "plain-fedavg"
        ]
        if not heavy or not light:
            return []
        per_round = float(np.mean(heavy[0]["bytes_per_round"]))
        lines = [
            f"Gradient encryption (he-fedavg of {heavy[0]['trained']}): {per_round:,.0f} bytes per round for "
            f"all hospitals. Traffic ratio (its bytes per round / a token strategy's bytes over all its rounds; "
            f"the paper reports {self.paper['traffic_ratio_vs_gradient_encryption']:.0f}x):"
        ]
        for s in light:
            total = sum(s["bytes_per_round"])
            lines.append(f"- {_label(s)}: {total:,} bytes in all -> {per_round / total:.1f}x")
        return [*lines, ""]

    def _cv_line(self) -> str:
        cv = self.cross_validation
        if not cv:
            return ""
        return (
            f"CV: {cv['folds']} stratified folds over all {cv['rows']} labelled rows (seed {cv['seed']}); every "
            "fold reruns the whole federation (moments, training, he-cls) with that fold held out."
        )

    def _standardization_line(self) -> str:
        if self.standardization is None:
            return "Features: L2-normalised rows (no standardisation)."
        s = self.standardization
        return (
            f"Features standardised with the federation's mean/std from one encrypted moments round "
            f"(up {sum(s['bytes_up'].values()):,} B, down {sum(s['bytes_down'].values()):,} B in total; "
            "not included in the strategies' bytes), then L2-normalised."
        )

    def write(self, out_dir) -> Path:
        """Writes report.json, report.md and the plots into ``out_dir`` (created; files of the
        same name are replaced: ``hevit`` refuses a non-empty folder unless ``--overwrite``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(
            json.dumps(self.to_dict(), indent=2, default=_json_default)
        )
        (out / "report.md").write_text(self.markdown())
        _plot(self, out)
        return out


def _save_backbone(tail, path: Path, strategy: str) -> Path:
    save_file = require("safetensors.torch", "vit").save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        tail.backbone_state_dict(),
        str(path),
        metadata={"source": f"hevit experiment: ViT fine-tuned federatedly under {strategy}"},
    )
    return path


def _cv_key(entry: dict) -> str:
    return f"{entry['strategy']}/{entry.get('head', 'linear')}"


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _phase_seconds(strategy: dict, features: dict) -> dict[str, float]:
    return merge_seconds(
        dict.fromkeys(PHASES, 0.0),
        {"extract": features.get("seconds", 0.0)},
        strategy["seconds"],
        strategy["inference"]["seconds"],
    )


def _features_line(f: dict) -> str:
    """Which model, weights, tokens and test-time augmentation made the features (report.md)."""
    if not f or "model" not in f:
        return "Features: unknown (features file without metadata)."
    model = f["model"]
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(model.get("kwargs", {}).items()))
    name = f"{model.get('name', 'unknown model')}" + (f" ({kwargs})" if kwargs else "")
    if "trainable_blocks" in f:
        tokens = f"token sequences entering the last {f['trainable_blocks']} block(s)"
    elif "tokens" not in f:
        tokens = "tokens not recorded"
    elif f["tokens"] == "cls":
        tokens = "tokens cls (the final-norm [CLS])"
    else:
        blocks = f["tokens"].split(":", 1)[1].replace(",", ", ")
        tokens = (
            f"tokens {f['tokens']} (the [CLS] after blocks {blocks}, each normed, concatenated)"
        )
    tta = f.get("tta")
    views = (
        "test-time augmentation not recorded"
        if tta is None
        else "no test-time augmentation"
        if tta == 1
        else f"test-time augmentation: mean over {tta} rotations/flips"
    )
    weights = f.get("weights", {}).get("description", "weights not recorded")
    int8 = "; int8 quantised" if f.get("int8") else ""
    return (
        f"Features: model {name}; weights: {weights}; {tokens}; {views}{int8}; execution "
        f"provider {f.get('provider', 'not recorded')}."
    )


def _figure(figsize):
    fig, axes = agg_figure(figsize, extra="vit")
    return fig, axes[0][0]


def _label(entry: dict) -> str:
    return entry["strategy"] + (" (mlp)" if entry.get("head") == "mlp" else "")


#: Line style per strategy: plain-fedavg and he-fedavg train the same head and often give the
#: same numbers, so the one drawn first is wide, solid and hollow-marked, the next thin, dashed
#: and small-marked on top of it; both stay visible when they coincide.
_STYLES = {
    "plain-fedavg": dict(ls="-", lw=3.0, marker="o", ms=10, mfc="none", mew=1.5, alpha=0.75),
    "he-fedavg": dict(ls="--", lw=1.3, marker="s", ms=4),
    "he-ridge": dict(ls=":", lw=1.5, marker="D", ms=7, mfc="none"),
}


def _style(entry: dict) -> dict:
    style = dict(_STYLES.get(entry["strategy"], dict(ls="-.", marker="^", ms=6)))
    if entry.get("head") == "mlp":  # the two-layer heads: a second colour family
        style["color"] = {"plain-fedavg": "tab:red", "he-fedavg": "darkred"}.get(
            entry["strategy"], "tab:pink"
        )
    else:
        style["color"] = {
            "plain-fedavg": "tab:blue",
            "he-fedavg": "navy",
            "he-ridge": "tab:green",
        }.get(entry["strategy"], "tab:purple")
    return style


def _legend_outside(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0.0)


def _plot(report: ExperimentReport, out: Path) -> dict:
    """Writes the three PNGs; returns their figures by file name."""
    MaxNLocator = require("matplotlib.ticker", "vit").MaxNLocator

    figures = {}
    fig, ax = _figure((7.5, 4))
    lowest = report.paper["plaintext_accuracy"]
    for s in report.strategies:
        rounds = [r["round"] for r in s["rounds"]]
        accuracy = [r["accuracy"] for r in s["rounds"]]
        lowest = min([lowest, *accuracy])
        ax.plot(rounds, accuracy, label=_label(s), clip_on=False, **_style(s))
    ax.axhline(
        report.paper["plaintext_accuracy"], color="grey", ls="--", lw=1, label="paper plaintext"
    )
    # accuracy lives in [0, 1]: no margin above 1 (markers at 1.0 are drawn unclipped)
    ax.set_ylim(max(0.0, lowest - 0.05), 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy per round")
    _legend_outside(ax)
    figures["accuracy_per_round.png"] = fig

    fig, ax = _figure((7.5, 4))
    for s in report.strategies:
        rounds = [r["round"] for r in s["rounds"]]
        ax.plot(rounds, s["bytes_per_round"], label=_label(s), **_style(s))
    ax.axhline(report.paper["bytes_per_round"], color="grey", ls="--", lw=1, label="paper (326 KB)")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("bytes per round (all clients, up + down)")
    ax.set_title("Traffic per round")
    _legend_outside(ax)
    figures["bytes_per_round.png"] = fig

    fig, ax = _figure((8.5, 4))
    width = 0.8 / max(len(report.strategies), 1)
    for k, s in enumerate(report.strategies):
        sec = _phase_seconds(s, report.features)
        style = _style(s)
        ax.bar(
            np.arange(len(PHASES)) + k * width,
            [max(sec[p], 1e-6) for p in PHASES],
            width,
            label=_label(s),
            color=style["color"],
            hatch={"-": "", "--": "//", ":": ".."}.get(style["ls"], "xx"),
            edgecolor="white",
        )
    ax.set_xticks(np.arange(len(PHASES)) + width * (len(report.strategies) - 1) / 2)
    ax.set_xticklabels(PHASES)
    ax.set_yscale("log")
    ax.set_ylabel("wall seconds")
    ax.set_title("Latency per phase")
    _legend_outside(ax)
    figures["latency_per_phase.png"] = fig
    for name, fig in figures.items():
        fig.tight_layout()
        fig.savefig(out / name, dpi=120, bbox_inches="tight")
    return figures


def versions() -> dict:
    """Versions of Python, SEAL and the packages a report's numbers depend on."""
    from .. import _core

    versions = {
        "python": platform.python_version(),
        # how this build obtained and linked SEAL, compiled into _core by cmake/HevitSEAL.cmake
        "SEAL": f"{_core.SEAL_VERSION} ({_core.SEAL_LINKAGE})",
    }
    dists = (
        "hevit",
        "numpy",
        "torch",
        "timm",
        "onnxruntime",
        "onnxruntime-gpu",
        "flwr",
        "dp-accounting",
    )
    for dist in dists:
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _hospital_identities(checkpoint_dir, clients: int):
    """With a checkpoint folder, the hospitals' persisted signing keys (a resumed run must
    verify the checkpointed aggregates' signatures), made on first use; else None (fresh ones)."""
    from ..protocol import HospitalIdentity

    if checkpoint_dir is None:
        return None
    folder = Path(checkpoint_dir) / "hospitals" / "identities"
    ids = [f"client-{k}" for k in range(clients)]
    if not folder.exists():
        staging = Path(tempfile.mkdtemp(prefix=".identities-", dir=folder.parent))
        for i in ids:
            HospitalIdentity.generate(i).save(staging / f"{i}.key")
        os.rename(staging, folder)  # atomic, as the key folder
    return [HospitalIdentity.load(folder / f"{i}.key") for i in ids]


def _hospital_keys(
    config: FederatedConfig, dim: int, classes: int, checkpoint_dir, *, mlp: bool = False
) -> FederationKeys:
    """Fresh keys, or with a checkpoint folder the hospitals' persisted keys (so a resumed run
    can decrypt the checkpointed aggregates). In this in-process simulation the hospitals'
    storage is ``checkpoint_dir/hospitals`` (files 0600); the server's is ``checkpoint_dir/server``."""
    make = lambda: FederationKeys.generate(  # noqa: E731
        aggregation_preset=config.aggregation_preset,
        update_preset=config.update_preset,
        inference_preset=config.inference_preset,
        inference_layout=config.inference_layout,
        dim=dim,
        classes=classes,
        mlp_hidden=config.hidden if mlp else None,
        mlp_inference_preset=config.mlp_inference_preset,
    )
    if checkpoint_dir is None:
        return make()
    folder = Path(checkpoint_dir) / "hospitals"
    if (folder / "updates.key").exists():
        return FederationKeys.load(folder)
    keys = make()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".hospitals-", dir=folder.parent))
    keys.save(staging)
    os.rename(staging, folder)  # atomic: a killed run leaves either no key folder or a complete one
    return keys


def run_experiment(
    train: FeatureSet,
    test: FeatureSet | None = None,
    *,
    clients: int = 3,
    strategies=("plain-fedavg", "he-fedavg", "he-ridge"),
    config: FederatedConfig | None = None,
    partition: str = "iid",
    dirichlet_alpha: float = 0.5,
    test_fraction: float = 0.3,
    checkpoint_dir=None,
    dropouts: dict[int, set[str]] | None = None,
    progress: bool = True,
    threads: int | None = None,
    tail=None,
    heads=None,
    keys: FederationKeys | None = None,
    models_dir=None,
) -> ExperimentReport:
    """Runs each strategy on the same features and client split, plus ``he-cls`` inference of
    every trained head on the held-out rows.

    ``heads`` (default ``(config.head,)``): the FedAvg strategies train each of these head models
    (``linear``, ``mlp``); ``he-ridge`` solves a linear head once. ``keys``: reuse a key set
    (cross-validation folds do), else fresh keys (or persisted ones under ``checkpoint_dir``).
    ``models_dir``: with a ``tail``, every FedAvg strategy's federatedly fine-tuned ViT is saved
    there as ``{strategy}-vit.safetensors`` (a checkpoint ``--weights PATH`` loads).

    ``test`` (features of a separate test folder) or else a stratified ``test_fraction`` of
    ``train`` is held out. With ``tail`` (a :class:`~hevit.federated.tail.ViTTail`) the feature
    sets hold token sequences (``extract_tail_inputs``): the FedAvg strategies train the tail
    (last blocks + head) and ``he-ridge`` solves the head on the frozen tail's [CLS] rows.
    """
    config = config or FederatedConfig()
    heads = tuple(heads) if heads else (config.head,)
    if not set(heads) <= {"linear", "mlp"} or len(set(heads)) != len(heads):
        raise ValueError(f"heads must be distinct names from ('linear', 'mlp'), got {heads}")
    if tail is not None and heads != ("linear",):
        raise ValueError(
            "a ViT tail trains its own linear head; use heads=('linear',) with trainable blocks"
        )
    unknown = [s for s in strategies if s not in ("plain-fedavg", "he-fedavg", "he-ridge")]
    if unknown or not strategies:
        raise ValueError(
            f"unknown strategies {unknown}; choose from plain-fedavg, he-fedavg, he-ridge "
            "(he-cls inference runs for every trained head)"
        )
    if test is None:
        tr, te = stratified_split(train.labels, test_fraction=test_fraction, seed=config.seed)
        train, test = train.subset(tr), train.subset(te)
    if tuple(test.classes) != tuple(train.classes):
        raise ValueError(f"train classes {train.classes} and test classes {test.classes} differ")
    x, y = train.features, train.labels
    xt, yt = test.features, test.labels
    if tail is not None:
        if x.ndim != 3:
            raise ValueError(
                "a ViT tail trains on token sequences: extract them with extract_tail_inputs"
            )
        tokens, tokens_test = x, xt
        x, xt = tail.head_features(x), tail.head_features(xt)  # [CLS] rows of the frozen model
    x, xt = x.astype(np.float64), xt.astype(np.float64)
    n_classes = len(train.classes)
    parts, test_parts = client_parts(
        y,
        len(xt),
        clients=clients,
        seed=config.seed,
        partition=partition,
        dirichlet_alpha=dirichlet_alpha,
    )

    t0 = time.perf_counter()
    if keys is None:
        keys = _hospital_keys(config, x.shape[1], n_classes, checkpoint_dir, mlp="mlp" in heads)
    server_keys = keys.server_keys()
    server_checkpoints = None if checkpoint_dir is None else Path(checkpoint_dir) / "server"
    keygen = time.perf_counter() - t0
    identities = _hospital_identities(checkpoint_dir, clients)
    if identities is None:
        from ..protocol import HospitalIdentity

        identities = [HospitalIdentity.generate(f"client-{k}") for k in range(clients)]
    hospital = make_clients(
        x, y, parts, classes=n_classes, keys=keys, config=config, identities=identities
    )
    token_hospital = (
        None
        if tail is None
        else make_clients(
            tokens, y, parts, classes=n_classes, keys=keys, config=config, identities=identities
        )
    )
    moments = run_moments(hospital, server_keys, config) if config.standardize else None
    prep = hospital[0].preprocess
    reference = centralized_ridge(prep(x), y, n_classes, alpha=config.ridge_alpha)

    report = ExperimentReport(
        data=str(train.metadata.get("data", "?")),
        clients=clients,
        classes=list(train.classes),
        train_rows=len(x),
        test_rows=len(xt),
        seed=config.seed,
        partition=partition_name(partition, dirichlet_alpha),
        config=config.to_dict(),
        features=dict(train.metadata),
        client_class_balance=class_balance(y, parts, n_classes).tolist(),
        centralized_ridge_accuracy=reference.accuracy(prep(xt), yt),
        keygen_seconds=keygen,
        versions=versions(),
        standardization=None if moments is None else asdict(moments),
    )
    runs = [
        (name, head)
        for name in strategies
        for head in (("linear",) if name == "he-ridge" else heads)
    ]
    for name, head in runs:
        on_tail = tail is not None and name != "he-ridge"
        clients, x_eval = (token_hospital, tokens_test) if on_tail else (hospital, xt)
        run_config = replace(config, head=head)
        for c in clients:
            c.config = run_config
        result: StrategyResult = run_strategy(
            name,
            clients,
            server_keys,
            x_eval,
            yt,
            run_config,
            checkpoint_dir=server_checkpoints,
            dropouts=dropouts,
            progress=progress,
            initial_model=tail if on_tail else None,
        )
        result.inference = run_inference(
            result.head, clients, server_keys, test_parts, x_eval, yt, run_config, threads=threads
        )
        entry = strategy_entry(result, trains_vit=on_tail)
        if on_tail and models_dir is not None:
            entry["finetuned_weights"] = str(
                _save_backbone(result.head, Path(models_dir) / f"{name}-vit.safetensors", name)
            )
        if name == "he-ridge":
            entry["max_abs_diff_to_centralized_ridge"] = float(
                np.abs(result.head.to_vector() - reference.to_vector()).max()
            )
        report.strategies.append(entry)
    return report


def strategy_entry(result: StrategyResult, *, trains_vit: bool = False) -> dict:
    """One strategy's entry in ``report.json`` (the in-process and the Flower runs share it)."""
    entry = result.to_dict()
    entry["head"] = "linear" if trains_vit else result.head.kind
    entry["trains_vit"] = trains_vit
    entry["parameters"] = int(result.head.size)
    entry["trained"] = result.head.describe()
    return entry


def run_cross_validation(
    features: FeatureSet, *, folds: int, seed: int = 0, progress: bool = True, **options
) -> dict:
    """K-fold cross-validation of :func:`run_experiment`: every fold of ``features`` (stratified,
    seeded) is held out once while the federation trains on the rest, and every fold runs the
    encrypted pipeline (moments round, training, he-cls). One key set serves all folds.

    Returns the ``cross_validation`` entry of a report: ``folds``, ``seed``, ``rows`` and, per
    ``strategy/head``, the per-fold ``accuracy``, ``he_cls_accuracy`` and ``agreement`` lists.
    """
    tqdm = require("tqdm.auto", "vit").tqdm

    config = options.get("config") or FederatedConfig(seed=seed)
    heads = tuple(options.get("heads") or (config.head,))
    parts = stratified_folds(features.labels, folds=folds, seed=seed)
    keys = _hospital_keys(
        config, features.features.shape[-1], len(features.classes), None, mlp="mlp" in heads
    )
    results: dict[str, dict[str, list[float]]] = {}
    for held_out in tqdm(parts, desc=f"{folds}-fold CV", unit="fold", disable=not progress):
        train_idx = np.setdiff1d(np.arange(len(features.labels)), held_out)
        report = run_experiment(
            features.subset(train_idx),
            features.subset(held_out),
            keys=keys,
            progress=False,
            **options,
        )
        for entry in report.strategies:
            r = results.setdefault(
                _cv_key(entry), {"accuracy": [], "he_cls_accuracy": [], "agreement": []}
            )
            r["accuracy"].append(entry["final_accuracy"])
            r["he_cls_accuracy"].append(entry["inference"]["accuracy_encrypted"])
            r["agreement"].append(entry["inference"]["agreement"])
    return {"folds": folds, "seed": seed, "rows": len(features.labels), "results": results}
