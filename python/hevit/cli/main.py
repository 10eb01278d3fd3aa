"""``hevit`` command line: argument parsing and printing only; the work lives in hevit.jobs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    import tempfile

    from ..data import stratified_split, write_synthetic_dataset
    from ..jobs import run_encrypted_head
    from ..jobs.extract import extract_features, make_spec

    print(
        "hevit demo: SYNTHETIC H&E-like tiles made by hevit (not patient data) -> ViT [CLS] with "
        "ONNX Runtime -> clients encrypt [CLS] tokens -> the server evaluates the head on ciphertexts.\n"
        "Use `hevit extract --data DIR` for real images such as LC25000."
    )
    with tempfile.TemporaryDirectory(prefix="hevit-demo-") as tmp:
        root = write_synthetic_dataset(tmp, per_class=args.per_class, seed=args.seed)
        spec = make_spec(args.model, img_size=args.img_size, patch_size=args.patch_size)
        features = extract_features(
            root, spec=spec, weights=args.weights, seed=args.seed, batch_size=args.batch_size,
            providers=args.providers, threads=args.threads, int8=args.int8, fp16=args.fp16,
            cache_dir=args.cache_dir,
        )
    train, test = stratified_split(features.labels, test_fraction=0.3, seed=args.seed)
    x, y = features.features.astype(np.float64), features.labels
    report = run_encrypted_head(
        x[train], y[train], x[test], y[test], data="synthetic H&E-like tiles", clients=args.clients,
        seed=args.seed,
    )
    print(f"plaintext accuracy of the ridge head on held-out tiles: {report.accuracy_plaintext:.4f}")
    for k, counts in enumerate(report.client_class_balance):
        print(f"client {k} encrypts {sum(counts)} test tiles, per class {counts}")
    print(report.table())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        payload = {"report": report.to_dict(), "features": features.metadata}
        (out / "report.json").write_text(json.dumps(payload, indent=2, default=str))
        (out / "report.md").write_text(report.table())
        print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    disagreements = [r for r in report.layouts if r.agreement < 1.0]
    if disagreements:
        print("ERROR: encrypted and plaintext predictions disagree")
    return 1 if disagreements else 0


def _extract(args: argparse.Namespace) -> int:
    from ..jobs.extract import extract_features, make_spec

    spec = make_spec(args.model, img_size=args.img_size, patch_size=args.patch_size)
    features = extract_features(
        args.data, spec=spec, weights=args.weights, seed=args.seed, batch_size=args.batch_size,
        providers=args.providers, threads=args.threads, int8=args.int8, fp16=args.fp16,
        limit_per_class=args.limit_per_class, cache_dir=args.cache_dir, finetune_epochs=args.finetune_epochs,
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
        args.data, threats=[t.strip() for t in args.strategies.split(",") if t.strip()],
        n_images=args.n_images, seed=args.seed, img_size=args.img_size, patch_size=args.patch_size,
        weights=args.weights, ig_iterations=args.ig_iterations, fi_iterations=args.fi_iterations,
        out_dir=args.out,
    )
    print(report.table())
    print(f"wrote {args.out}/attack_report.json, attack_report.md, attack_grid.png")
    return 0


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_base_patch16_224", help="any timm ViT name")
    p.add_argument("--img-size", type=int, default=None, help="override the input size (paper: 200)")
    p.add_argument("--patch-size", type=int, default=None, help="override the patch size (paper: 25)")
    p.add_argument(
        "--weights", default="random",
        help="'random' (seeded init, the offline default), 'pretrained' (timm hub) or a checkpoint path",
    )
    p.add_argument("--providers", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (faster on CPU)")
    p.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache-dir", default=None, help="ONNX cache (default ~/.cache/hevit/onnx or $HEVIT_CACHE_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hevit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the pipeline end to end on the embedded synthetic tiles")
    demo.add_argument("--per-class", type=int, default=40, help="synthetic tiles per class")
    demo.add_argument("--clients", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default=None, help="directory for report.json and report.md")
    _add_model_options(demo)
    demo.set_defaults(func=_demo)

    extract = sub.add_parser("extract", help="image folder -> [CLS] features (.npz) with ONNX Runtime")
    extract.add_argument("--data", required=True, help="folder with one sub-folder of images per class")
    extract.add_argument("--out", required=True, help="output .npz (features, labels, paths, classes, metadata)")
    extract.add_argument("--seed", type=int, default=0)
    extract.add_argument("--limit-per-class", type=int, default=None)
    extract.add_argument("--finetune-epochs", type=int, default=0,
                         help="fine-tune the ViT locally on these images first (off by default: slow on CPU)")
    _add_model_options(extract)
    extract.set_defaults(func=_extract)

    attack = sub.add_parser("attack", help="gradient/feature inversion attacks per strategy, scored by "
                                           "PSNR, SSIM, NMI, LPIPS")
    attack.add_argument("--data", required=True)
    attack.add_argument("--strategies", default="plain-fedavg,he-fedavg,he-ridge,he-cls,leak-cls",
                        help="comma-separated threat models")
    attack.add_argument("--n-images", type=int, default=4)
    attack.add_argument("--out", required=True)
    attack.add_argument("--seed", type=int, default=0)
    attack.add_argument("--img-size", type=int, default=200)
    attack.add_argument("--patch-size", type=int, default=25)
    attack.add_argument("--weights", default="random")
    attack.add_argument("--ig-iterations", type=int, default=30, help="budget of the inverting-gradients attack")
    attack.add_argument("--fi-iterations", type=int, default=30, help="budget of the [CLS] inversion attack")
    attack.set_defaults(func=_attack)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
