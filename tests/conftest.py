"""Shared test fixtures: paths, and running the scripts the way a user does."""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
DATA = REPO / "data"
CAPTURES = Path(__file__).resolve().parent / "captures"  # copied public captures
SHARED = REPO.parent / "shared"  # the shared public captures beside the repo, when present
TPLINK_CAPTURES = sorted(DATA.glob("*.pcap"))
PLUG_IP, PLUG_MAC, PHONE_IP, GATEWAY_IP = (
    "192.168.1.135",
    "50:c7:bf:ed:0a:54",
    "192.168.1.110",
    "192.168.1.1",
)
# The markers (slow, sweep, spreadsheet) are registered in pyproject.toml.
# The captures that per-capture checks run on in the quick tier (pytest -m "not slow"): DNS,
# TLS, TCP, UDP, ARP, ICMP (the plug), HTTP over IPv6, DHCP in pcapng, mDNS.
QUICK_CAPTURES = {"1724059939.pcap", "http_ipv6.pcap", "dhcp.pcapng", "mdns.pcap"}

# A command a user starts in a terminal gets Ctrl-C. A test suite started as a background
# job (`pytest &` in a non-interactive shell, as a CI script may) has SIGINT ignored, and
# every command it starts inherits that: the Ctrl-C tests' main.py then ran to the end
# (exit 0, on a cluster, where no local worker was there to be stopped instead).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def quick_only(values, quick, name=lambda value: value.name) -> list:
    """parametrize() values: those whose name is in `quick` in every tier, the others marked
    slow (run by the full suite only)."""
    return [
        pytest.param(value, id=name(value), marks=() if name(value) in quick else pytest.mark.slow)
        for value in values
    ]


def quick_first(count: int, values: list) -> list:
    """parametrize() values: the first `count` in every tier, the others marked slow (variants
    of one check: a usage error per bad option, and the like)."""
    return [
        value
        if index < count
        else pytest.param(
            *(value if isinstance(value, tuple) else (value,)), marks=pytest.mark.slow
        )
        for index, value in enumerate(values)
    ]


# The commands' classes, to run a command in this process (as csvkit's tests run its
# utilities): no second Python to start and no pandas to import again, a second each.
COMMANDS = {
    "packet-translator.py": ("packet_translator", "PacketTranslator"),
    "stream-identifier.py": ("stream_identifier", "StreamIdentifier"),
    "signature-extractor.py": ("signature_extractor", "SignatureExtractor"),
    "main.py": ("main", "Main"),
    "event-detector.py": ("event_detector", "EventDetector"),
    "traffic-report.py": ("traffic_report", "TrafficReport"),
    "evaluate.py": ("evaluate", "Evaluate"),
    "feature-extractor.py": ("feature_extractor", "FeatureExtractor"),
}


