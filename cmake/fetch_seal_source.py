"""Fetch the Microsoft SEAL 4.1.2 source tree through pip's configured package index.

Why this exists: GitHub is not reachable from every build machine, but the Python package index
is. The source distribution ``pyfhel-3.5.0.tar.gz`` carries an unmodified SEAL 4.1.2 tree at
``Pyfhel/backend/SEAL``. ``pip download`` cannot fetch it (preparing its metadata needs build
dependencies that do not build), so this script reads pip's own index configuration, asks the
index's simple API for the file, checks the pinned sha256 and extracts only the SEAL tree.

Usage: python fetch_seal_source.py DEST_DIR
Prints the path of the extracted SEAL source directory on success; exits non-zero with a message
naming every index it tried otherwise. No registry host is named here: the default index comes
from pip itself.
"""

from __future__ import annotations

import hashlib
import html.parser
import io
import os
import shlex
import ssl
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request

SDIST_PROJECT = "pyfhel"
SDIST_FILENAME = "pyfhel-3.5.0.tar.gz"
SDIST_SHA256 = "0375b83b5a83026924f59db25c4efa9f27e1e8a66d004658f4d24195986a04b6"
SEAL_PREFIX = "pyfhel-3.5.0/Pyfhel/backend/SEAL/"
MAX_SDIST_BYTES = 256 * 1024 * 1024


def _pip_config() -> dict[str, str]:
    """Return pip's effective configuration as ``{key: value}`` (env overrides included)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout
    config: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip().strip("'\"")
        # keys look like "global.index-url" or ":env:.index-url"
        config[key.split(".", 1)[-1]] = value
    return config


def _default_index() -> str:
    try:
        from pip._internal.models.index import PyPI  # pip's own default: we never name a host
    except ImportError as exc:
        raise SystemExit(
            "pip is not importable in this build environment, so its default index is unknown; "
            "set PIP_INDEX_URL or HEVIT_SEAL_SOURCE_DIR"
        ) from exc
    return PyPI.simple_url


def _index_urls(config: dict[str, str]) -> list[str]:
    primary = os.environ.get("PIP_INDEX_URL") or config.get("index-url") or _default_index()
    extras = os.environ.get("PIP_EXTRA_INDEX_URL") or config.get("extra-index-url") or ""
    return [primary, *shlex.split(extras)]


def _ssl_context(config: dict[str, str]) -> ssl.SSLContext:
    cafile = os.environ.get("PIP_CERT") or config.get("cert")
    return ssl.create_default_context(cafile=cafile if cafile and os.path.exists(cafile) else None)


class _LinkParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def _open(url: str, context: ssl.SSLContext, timeout: float = 120):
    request = urllib.request.Request(url, headers={"User-Agent": "hevit-build"})
    if url.startswith("file:"):
        return urllib.request.urlopen(request, timeout=timeout)
    return urllib.request.urlopen(request, timeout=timeout, context=context)


def _find_file_url(index: str, context: ssl.SSLContext) -> str | None:
    page_url = index.rstrip("/") + f"/{SDIST_PROJECT}/"
    if page_url.startswith("file:"):
        page_url += "index.html"
    try:
        with _open(page_url, context) as response:
            body = response.read().decode("utf-8", "replace")
    except OSError:
        return None
    parser = _LinkParser()
    parser.feed(body)
    for href in parser.links:
        name = urllib.parse.unquote(urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1])
        if name == SDIST_FILENAME:
            return urllib.parse.urljoin(page_url, href)
    return None


def _download(url: str, context: ssl.SSLContext) -> bytes:
    with _open(url, context, timeout=600) as response:
        data = response.read(MAX_SDIST_BYTES + 1)
    if len(data) > MAX_SDIST_BYTES:
        raise RuntimeError(f"{SDIST_FILENAME} is larger than expected")
    return data


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
    config = _pip_config()
    context = _ssl_context(config)
    tried = []
    for index in _index_urls(config):
        url = _find_file_url(index, context)
        tried.append(f"{index} ({'found' if url else 'not listed'})")
        if url is None:
            continue
        data = _download(url, context)
        digest = hashlib.sha256(data).hexdigest()
        if digest != SDIST_SHA256:
            raise RuntimeError(f"sha256 mismatch for {url}: {digest} != {SDIST_SHA256}")
        print(_extract_seal(data, dest))
        return 0
    print(
        f"could not find {SDIST_FILENAME} on any configured index: {'; '.join(tried)}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
