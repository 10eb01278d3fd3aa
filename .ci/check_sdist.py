"""Checks an sdist: it holds what an offline build needs and no SEAL source or build output.

    python .ci/check_sdist.py dist/hevit-X.tar.gz

SEAL's source is never part of hevit's repository or sdist: the build fetches the sha256-pinned
pyfhel sdist through pip's index (cmake/fetch_seal_source.py, python/hevit/_pinned_download.py),
so both files must be inside, beside the C++ sources, the stubs and the Flower app's files.
"""

from __future__ import annotations

import sys
import tarfile

REQUIRED = (
    "PKG-INFO",
    "pyproject.toml",
    "CMakeLists.txt",
    "LICENSE",
    "README.md",
    "cmake/HevitSEAL.cmake",
    "cmake/fetch_seal_source.py",
    "cpp/bindings/module.cpp",
    "python/hevit/_pinned_download.py",
    "python/hevit/_core/__init__.pyi",
    "python/hevit/py.typed",
    "python/hevit/federated/flower/app/pyproject.toml",
)
FORBIDDEN = ("seal-src/", "/native/src/seal/", "SEAL/LICENSE", "build/", ".so", ".whl")


def main(path: str) -> int:
    with tarfile.open(path) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name]
        pkg_info = tar.extractfile(
            next(m for m in tar.getmembers() if m.name.endswith("/PKG-INFO"))
        )
        metadata = pkg_info.read().decode()
    missing = [r for r in REQUIRED if r not in names]
    unwanted = [n for n in names if any(f in n for f in FORBIDDEN)]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unwanted:
        problems.append(f"must not contain {unwanted[:10]}")
    if "License-Expression: MIT" not in metadata:
        problems.append("PKG-INFO has no License-Expression: MIT")
    if problems:
        sys.exit(f"check_sdist: {path}: " + "; ".join(problems))
    print(f"check_sdist: ok: {path}: {len(names)} files, no SEAL source, License-Expression MIT")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
