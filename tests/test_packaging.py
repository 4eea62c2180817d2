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


def test_a_script_run_by_a_python_without_the_packages_uses_the_venv_or_says_how(tmp_path):
    """`python3 scripts/main.py --help` with the system's Python (no pandas): the script runs
    again with the repository's .venv; without one, one line says to run setup.sh."""
    import shutil
    import subprocess

    bare = shutil.which("python3", path="/usr/bin:/bin")
    if not bare:
        pytest.skip("no /usr/bin/python3")
    lacks = subprocess.run([bare, "-c", "import pandas"], capture_output=True).returncode != 0
    if not lacks:
        pytest.skip(f"{bare} has pandas: nothing to redirect")
    env = {"PATH": "/usr/bin:/bin"}
    if (REPO / ".venv" / "bin" / "python").exists():
        result = subprocess.run(
            [bare, str(SCRIPTS / "main.py"), "--help"], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: main.py")
    copy = tmp_path / "repo"  # the scripts without a .venv beside them
    shutil.copytree(SCRIPTS, copy / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [bare, str(copy / "scripts" / "main.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"main.py: error: the Python packages it needs are not installed for {bare}: run "
        "'bash scripts/setup.sh' (it makes .venv), then '.venv/bin/python scripts/main.py ...'\n"
    )
