"""Finding tshark and running its fields export."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import stat
import subprocess
import threading
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
    A pipe is not read here, which would take its first bytes from tshark: they are checked
    on their way to tshark (popen_fields). A compressed file is what capinfos (Wireshark's)
    finds inside it."""
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


# A live tshark starts a new session every so many packets (-M): its conversation and
# reassembly tables would otherwise grow with weeks of packets. Its frame numbers start again
# at 1 (the watch counts on); what it keeps from frame to frame (a TCP segment seen before,
# an HTTP body being reassembled) is lost at the reset, as at a chunk's border.
LIVE_SESSION_PACKETS = 100_000


def fields_command(
    capture: Path,
    fields: list[str],
    display_filter: str | None = None,
    live: bool = False,
    session: int = LIVE_SESSION_PACKETS,
) -> list[str]:
    """The argument list (never a shell string) for a tab-separated fields export.
    -n: no name resolution (no DNS lookups for addresses); MAC vendors still come from
    the OUI database through the *.oui_resolved fields. live: each packet's line written
    as soon as it is read (-l), sessions of `session` packets, for a watch."""
    command = [
        tshark_path(),
        "-n",
        *(["-l", "-M", str(session)] if live else []),
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


CAPTURE_FIX = (
    "run as root, or add the user to the wireshark group (sudo dpkg-reconfigure "
    "wireshark-common; sudo usermod -aG wireshark USER; then log in again)"
)


def popen_interface(
    interface: str,
    capture_filter: str,
    fields: list[str],
    stderr,
    capture_stderr,
    session: int = LIVE_SESSION_PACKETS,
) -> tuple[subprocess.Popen, subprocess.Popen]:
    """(dumpcap, tshark): dumpcap capturing on a network interface (with a capture
    filter) into a pipe, tshark's live fields export of it. dumpcap says its drop counts
    on capture_stderr when it stops (drop_counts)."""
    if not Path("/sys/class/net", interface).exists() and interface not in ("any",):
        raise ToolError(
            f"no network interface named {interface!r} (the interfaces: "
            + ", ".join(sorted(p.name for p in Path("/sys/class/net").iterdir()))
            + ")"
        )
    command = [wireshark_tool("dumpcap"), "-i", interface, "-w", "-", "-q"]
    if capture_filter:
        command += ["-f", capture_filter]
    try:
        dumpcap = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=capture_stderr, stdin=subprocess.DEVNULL
        )
    except OSError as e:
        raise ToolError(
            f"cannot run {command[0]} ({e.strerror or e}): install it with "
            "'sudo apt-get install tshark' (Debian/Ubuntu)"
        ) from None
    command = fields_command(Path("-"), fields, live=True, session=session)
    return dumpcap, _reading(dumpcap, command, stderr)


def _reading(feeder: subprocess.Popen, command: list[str], stderr) -> subprocess.Popen:
    """tshark (`command`, reading its standard input) started on the feeder's output;
    the feeder killed if it cannot start."""
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=feeder.stdout,
            env=dict(os.environ, LC_ALL="C.UTF-8"),
        )
    except OSError as e:
        feeder.kill()
        raise ToolError(f"cannot run {tshark_path()} ({e.strerror or e})") from None
    finally:
        feeder.stdout.close()  # tshark's now: the feeder sees tshark go
    return process


def capture_problem(text: str, interface: str) -> str | None:
    """dumpcap's complaint, as one line naming the fix, or None."""
    lines = [
        line.strip().removeprefix("dumpcap: ")
        for line in text.splitlines()
        if line.strip() and not line.startswith(("Capturing on", "File:", "Packets"))
    ]
    if not lines:
        return None
    said = " ".join(lines)
    if "permission" in said.lower() or "not permitted" in said.lower():
        # (dumpcap's own advice follows in many lines: ours is the one line)
        reason = next((x.strip("()") for x in lines if "not permitted" in x), lines[0])
        return f"no permission to capture on {interface} ({reason}): {CAPTURE_FIX}"
    return f"cannot capture on {interface}: {said}"


def drop_counts(text: str) -> tuple[int, int] | None:
    """(received, dropped) from dumpcap's closing line 'Packets received/dropped on
    interface ...: R/D (...)', or None."""
    found = re.findall(r"received/dropped on interface .*?: (\d+)/(\d+)", text)
    if not found:
        return None
    return int(found[-1][0]), int(found[-1][1])


def wireshark_tool(name: str) -> str:
    """Another Wireshark program (editcap, capinfos): beside the tshark in use, else on PATH."""
    beside = Path(tshark_path()).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name) or name


def popen_range(
    capture: Path, fields: list[str], stderr, first: int, last: int
) -> tuple[subprocess.Popen, subprocess.Popen]:
    """(editcap, tshark): tshark's fields export of frames first..last of a capture file,
    which editcap cuts out and pipes to it (their frames are numbered from 1)."""
    command = [
        wireshark_tool("editcap"),
        "-F",
        "pcapng",  # holds every link type and time resolution the input may have
        "-r",
        str(capture if capture.is_absolute() else Path(".") / capture),
        "-",
        f"{first}-{last}",
    ]
    try:
        cutter = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL
        )
    except OSError as e:
        raise ToolError(f"cannot run {command[0]} ({e.strerror or e})") from None
    process = _reading(cutter, buffered(fields_command(Path("-"), fields)), stderr)
    _widen_pipe(process.stdout)
    return cutter, process


