"""Finding tshark and running its fields export."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from .errors import InputError, ToolError

INSTALL_HINT = (
    "tshark not found: install it with 'sudo apt-get install tshark' "
    "(Debian/Ubuntu) or set TSHARK_PATH to the tshark binary"
)

# pcap (both byte orders, micro- and nanosecond) and pcapng section header block.
CAPTURE_MAGICS = {
    bytes.fromhex("d4c3b2a1"),
    bytes.fromhex("a1b2c3d4"),
    bytes.fromhex("4d3cb2a1"),
    bytes.fromhex("a1b23c4d"),
    bytes.fromhex("0a0d0d0a"),
}
# tshark says these when it could read part of a file: keep what it read, and warn.
PARTIAL_READ_MARKERS = (
    "cut short in the middle of a packet",
    "appears to be damaged or corrupt",
    "has a packet with a network type that differs",
    "appears to have been cut short",
)


@functools.lru_cache(maxsize=1)
def tshark_path() -> str:
    """tshark's path: $TSHARK_PATH, else the one on PATH, else what pyshark finds in the
    usual places."""
    configured = os.environ.get("TSHARK_PATH")
    if configured:  # asked for by name: never silently run another tshark instead
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise ToolError(
            f"TSHARK_PATH={configured} is not an executable file: point it at "
            "the tshark binary, or unset it and install tshark with "
            "'sudo apt-get install tshark' (Debian/Ubuntu)"
        )
    found = shutil.which("tshark")
    if found and os.access(found, os.X_OK):
        return found
    try:  # only now: importing pyshark costs a tenth of a second of every run's start
        from pyshark.tshark.tshark import get_process_path

        found = get_process_path()
    except Exception:  # pyshark raises its own not-found exception; we say it our way
        found = None
    if found and os.path.isfile(found) and os.access(found, os.X_OK):
        return found
    raise ToolError(INSTALL_HINT)


def file_head(path: Path, size: int, expected: str) -> bytes:
    """The first `size` bytes of an input file, or its one-line error (`expected`: what the
    file should have been, for the directory case)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, f"is a directory, not {expected}") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})") from None


# Compressed files tshark reads as they are (gzip, zstd, lz4 frames).
COMPRESSED_MAGICS = {
    bytes.fromhex("1f8b"): "gzip",
    bytes.fromhex("28b52ffd"): "zstd",
    bytes.fromhex("04224d18"): "lz4",
}


# Standard input as a capture ('-' on the command line, as `tshark -r -`): tshark reads it
# in this process's place. Its outputs are named after this path (stdin.packets.csv).
STDIN = Path("/dev/stdin")
_STDIN_NAMES = {"-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"}


def is_stdin(path) -> bool:
    return str(path) in _STDIN_NAMES


def check_capture(path: Path) -> None:
    """Refuse what is not a pcap/pcapng file before tshark guesses another format for it
    (tshark reads a 6-byte text file as 'MP4 media' and an empty one as ERF, silently).
    A pipe is left to tshark: reading its first bytes here would take them from tshark. A
    compressed file is what capinfos (Wireshark's) finds inside it."""
    path = Path(path)
    if is_stdin(path):
        check_stdin(path)
    if path.is_fifo():
        return
    head = file_head(path, 24, "a capture")
    compression = next((c for m, c in COMPRESSED_MAGICS.items() if head.startswith(m)), None)
    if compression:
        _check_compressed(path, compression)
        return
    if not head:
        raise InputError(path, "empty file (0 bytes): not a capture")
    if head[:4] not in CAPTURE_MAGICS:
        raise InputError(
            path, f"not a pcap or pcapng capture (unknown file header {head[:4].hex()})"
        )
    if head[:4] != bytes.fromhex("0a0d0d0a") and len(head) < 24:
        raise InputError(path, "truncated pcap header: not a complete capture")


def check_stdin(path: Path) -> None:
    """Standard input must be open and not a terminal (tshark would wait for a capture
    typed in). A pipe is tshark's to read; a file redirected in is checked as any file."""
    try:
        os.fstat(0)
    except OSError:
        raise InputError(path, "standard input is closed: pipe a capture into it") from None
    if os.isatty(0):
        raise InputError(
            path,
            "standard input is a terminal: pipe a capture into it "
            "(cat capture.pcap | packet-translator.py - -o DIR)",
        )


def fields_command(
    capture: Path, fields: list[str], display_filter: str | None = None
) -> list[str]:
    """The argument list (never a shell string) for a tab-separated fields export.
    -n: no name resolution (no DNS lookups for addresses); MAC vendors still come from
    the OUI database through the *.oui_resolved fields."""
    command = [
        tshark_path(),
        "-n",
        "-r",
        str(capture),
        "-T",
        "fields",
        "-E",
        "header=n",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
        "-E",
        "quote=n",
    ]
    if display_filter:
        command += ["-Y", display_filter]
    for field in fields:
        command += ["-e", field]
    return command


def popen_fields(capture: Path, fields: list[str], stderr) -> subprocess.Popen:
    # ./file keeps a name starting with '-' from being read as an option by tshark.
    capture = Path(capture)
    stdin = is_stdin(capture)  # tshark -r -, on this process's standard input
    if stdin:
        capture = Path("-")
    elif not capture.is_absolute() and str(capture).startswith("-"):
        capture = Path(".") / capture
    env = dict(os.environ, LC_ALL="C.UTF-8")
    command = fields_command(capture, fields)
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=None if stdin else subprocess.DEVNULL,
            env=env,
        )
    except OSError as e:  # a ToolError, not an OSError: callers take OSError for output ones
        raise ToolError(f"cannot run {command[0]} ({e.strerror or e})") from None
    _widen_pipe(process.stdout)
    return process


def _widen_pipe(pipe) -> None:
    """A 1 MB pipe instead of 64 KB: Python holds its GIL for tens of milliseconds in C
    calls (CSV parsing and writing), and meanwhile tshark must not stall on a full pipe."""
    import fcntl

    try:
        size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), min(size, 1 << 20))
    except (OSError, ValueError):  # not Linux, or not allowed: the default pipe works too
        pass


def stderr_problems(text: str) -> tuple[list[str], list[str]]:
    """Split tshark's stderr into (partial-read warnings, other errors), dropping noise."""
    warnings, errors = [], []
    last = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("Running as user"):
            continue
        line = line.removeprefix("tshark: ")
        if line.startswith("(") and last is not None:
            # tshark's detail of the message before it, e.g. "(pcap: File has 4294967040-byte
            # packet, bigger than maximum of 262144)": one problem, one line
            last[-1] += " " + line
            continue
        last = warnings if any(m in line for m in PARTIAL_READ_MARKERS) else errors
        last.append(line)
    return warnings, errors


def _check_compressed(path: Path, compression: str) -> None:
    capinfos = Path(tshark_path()).with_name("capinfos")
    if not capinfos.is_file():
        capinfos = shutil.which("capinfos")
    if not capinfos:
        return  # tshark will say what it finds
    result = subprocess.run(
        [str(capinfos), "-t", "-M", "-T", "-r", str(path)], capture_output=True, text=True
    )
    kind = result.stdout.strip().splitlines()[-1].split("\t")[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or kind not in ("pcap", "pcapng"):
        found = f"a {kind} file" if kind and result.returncode == 0 else "no capture"
        raise InputError(
            path, f"{compression}-compressed, but {found} inside: not a pcap or pcapng capture"
        )
