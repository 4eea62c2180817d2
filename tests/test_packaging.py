"""Packaging: requirements.txt and pyproject.toml name the same runtime dependencies, and the
tests run the working tree's package (setup.sh installs it editable into .venv)."""

import re

import pytest

import iotsig

from conftest import REPO, SCRIPTS

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _requirement_lines(text: str) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {re.sub(r"\s+", "", line).lower() for line in lines if line}


def test_requirements_txt_is_pyprojects_runtime_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.sub(r"\s+", "", d).lower() for d in project["dependencies"]}
    assert _requirement_lines((REPO / "requirements.txt").read_text()) == declared
    test_tools = {
        re.split(r"[<>=!~; ]", d, maxsplit=1)[0].lower()
        for d in project["optional-dependencies"]["test"]
    }
    assert {"pytest", "openpyxl", "ruff"} <= test_tools


def test_the_tests_import_the_working_tree():
    assert iotsig.__file__ == str(SCRIPTS / "iotsig" / "__init__.py")
