"""The shipped type stub of the private C++ module names exactly what the module defines."""

import ast
from pathlib import Path

import hevit
from hevit import _core

#: the stubs of the installed package (a wheel's, in CI), beside the module they describe
STUB = Path(hevit.__file__).resolve().parent / "_core"


def _stub_names(path: Path) -> dict[str, set[str]]:
    """Top-level names and, per class, its member names."""
    tree = ast.parse(path.read_text())
    names: dict[str, set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names[""].add(node.name)
            members = set()
            for n in node.body:
                if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                    members.add(n.name)
                elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                    members.add(n.target.id)
            names[node.name] = {m for m in members if not m.startswith("__") or m == "__init__"}
        elif isinstance(node, ast.FunctionDef):
            names[""].add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[""].add(node.target.id)
        elif isinstance(node, ast.Assign):
            names[""].update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _public(obj) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_core_stub_matches_the_compiled_module():
    stub = _stub_names(STUB / "__init__.pyi")
    module_names = _public(_core) - {"inspection"}
    assert stub[""] - {"inspection", "__all__"} == module_names
    for cls in (n for n in module_names if isinstance(getattr(_core, n), type)):
        members = _public(getattr(_core, cls))
        assert stub[cls] - {"__init__"} == members, cls
    inspection = _stub_names(STUB / "inspection.pyi")
    assert inspection[""] - {"__all__"} == _public(_core.inspection)


def test_package_is_marked_typed():
    assert (STUB.parent / "py.typed").is_file()
