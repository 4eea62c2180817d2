"""iotsig: IoT event signatures from packet captures.

Library behind the scripts in scripts/: packets (tshark -> packets CSV), flows (packets CSV
-> flows CSV), signature (flows CSVs -> pattern.txt, profile.yaml, signature CSV).
"""

__version__ = "0.1.0"

import os as _os

# No linear algebra here: OpenBLAS's thread pool, started when numpy is imported, would only
# spend a tenth of a second of CPU on a second core (and compete with the translator's
# workers). Set before numpy is imported; an explicit setting wins.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _run_with_the_project_python() -> None:
    """`python3 scripts/main.py ...` with a Python that lacks the dependencies (the
    system's, on a machine set up by scripts/setup.sh): run the script again with the
    project's .venv, or say in one line how to get it."""
    import importlib.util
    import sys

    if importlib.util.find_spec("pandas") is not None or not sys.argv or not sys.argv[0]:
        return
    script = _os.path.abspath(sys.argv[0])
    repo = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    venv_python = _os.path.join(_os.path.dirname(repo), ".venv", "bin", "python")
    if not script.startswith(repo + _os.sep):
        return  # imported by something else: let its import error speak
    if _os.path.exists(venv_python) and _os.path.realpath(sys.prefix) != _os.path.realpath(
        _os.path.dirname(_os.path.dirname(venv_python))
    ):
        _os.execv(venv_python, [venv_python, *sys.argv])
    sys.exit(
        f"{_os.path.basename(script)}: error: the Python packages it needs are not installed "
        f"for {sys.executable}: run 'bash scripts/setup.sh' (it makes .venv), then "
        f"'.venv/bin/python scripts/{_os.path.basename(script)} ...'"
    )


_run_with_the_project_python()
