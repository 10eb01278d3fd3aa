"""``hevit`` command line: argument parsing and printing only; the work lives in hevit.jobs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from ..jobs import run_encrypted_head, synthetic_cls_features

    x, y = synthetic_cls_features(rows=args.rows, classes=args.classes, seed=args.seed)
    split = int(0.7 * len(x))
    print(
        f"hevit demo: SYNTHETIC [CLS]-like features ({args.rows} rows, 768 dims, {args.classes} classes, "
        f"seed {args.seed}); {args.clients} clients encrypt, the server evaluates the head on ciphertexts."
    )
    report = run_encrypted_head(
        x[:split], y[:split], x[split:], y[split:], data="synthetic", clients=args.clients, seed=args.seed
    )
    print(f"plaintext accuracy: {report.accuracy_plaintext:.4f}")
    print(report.table())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
        (out / "report.md").write_text(report.table())
        print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    disagreements = [r for r in report.layouts if r.agreement < 1.0]
    return 1 if disagreements else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hevit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="encrypted inference end to end on the embedded synthetic default")
    demo.add_argument("--rows", type=int, default=3000)
    demo.add_argument("--classes", type=int, default=3)
    demo.add_argument("--clients", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default=None, help="directory for report.json and report.md")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