def packet_count(capture: Path) -> int | None:
    """The number of packets of a capture file, read by capinfos (it reads the record
    headers only: a fraction of a second for a gigabyte); None when capinfos is missing or
    finds anything wrong with the file (a damaged file is read whole, by one tshark, which
    says what it can read)."""
    try:
        result = subprocess.run(
            [wireshark_tool("capinfos"), "-c", "-M", "-T", "-r", str(capture)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    except OSError:
        return None
    problems = [
        line for line in result.stderr.splitlines() if line and "Running as user" not in line
    ]
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or problems or not lines:
        return None
    try:
        return int(lines[-1].split("\t")[-1])
    except ValueError:
        return None


def popen_fields(
    capture: Path,
    fields: list[str],
    stderr,
    live: bool = False,
    session: int = LIVE_SESSION_PACKETS,
) -> subprocess.Popen:
    """tshark's fields export of the capture, running. A pipe (standard input that is not a
    file, or a FIFO) is relayed to tshark's standard input by a thread, after its first
    bytes were checked on their way: tshark reads any text as some format, silently.
    live: each packet's line as soon as it is read (fields_command's)."""
    capture = Path(capture)
    pipe = _open_pipe(capture)
    stdin = subprocess.DEVNULL
    if pipe is not None:
        head = _pipe_head(pipe, capture)
        source, stdin = Path("-"), subprocess.PIPE  # tshark -r -, fed by _relay
    elif is_stdin(capture):  # a file redirected in: tshark reads it as its own stdin
        source, stdin = Path("-"), None
    elif not capture.is_absolute() and str(capture).startswith("-"):
        source = Path(".") / capture  # ./file: a name starting with '-' is no option to tshark
    else:
        source = capture
    env = dict(os.environ, LC_ALL="C.UTF-8")
    command = fields_command(source, fields, live=live, session=session)
    if not live:
        command = buffered(command)
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=stdin,
            env=env,
        )
    except OSError as e:  # a ToolError, not an OSError: callers take OSError for output ones
        if pipe is not None and pipe != 0:
            os.close(pipe)
        raise ToolError(f"cannot run {command[0]} ({e.strerror or e})") from None
    if pipe is not None:
        threading.Thread(target=_relay, args=(head, pipe, process.stdin), daemon=True).start()
    _widen_pipe(process.stdout)
    return process


def _open_pipe(capture: Path) -> int | None:
    """The file descriptor to relay a piped capture from; None for a file tshark opens."""
    if is_stdin(capture):
        return None if stat.S_ISREG(os.fstat(0).st_mode) else 0
    if capture.is_fifo():
        try:
            return os.open(capture, os.O_RDONLY)  # waits for a writer, as tshark would
        except OSError as e:
            raise InputError(capture, f"cannot read ({e.strerror})") from None
    return None


def _pipe_head(pipe: int, capture: Path) -> bytes:
    """The pipe's first four bytes, which must begin a capture (or a compressed file)."""
    head = b""
    while len(head) < 4 and (block := os.read(pipe, 4 - len(head))):
        head += block
    known = head in CAPTURE_MAGICS or any(head.startswith(m) for m in COMPRESSED_MAGICS)
    if not known:
        if pipe != 0:
            os.close(pipe)
        if not head:
            raise InputError(capture, "nothing came through the pipe: not a capture")
        raise InputError(
            capture, f"not a pcap or pcapng capture (unknown file header {head.hex()})"
        )
    return head


def _relay(head: bytes, pipe: int, sink) -> None:
    """Copy the piped capture to tshark (os.read releases the GIL). Ends at the end of the
    input, or when tshark is gone (killed on Ctrl-C, or done with an error)."""
    try:
        sink.write(head)
        while block := os.read(pipe, 1 << 20):
            sink.write(block)
            sink.flush()  # (a live source's packets on to tshark as they come, not 8 KB later)
    except (OSError, ValueError):  # tshark closed its end, or the sink was closed
        pass
    finally:
        with contextlib.suppress(OSError, ValueError):
            sink.close()
        if pipe != 0:
            os.close(pipe)


# tshark's standard output to a pipe is written 4 KB at a time, and each write wakes the
# reader: with 1 MB, reading its rows costs half the CPU (2.3 against 3.9 us per frame,
# measured on 180,000 frames) and tshark a little less. Rows written but still in the
# buffer are lost if tshark crashes (it flushes them when it stops on a damaged file).
OUTPUT_BUFFER = "1M"


def buffered(command: list[str]) -> list[str]:
    """The command run with OUTPUT_BUFFER of standard output buffer (coreutils' stdbuf,
    which execs it: the process is the command's); as it is without stdbuf."""
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-o", OUTPUT_BUFFER, *command] if stdbuf else command


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
    capinfos = wireshark_tool("capinfos")
    if not os.path.isfile(capinfos):
        return  # tshark will say what it finds
    result = subprocess.run(
        [capinfos, "-t", "-M", "-T", "-r", str(path)], capture_output=True, text=True
    )
    kind = result.stdout.strip().splitlines()[-1].split("\t")[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or kind not in ("pcap", "pcapng"):
        found = f"a {kind} file" if kind and result.returncode == 0 else "no capture"
        raise InputError(
            path, f"{compression}-compressed, but {found} inside: not a pcap or pcapng capture"
        )
