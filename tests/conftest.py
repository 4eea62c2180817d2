"""Shared test fixtures: paths, and running the scripts the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DATA = REPO / "data"
CAPTURES = Path(__file__).resolve().parent / "captures"   # copied public captures
TPLINK_CAPTURES = sorted(DATA.glob("*.pcap"))
PLUG_IP, PLUG_MAC, PHONE_IP, GATEWAY_IP = ("192.168.1.135", "50:c7:bf:ed:0a:54",
                                           "192.168.1.110", "192.168.1.1")

sys.path.insert(0, str(SCRIPTS))


def pytest_configure(config):
    config.addinivalue_line("markers", "sweep: the heavy robustness sweep (still run by .ci/run)")
    config.addinivalue_line("markers", "spreadsheet: needs LibreOffice (soffice)")


def run_script(name: str, *args, check: bool = True, env: dict | None = None,
               cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run scripts/<name> as a user would, capturing its output."""
    command = [sys.executable, str(SCRIPTS / name), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"{name} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                             f"stderr:\n{result.stderr}")
    return result


@pytest.fixture
def run():
    return run_script
