"""Optional dependencies: a missing one is an ImportError naming the extra that installs it."""

import ast
import sys
from pathlib import Path

import pytest

from hevit._optional import require

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "hevit"

#: top-level modules that only an extra installs (pyproject.toml [project.optional-dependencies])
OPTIONAL = {
    "torch",
    "torchvision",
    "timm",
    "safetensors",
    "onnx",
    "onnxruntime",
    "PIL",
    "tqdm",
    "matplotlib",
    "skimage",
    "scipy",
    "dp_accounting",
    "flwr",
    "nvflare",
    "tenseal",
}
#: packages whose optional imports all go through require() (federated and protocol: the lead's)
CHECKED = ("features", "data", "attacks", "metrics", "jobs", "cli")


def test_require_returns_the_module():
    import json

    assert require("json", "vit") is json
    assert require("os.path", "vit") is sys.modules["os.path"]


def test_missing_module_names_the_extra():
    with pytest.raises(ModuleNotFoundError, match=r"hevit\[attacks\]") as info:
        require("hevit_no_such_module_1f3a", "attacks")
    assert info.value.name == "hevit_no_such_module_1f3a"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_missing_dependency_of_an_installed_module_names_both(tmp_path, monkeypatch):
    """timm installed without torchvision: the message names torchvision and the extra."""
    (tmp_path / "hevit_fake_frontend.py").write_text("import hevit_missing_backend_9c2e\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match=r"'hevit_missing_backend_9c2e'.*hevit\[vit\]"):
        require("hevit_fake_frontend", "vit")


def test_a_broken_installation_is_not_reported_as_a_missing_extra(tmp_path, monkeypatch):
    """An ImportError that installing the extra would not fix (ABI mismatch) propagates as is."""
    (tmp_path / "hevit_fake_broken.py").write_text("raise ImportError('undefined symbol: foo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"^undefined symbol: foo$"):
        require("hevit_fake_broken", "vit")


def _direct_optional_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] in OPTIONAL:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {name}")
    return found


def test_every_optional_import_goes_through_require():
    """A plain ``import torch`` would fail with a bare 'No module named torch' on a core install."""
    offenders = []
    for package in CHECKED:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            offenders += _direct_optional_imports(path)
    assert not offenders, offenders
