"""iotsig: IoT event signatures from packet captures.

From Python (README: "From Python"), every function returns pandas DataFrames:

    import iotsig
    packets = iotsig.read_packets("capture.pcap")             # packet-translator
    flows = iotsig.read_flows("capture.pcap", device_ip="192.0.2.10")  # stream-identifier
    signature = iotsig.learn([...], device="plug", device_ip="192.0.2.10")
    detections = iotsig.detect("week.pcap", signature)         # event-detector

The commands in scripts/ are thin users of the same library: packets (tshark -> packets
CSV), flows (packets -> flows and bursts), signature (flows -> signature), detector.
Importing iotsig changes nothing in the caller's process (no environment variable, no
allocator): only the commands tune their own.
"""

__version__ = "0.1.0"

import os as _os

__all__ = [
    "IotsigWarning",
    "LearnOptions",
    "Signature",
    "TimesFormat",
    "ToolError",
    "__version__",
    "detect",
    "learn",
    "read_bursts",
    "read_flows",
    "read_packets",
    "read_signature",
]


def __getattr__(name: str):
    """The API is imported on first use: `import iotsig.cli` (every command's first line)
    must not load numpy before the commands set their thread pools (iotsig.commands)."""
    if name in ("IotsigWarning", "ToolError"):
        from . import errors

        return getattr(errors, name)
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'iotsig' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
