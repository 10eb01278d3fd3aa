"""Checks an installed hevit wheel from outside the source tree (CI and cibuildwheel's test step).

Run it with the interpreter of the environment under test, from a directory where no hevit
source is importable:

    python .ci/check_wheel.py --readme README.md [--core-only] [--expect-linkage TEXT]

Checks, each a hard failure:
1. ``hevit`` is imported from that environment's site-packages, not from a checkout;
2. ``import hevit.he`` and the rest of the light core load no heavy framework (torch, timm,
   onnx, onnxruntime, matplotlib, ...): checked in a fresh interpreter's ``sys.modules``;
3. with ``--core-only`` (no extra installed): none of those frameworks is installed, and code
   that needs one raises the ImportError naming its extra;
4. ``hevit --version`` names hevit's version, the SEAL version and its linkage (with
   ``--expect-linkage``, that linkage contains TEXT);
5. the distribution carries hevit's LICENSE and SEAL's LICENSE and NOTICE;
6. the README's "API in ten lines" example (read from README.md, so it cannot drift) runs and
   matches the numpy reference within the tolerance derived from the parameters.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

#: frameworks the light core must not load; with --core-only, none may even be installed
HEAVY = (
    "torch",
    "torchvision",
    "timm",
    "onnx",
    "onnxruntime",
    "matplotlib",
    "PIL",
    "skimage",
    "scipy",
    "tqdm",
    "safetensors",
    "dp_accounting",
    "flwr",
    "nvflare",
    "tenseal",
)
#: the light core: the HE engine and every package whose heavy imports are deferred to use
LIGHT = (
    "hevit",
    "hevit.errors",
    "hevit.he",
    "hevit.he.flooding",
    "hevit.he.docs",
    "hevit.data",
    "hevit.features",
    "hevit.metrics",
)


def fail(message: str) -> None:
    print(f"check_wheel: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def ok(message: str) -> None:
    print(f"check_wheel: ok: {message}")


def check_location() -> None:
    import hevit

    where = Path(hevit.__file__).resolve()
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    if site not in where.parents:
        fail(f"hevit imported from {where}, not from this environment's site-packages {site}")
    ok(f"hevit imported from {where.parent}")


def check_light_imports() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in LIGHT)
        + f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"importing the light core failed:\n{result.stderr}")
    loaded = result.stdout.strip()
    if loaded:
        fail(f"importing {', '.join(LIGHT)} loaded {loaded}")
    ok(f"{', '.join(LIGHT)} import without {', '.join(HEAVY)}")


def check_core_only() -> None:
    installed = [m for m in HEAVY if importlib.util.find_spec(m) is not None]
    if installed:
        fail(f"--core-only, but these are installed: {installed}")
    import numpy as np

    from hevit.metrics import psnr

    try:
        psnr(np.zeros((4, 4)), np.zeros((4, 4)), data_range=1.0)
    except ImportError as exc:
        if "hevit[attacks]" not in str(exc):
            fail(f"the ImportError for a missing extra does not name it: {exc}")
        ok(f"a missing extra is named: {exc}")
    else:
        fail("hevit.metrics.psnr ran without scikit-image installed")


def check_version(expect_linkage: str | None) -> None:
    import hevit
    from hevit import _core

    exe = shutil.which("hevit", path=str(Path(sys.executable).parent))
    if exe is None:
        fail(f"no hevit console script beside {sys.executable}")
    line = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    line = line.strip()
    if (
        line != hevit.build_info()
        or hevit.__version__ not in line
        or _core.SEAL_VERSION not in line
    ):
        fail(f"hevit --version printed {line!r}")
    if expect_linkage is not None and expect_linkage not in _core.SEAL_LINKAGE:
        fail(f"SEAL_LINKAGE is {_core.SEAL_LINKAGE!r}, expected it to contain {expect_linkage!r}")
    ok(f"hevit --version: {line}")


def check_licenses() -> None:
    from importlib.metadata import distribution

    dist = distribution("hevit")
    names = {
        str(f).split(".dist-info/", 1)[-1] for f in dist.files or () if ".dist-info/" in str(f)
    }
    wanted = {"licenses/LICENSE", "licenses/SEAL/LICENSE", "licenses/SEAL/NOTICE"}
    if not wanted <= names:
        fail(f"the distribution lacks {sorted(wanted - names)} (has {sorted(names)})")
    seal = Path(dist.locate_file(next(f for f in dist.files if str(f).endswith("SEAL/LICENSE"))))
    if "Microsoft Corporation" not in seal.read_text():
        fail(f"{seal} is not SEAL's license")
    if dist.metadata["License-Expression"] != "MIT":
        fail(f"License-Expression is {dist.metadata['License-Expression']!r}")
    ok(f"licenses shipped: {sorted(wanted)}, License-Expression MIT")


def readme_api_example(readme: Path) -> str:
    text = readme.read_text()
    section = text.split("\n## API in ten lines\n", 1)
    if len(section) != 2:
        fail(f"{readme} has no '## API in ten lines' section")
    block = re.search(r"```python\n(.*?)```", section[1], flags=re.S)
    if block is None:
        fail("the API section has no python block")
    return block.group(1)


def check_readme_example(readme: Path) -> None:
    import numpy as np

    from hevit import he

    scope: dict = {}
    exec(compile(readme_api_example(readme), str(readme), "exec"), scope)
    ref = he.reference.linear(scope["x"], scope["W"], scope["b"])
    tol = he.reference.linear_tolerance(scope["params"], scope["W"], scope["x"], scope["plan"])
    err = float(np.abs(scope["logits"] - ref).max())
    if scope["logits"].shape != ref.shape or not err <= tol:
        fail(f"README example: logits {scope['logits'].shape}, max error {err:.3g} > {tol:.3g}")
    ok(f"README API example: logits {scope['logits'].shape}, max error {err:.2e} <= {tol:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, required=True)
    parser.add_argument("--core-only", action="store_true")
    parser.add_argument("--expect-linkage", default=None)
    args = parser.parse_args()
    check_location()
    check_light_imports()
    if args.core_only:
        check_core_only()
    check_version(args.expect_linkage)
    check_licenses()
    check_readme_example(args.readme)


if __name__ == "__main__":
    main()