def run_script(
    name: str,
    *args,
    check: bool = True,
    env: dict | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run scripts/<name> as a user would, capturing its output: in this process (the
    command's main() on the arguments, its stdout and stderr captured), or, given `env`
    (tshark's path, the cluster's address... are read once per process), on a Dask
    cluster, from a thread, or with IOTSIG_TESTS_IN_PROCESS=0, as a process of its own."""
    arguments = [str(a) for a in args]
    in_process = (
        env is None
        and name in COMMANDS
        and "--scheduler" not in arguments  # (a Dask client's event loop outlives the run)
        # (several at once, from threads: stdout, the folder and signals are the process's)
        and threading.current_thread() is threading.main_thread()
        and os.environ.get("IOTSIG_TESTS_IN_PROCESS") != "0"
    )
    if in_process:
        result = _run_in_process(name, arguments, cwd)
    else:
        command = [sys.executable, str(SCRIPTS / name), *arguments]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{name} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def _run_in_process(name: str, arguments: list[str], cwd: Path | None):
    module, class_name = COMMANDS[name]
    command = getattr(importlib.import_module(f"iotsig.commands.{module}"), class_name)
    stdout, stderr = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = command().main(arguments)
            except SystemExit as e:  # argparse's usage errors, --help, --version
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(
        [name, *arguments], code, stdout.getvalue(), stderr.getvalue()
    )


@pytest.fixture
def run():
    return run_script


# --- what several test modules share: each built once per session, only when a selected test
# needs it (the quick tier, -m "not slow", or -k, builds less).


def needed(request, fixture: str, parameter: str, default) -> set:
    """What the selected tests of the requesting module need from `fixture`: the value of
    `parameter` for a test parametrised by it, everything in `default` for the others."""
    wanted = set()
    for item in request.session.items:
        if item.module is not request.module or fixture not in getattr(item, "fixturenames", ()):
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and parameter in callspec.params:
            wanted.add(callspec.params[parameter])
        else:
            wanted.update(default)
    return wanted


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder built by build(folder) once per test run: the xdist workers of a run share
    it (the first to ask builds it, under a lock; the others wait for it and read it)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above the workers' own
    folder = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


class Translations:
    """packet-translator.py -q run on captures, into one directory shared by the run's
    workers: those not yet translated are translated together in one run of the script,
    the others reused."""

    def __init__(self, directory: Path):
        self.dir, self.seen = directory, {}

    def of(self, captures) -> Path:
        for capture in captures:
            assert self.seen.setdefault(capture.name, capture) == capture, "two of one name"
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            missing = [c for c in captures if not (self.dir / f"{c.name}.packets.csv").exists()]
            if missing:
                run_script("packet-translator.py", *missing, "-o", self.dir, "-q")
        return self.dir


@pytest.fixture(scope="session")
def translations(tmp_path_factory) -> Translations:
    return Translations(built_once(tmp_path_factory, "translated", lambda folder: None))


@pytest.fixture(scope="session")
def plug_toggle(tmp_path_factory):
    """main.py TpLinkPlug 192.168.1.135 data/*.pcap -o DIR --event toggle (the report
    included), run once: (DIR, the finished process)."""

    def build(folder: Path) -> None:
        result = run_script(
            "main.py", "TpLinkPlug", PLUG_IP, *TPLINK_CAPTURES, "-o", folder / "out",
            "--event", "toggle",
        )  # fmt: skip
        said = [result.args, result.returncode, result.stdout, result.stderr]
        (folder / "result.json").write_text(json.dumps(said))

    folder = built_once(tmp_path_factory, "toggle", build)
    said = json.loads((folder / "result.json").read_text())
    return folder / "out", subprocess.CompletedProcess(*said)


@pytest.fixture(scope="session")
def plug_signatures(tmp_path_factory) -> dict:
    """toggle and boot of the TP-Link plug (tests/captures/events/) learned from the first
    three recordings of each, the other event's first three as the baseline: {event: its
    signature.csv}. The fourth recording of each is held out. The stages main.py runs, each
    once (the six captures are translated once for both events)."""
    events = CAPTURES / "events" / "TpLinkPlug"
    captures = {event: sorted((events / event).glob("*.pcap"))[:3] for event in ("toggle", "boot")}

    def build(base: Path) -> None:
        everything = [*captures["toggle"], *captures["boot"]]
        run_script("packet-translator.py", *everything, "-o", base, "-q")
        run_script("stream-identifier.py", *(base / f"{c.name}.packets.csv" for c in everything),
                   "-o", base, "-q")  # fmt: skip
        flows = {e: [base / f"{c.name}.flows.csv" for c in cs] for e, cs in captures.items()}
        for event, other in (("toggle", "boot"), ("boot", "toggle")):
            baseline = [a for f in flows[other] for a in ("--baseline", f)]
            run_script(
                "signature-extractor.py", *flows[event], *baseline, "--device-name",
                "TpLinkPlug", "--device-ip", PLUG_IP, "--event", event, "-o", base / event, "-q",
            )  # fmt: skip

    base = built_once(tmp_path_factory, "signatures", build)
    return {event: base / event / "signature.csv" for event in ("toggle", "boot")}


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs("size=8k") or mount_tmpfs("ro"): a fresh tmpfs, unmounted after the test.
    The only way to give root a full disk or a read-only directory; skips without mount
    rights."""
    mounted = []

    def mount(options: str, name: str = "tmpfs") -> Path:
        point = tmp_path / name
        point.mkdir()
        if (
            os.geteuid() != 0
            or not shutil.which("mount")
            or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True
            ).returncode
            != 0
        ):
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=True)


@pytest.fixture
def read_only_dir(tmp_path, mount_tmpfs):
    """A directory nobody may write into: mode 555, or for root (who ignores the mode) a
    read-only tmpfs."""
    if os.geteuid() == 0:
        return mount_tmpfs("ro,size=1m", "read-only")
    point = tmp_path / "read-only"
    point.mkdir(mode=0o555)
    return point


def capinfos_count(capture: Path) -> int:
    """The frames in a capture, as capinfos (Wireshark's) counts them."""
    out = subprocess.run(
        ["capinfos", "-c", "-M", "-T", "-r", str(capture)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().splitlines()[-1].split("\t")[-1])


LONG_BACKGROUND = CAPTURES / "sweep" / "protocols" / "coap_mqtt.pcap"  # 8,516 packets


def long_tplink_recordings(folder: Path) -> list[Path]:
    """The three TP-Link recordings, each followed by ~85,000 packets of other traffic
    (mergecap): seconds of work per capture, time to stop or kill a run in the middle."""
    recordings = []
    for capture in TPLINK_CAPTURES:
        out = folder / capture.name
        subprocess.run(
            ["mergecap", "-F", "pcap", "-a", "-w", str(out), str(capture)]
            + [str(LONG_BACKGROUND)] * 10,
            check=True,
        )
        recordings.append(out)
    return recordings


def start(script: str, *args, cwd: Path | None = None, env: dict | None = None):
    """The script in its own process group, as a terminal starts a command."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def stop_and_check(process, how: str, timeout: float, prog: str = "main.py") -> tuple[str, str]:
    """Stop a running script as a user does, Ctrl-C (SIGINT to the terminal's whole process
    group) or `kill PID` (SIGTERM to the main process only), and check it ends the way
    the README says: exit 130 or 143, no traceback, a last line saying the unfinished
    outputs were removed. Returns its stdout and stderr."""
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=timeout)
    expected_exit, word = (130, "interrupted") if how == "ctrl-c" else (143, "terminated")
    assert process.returncode == expected_exit, stderr
    assert "Traceback" not in stdout + stderr
    assert (
        stderr.strip().splitlines()[-1]
        == f"{prog}: error: {word}; unfinished output files were removed"
    )
    return stdout, stderr
