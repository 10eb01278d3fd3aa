"""One version (the installed metadata, written from pyproject.toml) and the SEAL linkage the
build compiled in, everywhere a user or a report reads them."""

import importlib.metadata
import re
from pathlib import Path

import pytest
import tomllib

import hevit
from hevit import _core
from hevit.cli.main import main

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
#: the two forms cmake/HevitSEAL.cmake writes
LINKAGE = re.compile(
    r"^(static|shared), (built from source: .+|installed SEAL found by find_package \(.+\))$"
)


def _project_version() -> str:
    with open(PYPROJECT, "rb") as f:
        return tomllib.load(f)["project"]["version"]


def test_version_is_the_installed_metadata_of_pyproject():
    assert hevit.__version__ == importlib.metadata.version("hevit") == _project_version()


def test_seal_linkage_names_the_source_and_the_kind_of_library():
    assert LINKAGE.match(_core.SEAL_LINKAGE), _core.SEAL_LINKAGE


def test_cli_version_prints_hevit_seal_and_linkage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line == (
        f"hevit {_project_version()} (Microsoft SEAL {_core.SEAL_VERSION}: {_core.SEAL_LINKAGE})"
    )
    assert _core.SEAL_VERSION == "4.1.2"


def test_reports_record_the_linkage_not_a_fixed_claim():
    from hevit.jobs.experiment import versions

    assert versions()["SEAL"] == f"4.1.2 ({_core.SEAL_LINKAGE})"
