"""Real features, encrypted head: LC25000 [CLS] tokens -> ridge head -> encrypted inference.

Extracts [CLS] tokens of a class-per-folder dataset (fp32, and int8 with --int8), fits a ridge
head on a stratified 70/30 split, then runs the head on ciphertexts in every layout/preset and
prints accuracy, encrypted/plaintext agreement and the largest logit error.

    python examples/lc25000_encrypted_head.py --data ../shared/data/lc25000_lung
"""

from __future__ import annotations

import argparse

import numpy as np

from hevit.data import stratified_split
from hevit.jobs import run_encrypted_head
from hevit.jobs.extract import extract_features, make_spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit-per-class", type=int, default=None)
    parser.add_argument(
        "--int8", action="store_true", help="also extract with the int8 model and compare"
    )
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    spec = make_spec(img_size=args.img_size, patch_size=args.patch_size)
    variants = [False, True] if args.int8 else [False]
    features = {}
    for int8 in variants:
        print(f"[{'int8' if int8 else 'fp32'}] extracting [CLS] tokens (progress bar per image)")
        features[int8] = extract_features(
            args.data,
            spec=spec,
            int8=int8,
            limit_per_class=args.limit_per_class,
            cache_dir=args.cache_dir,
            seed=args.seed,
            progress=True,
        )
    base = features[False]
    train, test = stratified_split(base.labels, test_fraction=0.3, seed=args.seed)
    for int8, fs in features.items():
        x, y = fs.features.astype(np.float64), fs.labels
        print(f"[{'int8' if int8 else 'fp32'}] ridge head, then he-cls in every layout")
        report = run_encrypted_head(
            x[train],
            y[train],
            x[test],
            y[test],
            data=str(args.data),
            seed=args.seed,
            layouts=(
                ("batch", "throughput"),
                ("sample", "latency"),
                ("sample", "single-row"),
                ("sample", "precise"),
            ),
            progress=True,
        )
        label = "int8" if int8 else "fp32"
        print(
            f"\n[{label}] plaintext accuracy {report.accuracy_plaintext:.4f} "
            f"({len(train)} train / {len(test)} test images)"
        )
        print(report.table())
        if int8:
            cos = np.sum(fs.features * base.features, axis=1) / (
                np.linalg.norm(fs.features, axis=1) * np.linalg.norm(base.features, axis=1)
            )
            print(
                f"int8 [CLS] cosine similarity to fp32: mean {cos.mean():.4f}, min {cos.min():.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
