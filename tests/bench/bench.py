#!/usr/bin/env python3
"""Benchmarks (not pytest tests). One subcommand per stage, each printing a Markdown table,
writing it to tests/bench/<stage>-results.md and a verdict line to stderr.

    python tests/bench/bench.py translator  # packet-translator.py against bare tshark
    python tests/bench/bench.py flows       # stream-identifier.py on a 1,000,000-row packets CSV
    python tests/bench/bench.py signature   # signature-extractor.py, 100 recordings x 10,000 flows
    python tests/bench/bench.py evaluate    # evaluate.py on the shared events: time and F1
    python tests/bench/bench.py report      # what the traffic report adds to main.py
    python tests/bench/bench.py long        # main.py / event-detector --events, long captures
    python tests/bench/bench.py memory      # peak memory, 1M and 10M packets (process tree)
    python tests/bench/bench.py chunks      # one 1M-packet capture in chunks on every core
    python tests/bench/bench.py windows     # cutting a 1M-packet CSV into --events windows
    python tests/bench/bench.py live        # event-detector --live: packets/s, memory over days
    python tests/bench/bench.py features    # feature-extractor.py against stream-identifier.py

The inputs are built once and cached in tests/.bench/ (git-ignored): the big capture from
the shared public captures (../shared/pcaps next to the repository) with mergecap; its
packets CSV, repeated to the wanted rows; synthetic recordings from the TP-Link captures
in data/.
To add a benchmark for another stage: write a `bench_<stage>(args)` function and register
it in `main()` with its own subparser; reuse `big_capture()`, `Timer` or `measure()`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from iotsig import csvio, flows
from iotsig.packets import FIELDS, asked_fields  # the translator's own field list and
from iotsig.schema import BURSTS, FLOWS, PACKETS
from iotsig.tshark import fields_command, tshark_path  # tshark options

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "pcaps"
CACHE = REPO / "tests" / ".bench"
TRANSLATOR = REPO / "scripts" / "packet-translator.py"
STREAM_IDENTIFIER = REPO / "scripts" / "stream-identifier.py"
SIGNATURE_EXTRACTOR = REPO / "scripts" / "signature-extractor.py"
MAIN = REPO / "scripts" / "main.py"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "translator-results.md"
FLOWS_RESULTS = HERE / "flows-results.md"
SIGNATURE_RESULTS = HERE / "signature-results.md"
EVALUATE_RESULTS = HERE / "evaluate-results.md"
REPORT_RESULTS = HERE / "report-results.md"
LONG_RESULTS = HERE / "long-results.md"
FEATURES_RESULTS = HERE / "features-results.md"
FEATURE_EXTRACTOR = REPO / "scripts" / "feature-extractor.py"
DETECTOR = REPO / "scripts" / "event-detector.py"
EVALUATE = REPO / "scripts" / "evaluate.py"
MIN_PACKETS = 300_000  # the big capture's size: the translator's default, so one cache serves all
# The device of the TP-Link captures in data/ (data/README.md).
TPLINK = sorted((REPO / "data").glob("*.pcap"))
DEVICE_NAME, DEVICE_IP = "TpLinkPlug", "192.168.1.135"
SEED = 1  # the synthetic recordings are the same from run to run
RECORDINGS_VERSION = 2  # bump when synthetic_recording() changes: the cache is rebuilt
# tshark is run exactly as the translator runs it (packets.py: tshark.popen_fields).
TSHARK_ENV = dict(os.environ, LC_ALL="C.UTF-8")


def shared_captures(shared: Path) -> list[Path]:
    files = (
        sorted(shared.glob("protocols/*"))
        + sorted(shared.glob("events/*/*/*.pcap"))
        + sorted(shared.glob("tplink-plug-kasa/*.pcap"))
    )
    files = [f for f in files if f.suffix in (".pcap", ".pcapng")]
    if not files:
        sys.exit(f"bench: no captures under {shared}: the shared captures are needed")
    return files


def packet_count(capture: Path) -> int:
    out = subprocess.run(
        ["capinfos", "-c", "-M", "-T", "-r", str(capture)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.split("\t")[-1])


def run(command: list, **options) -> None:
    subprocess.run([str(c) for c in command], check=True, **options)


def big_capture(shared: Path, min_packets: int, name: str = "big") -> tuple[Path, int]:
    """One pcapng of all the shared captures, concatenated as many times as needed to reach
    min_packets; rebuilt only when the inputs or the target change. Captures of another
    `name` are kept (the memory benchmark keeps a 1M- and a 10M-packet one)."""
    inputs = shared_captures(shared)
    key = hashlib.sha256(
        json.dumps(
            [min_packets] + [(str(f.relative_to(shared)), f.stat().st_size) for f in inputs]
        ).encode()
    ).hexdigest()[:12]
    big, meta = CACHE / f"{name}-{key}.pcapng", CACHE / f"{name}-{key}.json"
    if big.exists() and meta.exists():
        return big, json.loads(meta.read_text())["packets"]
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{name}-*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    print(
        f"bench: building the big capture from {len(inputs)} shared captures "
        f"(once; cached in {CACHE.relative_to(REPO)}/)",
        file=sys.stderr,
    )
    one_set = CACHE / f"{name}-one-set.pcapng"
    run(["mergecap", "-F", "pcapng", "-a", "-w", one_set, *inputs])
    per_set = packet_count(one_set)
    repeats = math.ceil(min_packets / per_set)
    run(["mergecap", "-F", "pcapng", "-a", "-w", big, *[one_set] * repeats])
    one_set.unlink()
    packets = packet_count(big)
    meta.write_text(json.dumps({"packets": packets, "repeats": repeats, "inputs": len(inputs)}))
    return big, packets


SPREAD_SECONDS = 7 * 86400  # --spread: each copy a week after the one before


def distinct_capture(shared: Path, min_packets: int, spread: bool = False) -> tuple[Path, int]:
    """One pcapng of all the shared captures, copied as many times as needed to reach
    min_packets, each copy's addresses moved elsewhere (distinct.py: no conversation
    repeats); rebuilt only when the inputs or the target change. `spread`: each copy also
    moved SPREAD_SECONDS later than the one before, so that the traffic at any moment is
    one home's, as in a week-long recording (without it, every copy replays the same
    moments: ten copies are ten homes at once)."""
    from distinct import rewrite_copy

    inputs = shared_captures(shared)
    key = hashlib.sha256(
        json.dumps(
            ["distinct", min_packets, SPREAD_SECONDS if spread else 0]
            + [(str(f.relative_to(shared)), f.stat().st_size) for f in inputs]
        ).encode()
    ).hexdigest()[:12]
    name = f"{'spread' if spread else 'distinct'}{min_packets}"  # one per size and kind
    big, meta = CACHE / f"{name}-{key}.pcapng", CACHE / f"{name}-{key}.json"
    if big.exists() and meta.exists():
        return big, json.loads(meta.read_text())["packets"]
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{name}-*"):
        old.unlink()
    print(f"bench: building the {min_packets:,}-packet capture (once)", file=sys.stderr)
    one_set = CACHE / f"{name}-set.pcapng.tmp"
    run(["mergecap", "-F", "pcapng", "-a", "-w", one_set, *inputs])
    repeats = math.ceil(min_packets / packet_count(one_set))
    copies = [CACHE / f"{name}-copy-{k}.pcapng.tmp" for k in range(repeats)]
    for shift, copy in enumerate(copies):
        rewrite_copy(one_set, copy, shift)
        if spread and shift:
            moved = copy.with_suffix(".moved.tmp")
            run(["editcap", "-F", "pcapng", "-t", str(shift * SPREAD_SECONDS), copy, moved])
            moved.replace(copy)
    run(["mergecap", "-F", "pcapng", "-a", "-w", big, *copies])
    for temporary in [one_set, *copies]:
        temporary.unlink()
    packets = packet_count(big)
    meta.write_text(json.dumps({"packets": packets, "repeats": repeats, "inputs": len(inputs)}))
    return big, packets


def halves(big: Path, packets: int) -> list[Path]:
    """The big capture cut in two files of (nearly) the same number of packets."""
    folder = big.with_suffix(".halves")
    parts = sorted(folder.glob("half_*.pcapng"))
    if len(parts) == 2:
        return parts
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    run(["editcap", "-F", "pcapng", "-c", math.ceil(packets / 2), big, folder / "half.pcapng"])
    parts = sorted(folder.glob("half_*.pcapng"))
    assert len(parts) == 2, parts
    return parts


class Timer:
    """Wall and CPU seconds (user + system, of every process started: tshark, workers) of
    each run; the median per measure. Runs are interleaved (round 1 of every measure, then
    round 2...) so that a load change on the machine hits all measures alike."""

    def __init__(self):
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def run(self, name: str, start) -> None:
        """start() starts the processes and returns them; each is waited for here."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        for process in start():
            if process.wait() != 0:
                sys.exit(f"bench: {name}: {process.args[:4]}... exited {process.returncode}")
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.wall.setdefault(name, []).append(wall)
        self.cpu.setdefault(name, []).append(cpu)

    def median(self, name: str) -> tuple[float, float]:
        return statistics.median(self.wall[name]), statistics.median(self.cpu[name])


def bare_tshark(captures: list[Path], workdir: Path):
    """tshark's fields export alone, exactly the translator's fields and -E options, each
    capture written to a file; several captures run at once."""

    def start():
        processes = []
        for i, capture in enumerate(captures):
            with open(workdir / f"bare-{i}.tsv", "wb") as sink:
                processes.append(
                    subprocess.Popen(
                        fields_command(capture, FIELDS),
                        stdout=sink,
                        stderr=subprocess.DEVNULL,
                        stdin=subprocess.DEVNULL,
                        env=TSHARK_ENV,
                    )
                )
        return processes

    return start


def translator(captures: list[Path], output: Path, jobs: int, one_cpu: bool = False):
    """one_cpu: the whole run (Python and tshark) held to CPU 0 with taskset."""
    command = [sys.executable, TRANSLATOR, *captures, "-o", output, "-q", "-j", str(jobs)]
    command = ["taskset", "-c", "0", *command] if one_cpu else command
    return lambda: [subprocess.Popen([str(c) for c in command], stdin=subprocess.DEVNULL)]


def bench_translator(args) -> None:
    big, packets = big_capture(args.shared, args.min_packets)
    parts = halves(big, packets)
    cores = len(os.sched_getaffinity(0))
    print(
        f"bench: {packets:,} packets in {big.relative_to(REPO)}; median of {args.repeat} "
        f"runs each; {cores} core(s)",
        file=sys.stderr,
    )
    load_before = os.getloadavg()[0]
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        work = Path(tmp)
        measures = {
            "bare": bare_tshark([big], work),
            "translator": translator([big], work / "one", 1),
            "bare x2": bare_tshark(parts, work),
            "j1": translator(parts, work / "j1", 1),
            "j1 one core": translator(parts, work / "j1-one-core", 1, one_cpu=True),
            "j2": translator(parts, work / "j2", 2),
        }
        for round_number in range(args.repeat):
            for name, start in measures.items():
                print(f"bench: round {round_number + 1}/{args.repeat}: {name}", file=sys.stderr)
                timer.run(name, start)

    (bare, bare_cpu), (one, one_cpu) = timer.median("bare"), timer.median("translator")
    (two_bare, two_bare_cpu), (serial, serial_cpu) = timer.median("bare x2"), timer.median("j1")
    parallel, parallel_cpu = timer.median("j2")
    pinned, pinned_cpu = timer.median("j1 one core")
    ratio, speedup, core_speedup = one / bare, serial / parallel, pinned / parallel
    rows = [
        (
            "bare `tshark -T fields` (same fields and -E options), 1 capture",
            bare,
            bare_cpu,
            "1.00 (reference)",
        ),
        (
            "`packet-translator.py`, 1 capture",
            one,
            one_cpu,
            f"**{ratio:.2f}** × bare tshark (target ≤ 1.15); {one_cpu / bare_cpu:.2f}× its CPU",
        ),
        (
            "2 bare tsharks at once, 2 half captures",
            two_bare,
            two_bare_cpu,
            f"{bare / two_bare:.2f}× the 1-capture tshark (what 2 cores allow)",
        ),
        (
            "`taskset -c 0 packet-translator.py -j 1`, 2 half captures: everything on 1 core",
            pinned,
            pinned_cpu,
            "1.00 (reference: one core)",
        ),
        (
            "`packet-translator.py -j 1`, 2 half captures (tshark and Python on 2 cores)",
            serial,
            serial_cpu,
            f"{pinned / serial:.2f}× the one-core run",
        ),
        (
            "`packet-translator.py -j 2`, 2 half captures",
            parallel,
            parallel_cpu,
            f"**{core_speedup:.2f}×** the one-core run (target near 2); {speedup:.2f}× -j 1",
        ),
    ]
    table = [
        "| run | wall time | CPU time | packets/s (wall) | compared |",
        "|---|---:|---:|---:|---|",
    ]
    table += [
        f"| {name} | {wall:.2f} s | {cpu:.2f} s | {packets / wall:,.0f} | {note} |"
        for name, wall, cpu, note in rows
    ]
    text = "\n".join(
        [
            f"{packets:,} packets (the shared public captures concatenated with "
            f"`mergecap -F pcapng -a`); median of {args.repeat} interleaved runs; {cores} core(s) "
            f"({_cpu_model()}), load average {load_before:.1f} before the runs (other work on "
            f"the machine); "
            f"tshark {_tshark_version()}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}. CPU time: user + system of every process of the run.",
            "",
            *table,
            "",
            "The translator's Python side (reading tshark's output, building and writing the "
            f"rows) costs {(one_cpu - bare_cpu) / bare_cpu:.0%} of tshark's CPU time again; it "
            "runs on the second core while tshark dissects, which is how one capture stays near "
            "bare tshark's wall time. So -j 1 already keeps two cores partly busy, and -j 2 gains "
            "over it only what is left; the speedup from one core to two is the -j 2 run against "
            "the one held to one core.",
            "",
            *(
                [
                    f"The machine was busy (load average above {cores / 2:g} before the runs): "
                    "wall "
                    "times and speedups "
                    "are pessimistic; the CPU times still compare the work done.",
                    "",
                ]
                if load_before > cores / 2
                else []
            ),
            "Produced by `python tests/bench/bench.py translator`.",
            "",
        ]
    )
    print(text)
    RESULTS.write_text(text)
    print(f"bench: written to {RESULTS.relative_to(REPO)}", file=sys.stderr)
    print(
        f"bench: translator/tshark = {ratio:.2f} (target <= 1.15): "
        f"{'met' if ratio <= 1.15 else 'NOT met'}; 2 cores over 1 core = {core_speedup:.2f}; "
        f"-j 2 over -j 1 = {speedup:.2f}",
        file=sys.stderr,
    )


# Runs a command and prints its exit code, wall and CPU seconds and peak memory (KiB).
MEASURE = """import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=sys.stderr)
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps([code, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss]))"""


def measure(command: list) -> tuple[float, float, float]:
    """Run command once: wall seconds, CPU seconds (user + system, with its children) and
    peak memory (MB), through a small Python process of its own. Not from here: on Linux a
    child's ru_maxrss includes the peak of the process it was forked from (exec keeps the
    old address space's peak), and this one holds big tables; and one wrapper per run, as
    RUSAGE_CHILDREN's ru_maxrss is the largest over every child ever waited for."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *map(str, command)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    code, wall, cpu, maxrss = json.loads(out)
    if code != 0:
        sys.exit(f"bench: {Path(command[1]).name} exited {code}")
    return wall, cpu, maxrss * 1024 / 1e6  # KiB -> MB


def machine(cores: int, load_before: float) -> str:
    return (
        f"{cores} core(s) ({_cpu_model()}), load average {load_before:.1f} before the runs "
        f"(other work on the machine); tshark {_tshark_version()}, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def busy_note(cores: int, load_before: float) -> list[str]:
    if load_before <= cores / 2:
        return []
    return [
        f"The machine was busy (load average above {cores / 2:g} before the runs): wall "
        "times are pessimistic; the CPU times still compare the work done.",
        "",
    ]


def write_results(path: Path, text: str, verdict: str) -> None:
    print(text)
    path.write_text(text)
    print(f"bench: written to {path.relative_to(REPO)}", file=sys.stderr)
    print(f"bench: {verdict}", file=sys.stderr)


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def one_core(cpu: float, wall: float) -> bool:
    """CPU time counts every thread and child process: more than the wall time means more
    than one core at work."""
    return cpu <= 1.05 * wall


def cores_note(program: str, cpu: float, wall: float) -> str:
    share = f"its CPU time is {cpu / wall:.2f}× its wall time"
    if one_core(cpu, wall):
        return (
            f"{program} runs on one core: {share} (user + system of the process and of "
            "any child), and it starts no worker process (it does not use "
            "`iotsig.parallel`, unlike packet-translator)."
        )
    return f"{program} used MORE than one core: {share}."


# --- flows: stream-identifier.py ---------------------------------------------------------


def sources_key(*modules: str) -> str:
    """A short hash of iotsig's sources (the named modules, else all): an input made with
    the tools is made again when their code changes."""
    folder = REPO / "scripts" / "iotsig"
    files = [folder / m for m in modules] if modules else sorted(folder.rglob("*.py"))
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]


def translated(big: Path) -> Path:
    """The big capture's packets CSV, by the translator's current code. Named big-* so that
    big_capture()'s clean-up drops it with the capture it came from."""
    key = sources_key("packets.py", "tshark.py", "csvio.py", "schema.py")
    csv = CACHE / f"{big.stem}.{key}.packets.csv"
    if csv.exists():
        return csv
    for old in CACHE.glob(f"{big.stem}.*.packets.csv"):
        old.unlink()
    print("bench: translating the big capture (once)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        run([sys.executable, TRANSLATOR, big, "--device-ip", DEVICE_IP, "-o", tmp, "-q"])
        (Path(tmp) / f"{big.name}.packets.csv").rename(csv)
    return csv


def big_packets_csv(big: Path, rows: int) -> tuple[Path, dict]:
    """The big capture's packets CSV repeated to exactly `rows` rows. The big capture is
    itself `repeats` copies of the shared captures, with the same times: each copy of those
    packets (the last one cut short) has its ts shifted by the copy's number times the
    span of the capture plus the idle timeout, so that no flow runs from one copy into
    another. The shift is whole seconds: only the integer part of ts changes, every other
    value is byte for byte the translator's (the first copy is unchanged). time_utc is
    left as is: stream-identifier does not read it (flows.REQUIRED, flows.OPTIONAL)."""
    base = translated(big)
    name = f"{big.stem}-{rows}.{base.name.split('.')[1]}"  # the translation's key
    out, meta = CACHE / f"{name}.packets.csv", CACHE / f"{name}.json"
    if out.exists() and meta.exists():
        return out, json.loads(meta.read_text())
    for old in [*CACHE.glob(f"{big.stem}-*.packets.csv"), *CACHE.glob(f"{big.stem}-*.json")]:
        old.unlink()  # one size kept: they are large
    print(f"bench: writing {rows:,} packet rows (once)", file=sys.stderr)
    packets = pd.read_csv(base, dtype=str, keep_default_na=False)
    repeats = json.loads(big.with_suffix(".json").read_text())["repeats"]
    per_copy, left = divmod(len(packets), repeats)
    assert not left, (len(packets), repeats)
    seconds, dot, fraction = (packets["ts"].str.partition(".")[i] for i in range(3))
    seconds = seconds.astype("int64")
    ts = pd.to_numeric(packets["ts"])
    shift = math.ceil(ts.max() - ts.min()) + math.ceil(flows.DEFAULT_IDLE_TIMEOUT) + 1
    copy = np.arange(len(packets)) // per_copy  # which copy of the shared captures
    part = out.with_suffix(".part")
    for k in range(math.ceil(rows / len(packets))):  # the big CSV once at a time: memory
        n = min(len(packets), rows - k * len(packets))
        moved = seconds.iloc[:n] + (copy[:n] + k * repeats) * shift
        chunk = packets.iloc[:n].assign(ts=moved.astype(str) + dot.iloc[:n] + fraction.iloc[:n])
        chunk.to_csv(part, mode="a" if k else "w", header=not k, index=False, lineterminator="\n")
    part.rename(out)
    info = {
        "rows": rows,
        "per_copy": per_copy,
        "copies": math.ceil(rows / per_copy),
        "big_packets": len(packets),
        "repeats": repeats,
        "shift": shift,
    }
    meta.write_text(json.dumps(info))
    return out, info


def flows_in_process(packets_csv: Path, output: Path) -> dict[str, tuple[float, float]]:
    """The library calls of stream-identifier (commands/stream_identifier.py,
    identify_streams) with its defaults, timed phase by phase: (wall, CPU) seconds, without
    the interpreter's start-up and imports."""
    times = {}

    def timed(name, call):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        times[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        return result

    packets = timed(
        "read",
        lambda: csvio.read_table(
            packets_csv,
            PACKETS,
            required=flows.REQUIRED,
            columns=flows.REQUIRED + flows.OPTIONAL,
            compact=True,
        ),
    )
    built = timed("build", lambda: flows.build(packets, flows.FlowOptions()))
    timed("write", lambda: csvio.write_table(built.flows, FLOWS, output))
    timed("write bursts", lambda: csvio.write_table(built.bursts, BURSTS, output.with_suffix(".b")))
    times["total"] = tuple(map(sum, zip(*times.values())))
    # The same without the bursts (what stream-identifier did before it wrote them).
    wall, cpu = time.perf_counter(), time.process_time()
    table = flows.build_flows(packets, flows.FlowOptions())
    csvio.write_table(table, FLOWS, output)
    alone = (time.perf_counter() - wall, time.process_time() - cpu)
    times["without bursts"] = tuple(a + b for a, b in zip(times["read"], alone))
    times["flows"], times["bursts"] = len(table), len(built.bursts)
    return times


def bench_flows(args) -> None:
    big, packets = big_capture(args.shared, MIN_PACKETS)
    packets_csv, info = big_packets_csv(big, args.rows)
    rows, cores = info["rows"], len(os.sched_getaffinity(0))
    print(
        f"bench: {rows:,} rows in {packets_csv.relative_to(REPO)}; median of {args.repeat} "
        f"runs each; {cores} core(s)",
        file=sys.stderr,
    )
    load_before = os.getloadavg()[0]
    cli, phases, startup = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        for round_number in range(args.repeat):  # interleaved, as Timer does
            print(f"bench: round {round_number + 1}/{args.repeat}", file=sys.stderr)
            cli.append(measure([sys.executable, STREAM_IDENTIFIER, packets_csv, "-o", tmp, "-q"]))
            startup.append(measure([sys.executable, STREAM_IDENTIFIER, "--version"]))
            phases.append(flows_in_process(packets_csv, Path(tmp) / "in-process.flows.csv"))

    wall = statistics.median(r[0] for r in cli)
    cpu = statistics.median(r[1] for r in cli)
    peak = max(r[2] for r in cli)
    rate = rows / wall
    median = {
        name: tuple(statistics.median(p[name][i] for p in phases) for i in (0, 1))
        for name in ("read", "build", "write", "write bursts", "total", "without bursts")
    }
    overhead = median["total"][0] / median["without bursts"][0] - 1
    table = [
        "| run | wall time | CPU time | rows/s (wall) | peak memory | compared |",
        "|---|---:|---:|---:|---:|---|",
        f"| `stream-identifier.py PACKETS.csv -o DIR -q` (a fresh process: start-up "
        f"and imports included) | {wall:.2f} s | {cpu:.2f} s | {rate:,.0f} | "
        f"{peak:,.0f} MB | **{rate:,.0f} rows/s** (target ≥ 300,000 on one core): "
        f"{met(rate >= 300_000)}; peak (target < 2 GB): {met(peak < 2000)} |",
    ]
    start_wall, start_cpu = (statistics.median(r[i] for r in startup) for i in (0, 1))
    table.append(
        f"| `stream-identifier.py --version`: start-up and imports alone | "
        f"{start_wall:.2f} s | {start_cpu:.2f} s | | | "
        f"{start_wall / wall:.0%} of the CLI's wall time |"
    )
    labels = {
        "read": "`csvio.read_table`",
        "build": "`flows.build` (flows and bursts)",
        "write": "`csvio.write_table` (flows)",
        "write bursts": "`csvio.write_table` (bursts)",
        "total": "read + build + write",
        "without bursts": "read + `flows.build_flows` + write, no bursts",
    }
    table += [
        f"| in process: {labels[name]} | {w:.2f} s | {c:.2f} s | {rows / w:,.0f} | | "
        f"{w / median['total'][0]:.0%} of in-process time |"
        for name, (w, c) in median.items()
    ]
    table[-1] += (
        f" the bursts add **{overhead:.0%}** to the in-process time (target ≤ 15%): "
        f"{met(overhead <= 0.15)} |"
    )
    text = "\n".join(
        [
            f"{rows:,} packet rows: the packets CSV of the big capture ({info['big_packets']:,} "
            f"packets: {info['repeats']} copies of the {info['per_copy']:,} packets of the shared "
            f"public captures, concatenated with `mergecap -F pcapng -a`; translated with "
            f"`--device-ip {DEVICE_IP}`), repeated to {info['copies']} copies of those packets, "
            f"copy number n with its `ts` shifted n × {info['shift']:,} s (the captures' span "
            f"plus the idle timeout: copies never share a flow); {phases[-1]['flows']:,} flows, "
            f"{phases[-1]['bursts']:,} bursts. "
            f"Median of {args.repeat} interleaved runs; peak memory: the largest of the runs' "
            f"maximum resident set size; {machine(cores, load_before)}. CPU time: user + system "
            "of the process and of any child it starts.",
            "",
            *table,
            "",
            cores_note("stream-identifier", cpu, wall),
            "",
            *busy_note(cores, load_before),
            "Produced by `python tests/bench/bench.py flows`.",
            "",
        ]
    )
    write_results(
        FLOWS_RESULTS,
        text,
        f"stream-identifier = {rate:,.0f} rows/s (target >= 300,000): "
        f"{met(rate >= 300_000)}; peak {peak:,.0f} MB (target < 2 GB): "
        f"{met(peak < 2000)}; CPU/wall = {cpu / wall:.2f} "
        f"({'one core' if one_core(cpu, wall) else 'MORE than one core'}); in process "
        f"{rows / median['total'][0]:,.0f} rows/s; bursts +{overhead:.0%} (target <= 15%): "
        f"{met(overhead <= 0.15)}",
    )


# --- features: feature-extractor.py ------------------------------------------------------


def bench_features(args) -> None:
    """feature-extractor.py --unit flow --features IAT_SIZE,STATS on the flows benchmark's
    1M-row packets CSV against stream-identifier.py on the same file (interleaved runs),
    then its peak memory on the same CSV repeated to 10M rows (built in partitions)."""
    big, _ = big_capture(args.shared, MIN_PACKETS)
    cores, load_before = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    command = ["--unit", "flow", "--features", "IAT_SIZE,STATS", "-q"]
    runs: dict[str, list] = {"flows": [], "features": []}
    packets_csv, info = big_packets_csv(big, args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        for round_number in range(args.repeat):
            print(f"bench: round {round_number + 1}/{args.repeat}", file=sys.stderr)
            runs["flows"].append(
                measure([sys.executable, STREAM_IDENTIFIER, packets_csv, "-o", tmp, "-q"])
            )
            runs["features"].append(
                measure([sys.executable, FEATURE_EXTRACTOR, packets_csv, *command, "-o", tmp])
            )
        units = len(pd.read_parquet(Path(tmp) / "features.parquet", columns=["uid"]))
    wall = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
    peak = {k: max(r[2] for r in v) for k, v in runs.items()}
    ratio = wall["features"] / wall["flows"]
    big_rows = args.big_rows
    print(f"bench: {big_rows:,} rows: feature-extractor once (memory)", file=sys.stderr)
    big_csv, _ = big_packets_csv(big, big_rows)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        big_run = measure([sys.executable, FEATURE_EXTRACTOR, big_csv, *command, "-o", tmp])
    growth = big_run[2] / peak["features"]
    rows = info["rows"]
    text = "\n".join(
        [
            f"`feature-extractor.py PACKETS.csv --unit flow --features IAT_SIZE,STATS -q` "
            f"against `stream-identifier.py PACKETS.csv -q` on the flows benchmark's packets "
            f"CSV ({rows:,} rows, the big capture's packets repeated: see flows-results.md; "
            f"{units:,} flows of 2 packets or more), median of {args.repeat} interleaved runs; "
            f"then feature-extractor once on the same packets repeated to {big_rows:,} rows "
            f"(read in partitions by conversation). {machine(cores, load_before)}.",
            "",
            "| run | rows | wall time | CPU time | peak memory | compared |",
            "|---|---:|---:|---:|---:|---|",
            f"| stream-identifier.py | {rows:,} | {wall['flows']:.2f} s | {cpu['flows']:.2f} s | "
            f"{peak['flows']:,.0f} MB | |",
            f"| feature-extractor.py | {rows:,} | {wall['features']:.2f} s | "
            f"{cpu['features']:.2f} s | {peak['features']:,.0f} MB | **{ratio:.2f}×** "
            f"stream-identifier's wall time (target ≤ 1.3×): {met(ratio <= 1.3)}; CPU "
            f"{cpu['features'] / cpu['flows']:.2f}× |",
            f"| feature-extractor.py | {big_rows:,} | {big_run[0]:.1f} s | {big_run[1]:.1f} s "
            f"| {big_run[2]:,.0f} MB | peak **{growth:.2f}×** its peak at {rows:,} "
            f"(target ≤ 1.2×): {met(growth <= 1.2)} |",
            "",
            *busy_note(cores, load_before),
            "Produced by `python tests/bench/bench.py features`.",
            "",
        ]
    )
    write_results(
        FEATURES_RESULTS,
        text,
        f"feature-extractor {ratio:.2f}x stream-identifier's wall time (target <= 1.3x): "
        f"{met(ratio <= 1.3)}; peak {big_run[2]:,.0f} MB at {big_rows:,} rows, "
        f"{growth:.2f}x its peak at {rows:,} (target <= 1.2x): {met(growth <= 1.2)}",
    )


# --- signature: signature-extractor.py ---------------------------------------------------


def real_flows() -> list[pd.DataFrame]:
    """The flows of the three TP-Link recordings, by main.py, as text."""
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        run(
            [sys.executable, MAIN, DEVICE_NAME, DEVICE_IP, *TPLINK, "-o", tmp, "--no-report", "-q"],
            stdout=subprocess.DEVNULL,
        )
        return [
            pd.read_csv(f, dtype=str, keep_default_na=False)
            for f in sorted(Path(tmp).glob("*.flows.csv"))
        ]


def random_ipv4(rng: np.random.Generator, n: int) -> list[str]:
    """Public-looking addresses (11-99.x.x.x: no private, loopback or link-local range)."""
    octets = np.column_stack([rng.integers(11, 100, n), rng.integers(0, 256, (n, 3))])
    return [".".join(map(str, row)) for row in octets.tolist()]


def synthetic_recording(
    real: pd.DataFrame, pool: pd.DataFrame, size: int, name: str, rng: np.random.Generator
) -> pd.DataFrame:
    """A real recording's flows (the event and its background: the patterns to find) plus
    flows sampled from the device's real outgoing ones, sent from a random ephemeral port to
    random external addresses and ports at random times: noise that differs in every
    recording, up to `size` flows."""
    noise = pool.sample(n=size - len(real), replace=True, random_state=rng)
    noise = noise.reset_index(drop=True)
    n = len(noise)
    addresses = random_ipv4(rng, n)
    noise["orig_p"] = rng.integers(49152, 65536, n).astype(str)
    noise["resp_p"] = rng.integers(1, 65536, n).astype(str)
    noise["resp_h"] = noise["remote_h"] = addresses
    noise["remote_name"], noise["remote_class"] = "", "external"
    start = pd.to_numeric(real["ts"])
    window = max(float(start.max() - start.min()), 60.0)
    noise["ts"] = np.round(float(start.min()) + rng.uniform(0, window, n), 6).astype(str)
    frame = pd.concat([real, noise], ignore_index=True)
    frame = frame.iloc[np.argsort(pd.to_numeric(frame["ts"]).to_numpy(), kind="stable")]
    frame["capture"] = name
    frame["uid"] = [f"{name}#{i}" for i in range(1, len(frame) + 1)]  # unique in the file
    return frame


def recordings(count: int, size: int) -> list[Path]:
    """`count` synthetic flows CSVs of `size` flows each; built once (again when the
    tools' code changes: the real flows come from main.py)."""
    inputs = [count, size, SEED, RECORDINGS_VERSION, sources_key()]
    inputs += [(f.name, f.stat().st_size) for f in TPLINK]
    key = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:12]
    folder = CACHE / f"recordings-{key}"
    if folder.is_dir():
        return sorted(folder.glob("*.flows.csv"))
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("recordings-*"):
        shutil.rmtree(old)
    print(f"bench: writing {count} recordings of {size:,} flows (once)", file=sys.stderr)
    real = real_flows()
    assert len(real) == len(TPLINK) and all(len(r) < size for r in real), [len(r) for r in real]
    pool = pd.concat(real, ignore_index=True)
    # Flows the device opened, with ports to vary. (Flows it answered would keep its own
    # server port, 9999: one pattern "inbound from external to 9999" in every recording.)
    pool = pool[pool["proto"].isin(["tcp", "udp"]) & (pool["orig_h"] == DEVICE_IP)]
    rng = np.random.default_rng(SEED)
    part = folder.with_suffix(".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    for i in range(count):
        name = f"rec-{i:03d}"
        frame = synthetic_recording(real[i % len(real)], pool, size, name, rng)
        frame.to_csv(part / f"{name}.flows.csv", index=False, lineterminator="\n")
    part.rename(folder)  # whole or nothing: an interrupted build is not taken for the cache
    return sorted(folder.glob("*.flows.csv"))


def bench_signature(args) -> None:
    files = recordings(args.recordings, args.flows)
    total, cores = args.recordings * args.flows, len(os.sched_getaffinity(0))
    print(
        f"bench: {len(files)} recordings of {args.flows:,} flows in "
        f"{files[0].parent.relative_to(REPO)}; median of {args.repeat} runs; {cores} core(s)",
        file=sys.stderr,
    )
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        for round_number in range(args.repeat):
            print(f"bench: run {round_number + 1}/{args.repeat}", file=sys.stderr)
            runs.append(
                measure(
                    [
                        sys.executable,
                        SIGNATURE_EXTRACTOR,
                        *files,
                        "--device-name",
                        DEVICE_NAME,
                        "--device-ip",
                        DEVICE_IP,
                        "-o",
                        tmp,
                        "-q",
                    ]
                )
            )
        patterns = pd.read_csv(Path(tmp) / "signature.csv", dtype=str, keep_default_na=False)
    found, events = len(patterns), int((patterns["role"] == "event").sum())
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    peak = max(r[2] for r in runs)
    table = [
        "| run | wall time | CPU time | flows/s (wall) | peak memory | compared |",
        "|---|---:|---:|---:|---:|---|",
        f"| `signature-extractor.py` {len(files)} flows CSVs `--device-name {DEVICE_NAME} "
        f"--device-ip {DEVICE_IP} -o DIR -q` | {wall:.2f} s | {cpu:.2f} s | "
        f"{total / wall:,.0f} | {peak:,.0f} MB | **{wall:.2f} s** (target < 10 s on one "
        f"core): {met(wall < 10)}; {found} patterns ({events} event; at least 3 expected) |",
    ]
    text = "\n".join(
        [
            f"{len(files)} synthetic recordings of {args.flows:,} flows each ({total:,} flows): "
            "each "
            "holds the real flows of one of the three TP-Link captures in data/ (flows by "
            "`main.py`: TCP/9999 phone to plug, the DNS query for use1-api.tplinkra.com, "
            "TLS/443 to "
            "it, and their background) and flows sampled from those, sent to random external "
            f"addresses and ports at random times, different in every recording (seed {SEED}). "
            f"Median of {args.repeat} runs; peak memory: the largest of the runs' maximum resident "
            f"set size; {machine(cores, load_before)}. CPU time: user + system of the process "
            "and of any child it starts.",
            "",
            *table,
            "",
            cores_note("signature-extractor", cpu, wall),
            "",
            *busy_note(cores, load_before),
            "Produced by `python tests/bench/bench.py signature`.",
            "",
        ]
    )
    write_results(
        SIGNATURE_RESULTS,
        text,
        f"signature-extractor = {wall:.2f} s for {len(files)} x {args.flows:,} flows "
        f"(target < 10 s): {met(wall < 10)}; {found} patterns found ({events} event; "
        f"at least 3 expected): {met(found >= 3)}; peak {peak:,.0f} MB",
    )
    if found < 3:
        sys.exit(f"bench: signature-extractor found {found} pattern(s), at least 3 expected")


# --- evaluate: evaluate.py on the shared events -------------------------------------------


# evaluate.py before packet profiles (commit 624bfe1), the 13 shared events (257 captures) on
# the development machine: 54.5 s, the reference of issue 13's "within 2x per capture".
BEFORE_SECONDS_PER_CAPTURE = 54.5 / 257


def bench_evaluate(args) -> None:
    """The whole evaluation of the shared events (learn, detect, score), as a user runs it."""
    events = args.shared / "events"
    if not (events / "devices.yaml").is_file():
        sys.exit(f"bench: no {events}/devices.yaml: the shared event recordings are needed")
    cores, load_before = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        for round_number in range(args.repeat):
            print(f"bench: run {round_number + 1}/{args.repeat}", file=sys.stderr)
            runs.append(
                measure(
                    [sys.executable, EVALUATE, events, events / "devices.yaml", "-o", tmp, "-q"]
                )
            )
        table = pd.read_csv(Path(tmp) / "evaluation.csv")
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    recordings = len(list(events.glob("*/*/*.pcap")))
    rows = [
        "| device | event | recordings | precision | recall | F1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {r.device} | {r.event} | {r.recordings} | {r.precision:.3f} | {r.recall:.3f} | "
        f"{r.f1:.3f} |"
        for r in table.itertuples()
    ]
    worst, macro = table["f1"].min(), table["f1"].mean()
    per_capture = wall / recordings
    ratio = per_capture / BEFORE_SECONDS_PER_CAPTURE
    text = "\n".join(
        [
            f"`evaluate.py` on the shared event recordings ({recordings} captures, "
            f"{len(table)} events): median of {args.repeat} runs; {machine(cores, load_before)}.",
            "",
            "| run | wall time | CPU time | compared |",
            "|---|---:|---:|---|",
            f"| `evaluate.py ../shared/pcaps/events ../shared/pcaps/events/devices.yaml -o DIR -q` "
            f"| {wall:.1f} s | {cpu:.1f} s | **{per_capture:.3f} s per capture**, {ratio:.2f}x "
            f"the {BEFORE_SECONDS_PER_CAPTURE:.3f} s before packet profiles (target <= 2x): "
            f"{met(ratio <= 2)} |",
            "",
            *rows,
            "",
            *busy_note(cores, load_before),
            "Produced by `python tests/bench/bench.py evaluate`.",
            "",
        ]
    )
    write_results(
        EVALUATE_RESULTS,
        text,
        f"evaluate = {wall:.1f} s, {ratio:.2f}x the time per capture before packet profiles "
        f"(target <= 2x): {met(ratio <= 2)}; macro F1 {macro:.3f} (target >= 0.97): "
        f"{met(macro >= 0.97)}; lowest F1 {worst:.3f} (target >= 0.90): {met(worst >= 0.90)}",
    )


# --- long: a long capture with a list of event times ---------------------------------------


def bench_long(args) -> None:
    """main.py --events and event-detector --events on the camera's week with its IFTTT log
    and on two days of real traffic with 60 shared event recordings placed in it
    (tests/long_capture.py), against packet-translator alone on the same capture."""
    sys.path.insert(0, str(REPO / "tests"))
    import long_capture

    camera = args.shared / "long" / "blink-cam-01.pcap"
    if not camera.is_file() or long_capture.missing_inputs():
        sys.exit(f"bench: {camera} and the shared events are needed")
    cores, load_before = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    CACHE.mkdir(exist_ok=True)
    built = long_capture.build_long_capture(CACHE / "two-days", long_capture.Spec(hours=54))
    cases = [
        (
            "camera week + IFTTT log",
            camera,
            ["blink-cam-01", "192.168.1.129"],
            [
                "--events", camera.with_name("blink-cam-01.ifttt-events.csv"),
                "--event-column", "3", "--device-column", "2", "--timezone", "America/New_York",
            ],
            [],
        ),
        (
            "54 h, 60 placed events",
            built.pcap,
            ["HueLightEssentials", "192.168.1.141"],
            ["--events", built.times],
            ["--event", "toggle"],
        ),
    ]  # fmt: skip
    rows = [
        "| capture | packets | step | wall (median) | packets/s |",
        "|---|---:|---|---:|---:|",
    ]
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        for label, capture, device, flags, learn_only in cases:
            packets = packet_count(capture)
            out = Path(tmp) / label.split()[0]
            steps = {
                "packet-translator.py": [TRANSLATOR, capture, "-o", out / "t", "-q"],
                "main.py --events --no-report": [
                    MAIN, *device, capture, *flags, *learn_only, "-o", out / "m", "--no-report",
                    "-q",
                ],
                "event-detector.py --events (capture)": [
                    DETECTOR, out / "m" / "signature.csv", capture, *flags, "-o", out / "d", "-q",
                ],
                "event-detector.py --events (its flows CSV: the scan)": [
                    DETECTOR, out / "m" / "signature.csv", out / "m" / f"{capture.name}.flows.csv",
                    *flags, "-o", out / "s", "-q",
                ],
            }  # fmt: skip
            walls = {}
            for step, command in steps.items():
                walls[step] = statistics.median(
                    measure([sys.executable, *command])[0] for _ in range(args.repeat)
                )
                rows.append(
                    f"| {label} | {packets:,} | `{step}` | {walls[step]:.2f} s | "
                    f"{packets / walls[step]:,.0f} |"
                )
            scan = walls["event-detector.py --events (its flows CSV: the scan)"]
            read = walls["packet-translator.py"]
            verdicts.append(
                f"{label}: the detector scans {packets / scan:,.0f} packets/s, "
                f"packet-translator reads {packets / read:,.0f} (target: scan >= read): "
                f"{met(scan <= read)}"
            )
    text = "\n".join(
        [
            f"Long captures with a list of event times; median of {args.repeat} runs; "
            f"{machine(cores, load_before)}. Each step is a whole command as a user runs "
            "it (start-up included); the scan is event-detector on the flows CSV main.py "
            "wrote (reading it, matching, scoring against the times file).",
            "",
            *rows,
            "",
            *[f"- {v}" for v in verdicts],
            "",
            *busy_note(cores, load_before),
            "Produced by `python tests/bench/bench.py long`.",
            "",
        ]
    )
    write_results(LONG_RESULTS, text, "; ".join(verdicts))


# --- chunks: one big capture on every core ------------------------------------------------

CHUNKS_RESULTS = HERE / "chunks-results.md"
WHOLE_RUN = (  # main.py's first two steps as they were: one tshark over the whole capture
    "import sys; from pathlib import Path; from iotsig import pipeline; "
    "pipeline.capture_to_flows(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])"
)


def bench_chunks(args) -> None:
    """One capture of about a million packets (distinct_capture) on this machine's cores:
    bare tshark, packet-translator (in chunks), the same with one tshark, main.py
    --no-report; wall, CPU and peak memory; the outputs of the chunked and the whole runs
    compared byte for byte."""
    big, packets = distinct_capture(args.shared, args.min_packets)
    cores = len(os.sched_getaffinity(0))
    load_before = os.getloadavg()[0]
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    runs: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-chunks-") as tmp:
        tmp = Path(tmp)
        bare = " ".join(map(shlex.quote, fields_command(big, FIELDS))) + f" > {tmp / 'bare.tsv'}"
        commands = {
            "bare": ["sh", "-c", bare],
            "whole": [sys.executable, "-c", WHOLE_RUN, big, tmp / "whole", DEVICE_IP],
            "translator": [sys.executable, TRANSLATOR, big, "-o", tmp / "chunked", "-q"],
            "main": [
                sys.executable, MAIN, DEVICE_NAME, DEVICE_IP, big, "-o", tmp / "main",
                "--no-report", "-q",
            ],
        }  # fmt: skip
        os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # for the whole run's -c
        for _ in range(args.repeat):
            for name, command in commands.items():
                shutil.rmtree(tmp / name, ignore_errors=True)
                (tmp / name).mkdir()
                runs.setdefault(name, []).append(measure(command))
        same_packets, same_flows = (
            _same_file(tmp / "whole" / name, tmp / "main" / name)
            for name in (f"{big.name}.packets.csv", f"{big.name}.flows.csv")
        )
    median = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in runs.items()}
    bare_wall = median["bare"][0]
    labels = {
        "bare": "bare `tshark -T fields` (every field the columns come from), 1 process",
        "whole": "main.py's translation and flows with one tshark over the whole capture "
        "(as before), in-process",
        "translator": f"`packet-translator.py` (chunks, {cores} at once)",
        "main": "`main.py --no-report` (chunks, then flows and signature)",
    }
    lines = [
        f"{packets:,} packets ({big.name}: the shared public captures, copied with their "
        "addresses moved, tests/bench/distinct.py); median of "
        f"{args.repeat} interleaved runs; {machine(cores, load_before)}. CPU time: user + "
        "system of every process of the run; peak memory: the largest process.",
        "",
        "| run | wall time | CPU time | peak memory | packets/s (wall) | against bare tshark |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in labels.items():
        wall, cpu, peak = median[key]
        lines.append(
            f"| {label} | {wall:.2f} s | {cpu:.2f} s | {peak:.0f} MB | {packets / wall:,.0f} "
            f"| {bare_wall / wall:.2f}× |"
        )
    translator_ratio = bare_wall / median["translator"][0]
    main_ratio = bare_wall / median["main"][0]
    lines += [
        "",
        f"main.py's packets CSV (chunked) identical to the whole run's: "
        f"{'yes' if same_packets else 'NO'}; its flows CSV: {'yes' if same_flows else 'NO'}.",
        "",
        *busy_note(cores, load_before),
        f"Produced by `python tests/bench/bench.py chunks --min-packets {args.min_packets}`.",
        "",
    ]
    verdict = (
        f"packet-translator {translator_ratio:.2f}x bare tshark (target 1.5: "
        f"{met(translator_ratio >= 1.5)}), main.py --no-report {main_ratio:.2f}x (target 1.4: "
        f"{met(main_ratio >= 1.4)}); identical outputs: {met(same_packets and same_flows)}"
    )
    write_results(CHUNKS_RESULTS, "\n".join(lines), verdict)


WINDOWS_RESULTS = HERE / "windows-results.md"


def bench_windows(args) -> None:
    """The packets CSV of a million-packet capture (distinct_capture) cut into windows as
    main.py --events does (windows.window_rows, in chunks), against the whole-table cut
    it replaced (read whole, sorted, sliced): peak memory, time, and the files compared."""
    big, packets = distinct_capture(args.shared, args.min_packets)
    packets_csv = translated(big)
    load_before = os.getloadavg()[0]
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-windows-") as tmp:
        for how in ("whole", "chunks"):
            (Path(tmp) / how).mkdir()
            command = [sys.executable, HERE / "cut_windows.py", how, packets_csv, Path(tmp) / how]
            out = subprocess.run(
                [*map(str, command), str(args.windows)], env=env, capture_output=True,
                text=True, check=True,
            ).stdout  # fmt: skip
            result[how] = json.loads(out)
        names = sorted(p.name for p in (Path(tmp) / "whole").iterdir())
        same = names == sorted(p.name for p in (Path(tmp) / "chunks").iterdir()) and all(
            _same_file(Path(tmp) / "whole" / n, Path(tmp) / "chunks" / n) for n in names
        )
    labels = {
        "whole": "the whole CSV read, sorted by time and sliced (before)",
        "chunks": "`windows.window_rows`: read in chunks of 16 MB (now)",
    }
    lines = [
        f"A packets CSV of {packets:,} packets ({big.name}, translated) cut into "
        f"{args.windows} windows of 210 s spread over its time span, each written as its "
        f"packets CSV, as main.py --events does; {machine(1, load_before)}. Peak: the "
        "process's largest resident set (ru_maxrss); before the cut it had read the ts "
        "column alone to place the windows.",
        "",
        "| cut | rows in the windows | time | peak memory | before the cut |",
        "|---|---:|---:|---:|---:|",
    ]
    for how, label in labels.items():
        r = result[how]
        lines.append(
            f"| {label} | {r['rows']:,} | {r['seconds']:.1f} s | {r['peak']:,.0f} MB "
            f"| {r['before']:,.0f} MB |"
        )
    lines += [
        "",
        f"The {len(names)} window files identical, byte for byte: {'yes' if same else 'NO'}.",
        "",
        f"Produced by `python tests/bench/bench.py windows --windows {args.windows}`.",
        "",
    ]
    verdict = (
        f"cutting windows: peak {result['chunks']['peak']:,.0f} MB in chunks against "
        f"{result['whole']['peak']:,.0f} MB whole; identical files: {met(same)}"
    )
    write_results(WINDOWS_RESULTS, "\n".join(lines), verdict)


def _same_file(a: Path, b: Path) -> bool:
    import filecmp

    return filecmp.cmp(a, b, shallow=False)


# --- report: what the traffic report adds to main.py ---------------------------------------


def bench_report(args) -> None:
    """main.py on the sample captures with and without the traffic report, interleaved."""
    cores, load_before = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    times = {"with": [], "without": []}
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        for round_number in range(args.repeat):
            print(f"bench: round {round_number + 1}/{args.repeat}", file=sys.stderr)
            for name, extra in (("without", ["--no-report"]), ("with", [])):
                command = [
                    sys.executable,
                    MAIN,
                    DEVICE_NAME,
                    DEVICE_IP,
                    *TPLINK,
                    "-q",
                    "-o",
                    Path(tmp) / name,
                    *extra,
                ]
                times[name].append(measure(command)[0])
    without, with_report = (statistics.median(times[k]) for k in ("without", "with"))
    added = with_report - without
    text = "\n".join(
        [
            f"`main.py {DEVICE_NAME} {DEVICE_IP} data/*.pcap` (the three sample captures) with and "
            f"without the traffic report; median of {args.repeat} interleaved runs; "
            f"{machine(cores, load_before)}.",
            "",
            "| run | wall time |",
            "|---|---:|",
            f"| `main.py ... --no-report` | {without:.2f} s |",
            f"| `main.py ...` (inventory.csv, endpoint map PNG/SVG, timeline, report.html) | "
            f"{with_report:.2f} s |",
            f"| the report adds | **{added:.2f} s** (target ≤ 3 s): {met(added <= 3)} |",
            "",
            *busy_note(cores, load_before),
            "Produced by `python tests/bench/bench.py report`.",
            "",
        ]
    )
    write_results(
        REPORT_RESULTS,
        text,
        f"the report adds {added:.2f} s to main.py (target <= 3 s): {met(added <= 3)}",
    )


# --- memory: main.py and stream-identifier.py on 1M- and 10M-packet captures -----------

MEMORY_RESULTS = HERE / "memory-results.md"
MEMORY_SIZES = (1_000_000, 10_000_000)
MEMORY_TARGET_MB = 1500  # issue 16: main.py on 10M packets (with and without the report)
# The whole process tree's memory, sampled: ru_maxrss (measure()) is the peak of the
# largest single process only, and main.py runs tshark, and workers, beside itself.
MEASURE_TREE = """import json, resource, subprocess, sys, time
import psutil
INTERVAL = float(sys.argv[1])

def rollup(pid):  # resident and proportional (shared pages split among their users) KiB
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            found = dict(line.split(":", 1) for line in f if line[:4] in ("Rss:", "Pss:"))
        return int(found["Rss"].split()[0]), int(found["Pss"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0

started = time.perf_counter()
process = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=sys.stderr)
root = psutil.Process(process.pid)
peak = {"rss": 0, "pss": 0, "rss_tshark": 0, "rss_after": 0, "samples": 0}
while process.poll() is None:
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        tree = [root]
    rss = pss = 0
    tshark = False
    for member in tree:
        r, p = rollup(member.pid)
        rss, pss = rss + r, pss + p
        try:
            tshark |= member.name() == "tshark"
        except psutil.Error:
            pass
    peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
    key = "rss_tshark" if tshark else "rss_after"
    peak[key] = max(peak[key], rss)
    peak["samples"] += 1
    time.sleep(INTERVAL)
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps([process.returncode, wall, cpu, usage.ru_maxrss, peak]))"""
SAMPLE_SECONDS = 0.1


def measure_tree(command: list) -> dict:
    """Run command once: wall and CPU seconds, and its memory (MB): the peak of the sum of
    the resident sets of it and all its descendants (tshark, workers), sampled every
    SAMPLE_SECONDS from /proc/PID/smaps_rollup (a peak shorter than that can be missed),
    that peak while a tshark runs and after, the peak of the sum of proportional sets
    (PSS: a page shared by n processes counts 1/n in each, the RSS sum counts it n
    times), and ru_maxrss, the peak of the largest single process (exact, what
    measure() and /usr/bin/time -v report)."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE_TREE, str(SAMPLE_SECONDS), *map(str, command)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    code, wall, cpu, maxrss, peak = json.loads(out)
    if code != 0:
        sys.exit(f"bench: {Path(command[1]).name} exited {code}")
    mb = {key: value * 1024 / 1e6 for key, value in peak.items() if key != "samples"}
    return {"wall": wall, "cpu": cpu, "single": maxrss * 1024 / 1e6, **mb}


def bench_memory(args) -> None:
    """Peak memory of main.py --no-report (and with the report: --report), of
    stream-identifier.py alone and of the traffic report on a 1M- and a 10M-packet capture
    built from the shared captures (no conversation repeated: a copy's conversation is not
    one flow with the first's)."""
    cores, load_before = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    rows, figures = [], {}
    for size in args.sizes:
        capture, packets = distinct_capture(args.shared, size, args.spread)
        with tempfile.TemporaryDirectory(prefix="bench-memory-", dir=CACHE) as tmp:
            out = Path(tmp)
            runs = {
                "main.py --no-report": [
                    MAIN, DEVICE_NAME, DEVICE_IP, capture, "-o", out / "main", "-q", "--no-report",
                ],
            }  # fmt: skip
            print(f"bench: {packets:,} packets: main.py --no-report", file=sys.stderr)
            figures[size, "main"] = measure_tree([sys.executable, *runs["main.py --no-report"]])
            packets_csv = out / "main" / f"{capture.name}.packets.csv"
            flows_csv = out / "main" / f"{capture.name}.flows.csv"
            if args.events:
                times = _listed_times(flows_csv, out / "times.csv")
                print(f"bench: {packets:,} packets: main.py --events", file=sys.stderr)
                figures[size, "events"] = measure_tree(
                    [
                        sys.executable, MAIN, DEVICE_NAME, DEVICE_IP, capture, "--events", times,
                        "-o", out / "events", "-q", "--no-report",
                    ]
                )  # fmt: skip
                print(f"bench: {packets:,} packets: event-detector --events", file=sys.stderr)
                figures[size, "detector"] = measure_tree(
                    [
                        sys.executable, REPO / "scripts" / "event-detector.py",
                        out / "events" / "signature.csv", capture, "--events", times,
                        "-o", out / "detect", "-q",
                    ]
                )  # fmt: skip
            print(f"bench: {packets:,} packets: stream-identifier alone", file=sys.stderr)
            figures[size, "flows"] = measure_tree(
                [sys.executable, STREAM_IDENTIFIER, packets_csv, "-o", out / "flows", "-q"]
            )
            if args.report:
                print(f"bench: {packets:,} packets: main.py with the report", file=sys.stderr)
                command = [sys.executable, *runs["main.py --no-report"][:-1]]
                command[command.index(out / "main")] = out / "main-report"
                figures[size, "main-report"] = measure_tree(command)
            print(f"bench: {packets:,} packets: the traffic report alone", file=sys.stderr)
            figures[size, "report"] = measure_tree(
                [
                    sys.executable, REPO / "scripts" / "traffic-report.py", packets_csv, flows_csv,
                    "--device-ip", DEVICE_IP, "--signature", out / "main" / "signature.csv",
                    "-o", out / "report", "-q",
                ]
            )  # fmt: skip
        for key, label in (
            ("main", "`main.py DEVICE IP CAPTURE --no-report -q`"),
            ("main-report", "`main.py DEVICE IP CAPTURE -q` (with the report)"),
            ("events", "`main.py DEVICE IP CAPTURE --events TIMES.csv --no-report -q`"),
            ("detector", "`event-detector.py signature.csv CAPTURE --events TIMES.csv -q`"),
            ("flows", "`stream-identifier.py PACKETS.csv -q` alone"),
            ("report", "`traffic-report.py PACKETS.csv FLOWS.csv --signature ... -q` alone"),
        ):
            if (size, key) not in figures:
                continue
            f = figures[size, key]
            tshark = f"{f['rss_tshark']:,.0f} MB" if f["rss_tshark"] else "(no tshark)"
            rows.append(
                f"| {label} | {packets:,} | {f['wall']:.1f} s | **{f['rss']:,.0f} MB** | "
                f"{tshark} | {f['rss_after']:,.0f} MB | {f['pss']:,.0f} MB | "
                f"{f['single']:,.0f} MB |"
            )
    small, big = (min(args.sizes), max(args.sizes))
    main_big, main_small = figures[big, "main"]["rss"], figures[small, "main"]["rss"]
    flows_big, flows_small = figures[big, "flows"]["rss"], figures[small, "flows"]["rss"]
    verdicts = [
        f"- main.py --no-report at {big:,} packets: peak {main_big:,.0f} MB (target < "
        f"{MEMORY_TARGET_MB:,} MB): {met(main_big < MEMORY_TARGET_MB)}; "
        f"{main_big / main_small:.2f}× its peak at {small:,} (target ≤ 1.20×): "
        f"{met(main_big <= 1.2 * main_small)}.",
        f"- main.py once tshark is done (flows and signature) at {big:,}: "
        f"{figures[big, 'main']['rss_after']:,.0f} MB; at {small:,}: "
        f"{figures[small, 'main']['rss_after']:,.0f} MB.",
        f"- stream-identifier alone: {flows_big:,.0f} MB at {big:,} packets, "
        f"{flows_small:,.0f} MB at {small:,} ({flows_big / flows_small:.2f}×).",
    ]
    for key, name in (("events", "main.py --events"), ("detector", "event-detector")):
        if (big, key) in figures:
            peak = figures[big, key]["rss"]
            verdicts.append(
                f"- {name} at {big:,} packets: peak {peak:,.0f} MB, "
                f"{peak / main_small:.2f}× main.py's at {small:,} (target ≤ 1.20×): "
                f"{met(peak <= 1.2 * main_small)}; at {small:,}: "
                f"{figures[small, key]['rss']:,.0f} MB."
            )
    report_big, report_small = figures[big, "report"]["rss"], figures[small, "report"]["rss"]
    verdicts.append(
        f"- traffic-report alone: {report_big:,.0f} MB at {big:,} packets, "
        f"{report_small:,.0f} MB at {small:,} ({report_big / report_small:.2f}×): the packets "
        "are read in chunks; what grows is the flows, read whole."
    )
    if (big, "main-report") in figures:
        with_big = figures[big, "main-report"]["rss"]
        with_small = figures[small, "main-report"]["rss"]
        verdicts.append(
            f"- main.py with the report at {big:,} packets: peak {with_big:,.0f} MB (target < "
            f"{MEMORY_TARGET_MB:,} MB): {met(with_big < MEMORY_TARGET_MB)}; "
            f"{with_big / with_small:.2f}× its peak at {small:,} (target ≤ 1.20×): "
            f"{met(with_big <= 1.2 * with_small)}."
        )
    text = "\n".join(
        [
            "Peak memory on captures built from the shared public captures (all of them, "
            "copied as many times as needed, each copy's addresses moved so that no "
            "conversation repeats: `distinct_capture()`, tests/bench/distinct.py"
            + (", each copy a week after the one before: `--spread`" if args.spread else "")
            + "), the device "
            f"{DEVICE_NAME} {DEVICE_IP}. One run each, one at a time; "
            f"{machine(cores, load_before)}.",
            "",
            "Memory of the whole process tree (the command, its tshark and its workers): the "
            "sum of their resident sets, sampled every "
            f"{SAMPLE_SECONDS:g} s from /proc/PID/smaps_rollup (what `measure()` and "
            "`/usr/bin/time -v` give, ru_maxrss, is the peak of the largest single process "
            "only: last column). The RSS sum counts a page shared by several processes in "
            "each; the PSS sum counts it once.",
            "",
            "| run | packets | wall | peak, process tree (RSS sum) | while tshark runs | "
            "after tshark | peak, PSS sum | largest single process |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            *verdicts,
            "",
            *busy_note(cores, load_before),
            "Produced by `python tests/bench/bench.py memory"
            + (" --events" if args.events else "")
            + (" --report" if args.report else "")
            + (" --spread" if args.spread else "")
            + "`.",
            "",
        ]
    )
    path = MEMORY_RESULTS.with_name("memory-spread-results.md") if args.spread else MEMORY_RESULTS
    write_results(path, text, " ".join(verdicts))


LISTED_TIMES = 40


# --- live: event-detector --live through a pipe -------------------------------------------

LIVE_RESULTS = HERE / "live-results.md"
# The watcher in this process, so that its own CPU time (RUSAGE_SELF) is told from its
# tshark's (RUSAGE_CHILDREN): the watcher's core and tshark's.
LIVE_IN_PROCESS = """import json, resource, sys, time
from pathlib import Path
from iotsig import detector, live
signatures = detector.read_signatures(Path(sys.argv[1]))
options, _, _ = detector.flow_options(signatures)
started = time.perf_counter()
summary = live.watch("-", signatures, options, detector.DetectOptions(), Path(sys.argv[2]),
                     lambda o, row: None, lambda text: None)
wall = time.perf_counter() - started
me, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps([summary.packets, wall, me.ru_utime + me.ru_stime,
                  children.ru_utime + children.ru_stime]))"""


def bench_live(args) -> None:
    """event-detector --live: the 54-hour capture of bench long (60 placed events), its
    signature learned by main.py --events: (1) piped in as fast as it goes, the detections
    against the offline run's, packets/s of the whole command and of the watcher's own core;
    (2) paced into a FIFO at --speed times its real pace, the resident memory of the watcher
    and its tshark sampled against the packet time written: the peak over the whole replay
    against the first hour's."""
    import threading

    import psutil

    sys.path.insert(0, str(REPO / "tests"))
    from live_replay import records, replay

    import long_capture

    if long_capture.missing_inputs():
        sys.exit(f"bench: {long_capture.missing_inputs()}")
    cores, load_before = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    CACHE.mkdir(exist_ok=True)
    built = long_capture.build_long_capture(CACHE / "two-days", long_capture.Spec(hours=54))
    capture = CACHE / "two-days" / "long-pcap.pcap"  # (the pacer reads pcap)
    if not capture.exists() or capture.stat().st_mtime < built.pcap.stat().st_mtime:
        run(["editcap", "-F", "pcap", built.pcap, capture])
    packets = packet_count(capture)
    rows, verdicts = [], []
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        tmp = Path(tmp)
        learn = [MAIN, "HueLightEssentials", "192.168.1.141", capture, "--events", built.times,
                 "--event", "toggle", "-o", tmp / "learn", "--no-report", "-q"]  # fmt: skip
        run([sys.executable, *learn])
        signature = tmp / "learn" / "signature.csv"
        run([sys.executable, DETECTOR, signature, capture, "-o", tmp / "offline", "-q"])
        # (1) a longer stream: time-shifted copies one after the other
        stream, shift = _copies(capture, args.copies, tmp / "stream.pcap")
        streamed = packet_count(stream)
        run([sys.executable, DETECTOR, signature, stream, "-o", tmp / "offline", "-q"])
        offline = pd.read_csv(tmp / "offline" / "detections.csv", dtype=str)
        # Offline on the stream judges keep-alives over all its copies, in which an
        # event's bursts recur from copy to copy: against each copy alone too.
        run([sys.executable, DETECTOR, signature, capture, "-o", tmp / "single", "-q"])
        single = pd.read_csv(tmp / "single" / "detections.csv", dtype=str)
        per_copy = _per_copy(single, args.copies, shift, packets)
        compared = ["start", "first_frame", "last_frame", "event", "score", "status"]
        copies_same = []
        first = tmp / "first.pcap"  # (one packet: what starting and stopping cost)
        run(["editcap", "-r", "-F", "pcap", capture, first, "1"])
        walls, starts, own, own_starts, verdicts_same = [], [], [], [], []
        for k in range(args.repeat):
            out = tmp / f"live-{k}"
            out.mkdir()
            for source, times in ((first, starts), (stream, walls)):
                with open(source, "rb") as piped:
                    started = time.perf_counter()
                    run([sys.executable, DETECTOR, signature, "--live", "-", "-o", out, "-q"],
                        stdin=piped)  # fmt: skip
                    times.append(time.perf_counter() - started)
            live = pd.read_csv(out / "detections.csv", dtype=str)
            named = ["capture", "flows"]  # (the capture's name: stdin)
            got = live[compared].assign(start=live["start"].astype(float).map("{:.6f}".format))
            copies_same.append(got.equals(per_copy[compared]))
            differing = (
                live.drop(columns=named).fillna("") != offline.drop(columns=named).fillna("")
            ).any(axis=1)  # (an empty cell is NaN: never equal to itself)
            verdicts_same.append(
                live.drop(columns=named).equals(offline.drop(columns=named))
                and [f.split("#")[-1] for f in live["flows"]]
                == [f.split("#")[-1] for f in offline["flows"]]
            )
            for source, kept in ((first, own_starts), (stream, own)):
                with open(source, "rb") as piped:
                    result = subprocess.run(
                        [sys.executable, "-c", LIVE_IN_PROCESS, signature, out / "in.csv"],
                        stdin=piped, stdout=subprocess.PIPE, text=True, check=True,
                    )  # fmt: skip
                kept.append(json.loads(result.stdout))
        wall, start = statistics.median(walls), statistics.median(starts)
        counted, own_wall, cpu, tshark_cpu = min(own, key=lambda r: r[2])
        _, start_wall, start_cpu, start_tshark = min(own_starts, key=lambda r: r[2])
        sustained = streamed / (wall - start)
        bare = []  # tshark alone, as the watch runs it: what bounds the command
        for _ in range(args.repeat):
            started = time.perf_counter()
            run(fields_command(stream, asked_fields(), live=True), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=TSHARK_ENV)  # fmt: skip
            bare.append(time.perf_counter() - started)
        hours = args.copies * 54
        rows += [
            f"| bare tshark as the watch runs it (`tshark -l -M ... -T fields`, every "
            f"field) | {streamed:,} | {statistics.median(bare):.2f} s | "
            f"{streamed / statistics.median(bare):,.0f} |",
            f"| start-up and end: one packet piped in (`event-detector.py SIGNATURE --live -`) "
            f"| 1 | {start:.2f} s | |",
            f"| piped in at once ({args.copies} time-shifted copies, {hours} hours): the "
            f"whole command | {streamed:,} | {wall:.2f} s | {streamed / wall:,.0f} |",
            f"| the same, sustained (the command's wall less its start-up and end) | "
            f"{streamed:,} | {wall - start:.2f} s | **{sustained:,.0f}** |",
            f"| CPU time of the watcher (Python process), less its start-up's "
            f"({start_cpu:.2f} s) | {counted:,} | {cpu - start_cpu:.2f} s | "
            f"**{counted / (cpu - start_cpu):,.0f}** |",
            f"| CPU time of its tshark, less its start-up's ({start_tshark:.2f} s) | "
            f"{counted:,} | {tshark_cpu - start_tshark:.2f} s | "
            f"{counted / (tshark_cpu - start_tshark):,.0f} |",
        ]
        same = all(verdicts_same)
        verdicts = [
            f"{len(offline)} detections offline on the {hours}-hour stream; the live runs' "
            f"detections CSVs the same (but the capture's name, stdin): {met(same)}"
            + (
                ""
                if same
                else f" ({int(differing.sum())} rows differ: offline on the stream judges "
                "keep-alives over all its copies, where an event's bursts recur from copy "
                "to copy; live, over a day, as on one copy)"
            ),
            f"the same as event-detector on one copy, repeated {args.copies} times "
            f"({len(single)} detections each): {sum(copies_same)} of {len(copies_same)} runs: "
            f"{met(all(copies_same))}",
            f"throughput >= 20,000 packets/s sustained through a pipe: {sustained:,.0f} "
            f"({met(sustained >= 20_000)}); the watcher's core alone "
            f"{counted / (cpu - start_cpu):,.0f}",
        ]
        # (2) memory over a paced replay
        fifo = tmp / "paced" / capture.name
        fifo.parent.mkdir()
        os.mkfifo(fifo)
        watcher = subprocess.Popen(
            [sys.executable, DETECTOR, signature, "--live", fifo, "-o", fifo.parent, "-q"]
        )
        written: list[float] = []
        _, frames = records(capture)
        times = np.array([t for t, _ in frames])
        samples = []

        def sample():
            root = psutil.Process(watcher.pid)
            while watcher.poll() is None:
                try:
                    rss = root.memory_info().rss
                    rest = sum(m.memory_info().rss for m in root.children(recursive=True))
                except psutil.Error:
                    break
                samples.append((len(written), rss, rest))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        with open(fifo, "wb") as sink:
            replay(capture, sink, args.speed, written)
        watcher.wait()
        sampler.join()
        at = np.array([times[max(n - 1, 0)] - times[0] for n, _, _ in samples])
        first = (at <= 3600) & (at > 0)
        days = (times[-1] - times[0]) / 86_400
        ratios = {}
        for label, values in (
            ("the watcher (Python)", np.array([r for _, r, _ in samples]) / 1e6),
            ("its tshark (and dumpcap)", np.array([r for _, _, r in samples]) / 1e6),
            ("both", np.array([r + t for _, r, t in samples]) / 1e6),
        ):
            first_hour, peak = values[first].max(), values.max()
            ratios[label] = peak / first_hour
            rows.append(
                f"| paced at {args.speed:g}× into a FIFO ({days:.2f} days of packets in "
                f"{(times[-1] - times[0]) / args.speed:.0f} s): resident memory of {label} | "
                f"{packets:,} | first hour {first_hour:.0f} MB, whole replay {peak:.0f} MB | "
                f"**{peak / first_hour:.2f}×** |"
            )
        verdicts.append(
            "peak within 1.2× of the first hour's: "
            + ", ".join(f"{k} {v:.2f}× ({met(v <= 1.2)})" for k, v in ratios.items())
        )
    command = "python tests/bench/bench.py live" + (
        f" --speed {args.speed:g}" if args.speed != 1000 else ""
    )
    text = "\n".join(
        [
            f"event-detector --live on the 54-hour capture of `bench.py long` (60 event "
            f"recordings of a Hue light placed in real traffic), its toggle signature learned by "
            f"main.py --events; for the throughput, {args.copies} copies of it one after the "
            f"other (each shifted past the one before: editcap -t, mergecap -a) piped in at "
            f"once; {machine(cores, load_before)}. Start-up and end (Python's imports, tshark's "
            f"start, the last flows' detection) are measured apart, with one packet piped in, "
            f"and taken off the sustained figures; the CPU times are each process's own "
            f"(the watcher in one process, its tshark beside it, on the other core); median "
            f"wall of {args.repeat} runs, the least CPU.",
            "",
            "| run | packets | measured | packets/s or ratio |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            *[f"- {v}" for v in verdicts],
            "",
            *busy_note(cores, load_before),
            f"Produced by `{command}`.",
            "",
        ]
    )
    write_section(LIVE_RESULTS, "Throughput and memory", text, "; ".join(verdicts))


LOCK = SHARED / "long" / "schlage-lock-01.pcap"
LOCK_LOG = SHARED / "long" / "schlage-lock-01.android-events.csv"
LOCK_READING = ["--event-column", "3", "--device-column", "2", "--timezone", "America/New_York"]


def write_section(path: Path, title: str, text: str, verdict: str) -> None:
    """One benchmark's section (`## title` up to the next one) of a results file that
    several write, the others' left as they are."""
    section = f"## {title}\n\n{text.rstrip()}\n"
    old = path.read_text() if path.exists() else ""
    parts = [p for p in old.split("\n## ") if p.strip()]
    parts = [p if p.startswith("## ") else "## " + p for p in parts]
    kept = [p.rstrip() + "\n" for p in parts if not p.startswith(f"## {title}\n")]
    if old and not old.startswith("## "):  # (a file from before the sections: replaced)
        kept = []
    write_results(path, "\n".join(sorted(kept + [section])), verdict)


def bench_live_lock(args) -> None:
    """event-detector --live on the shared Schlage lock week, whose actions have the sizes
    of its hourly status report (a keep-alive): lock and unlock relabelled 'action', the
    log cut at the middle of its actions (as tests/test_bursts.py's lock_halves), learned
    by main.py --events from the first half, the second half written to a FIFO at
    --speed times its pace; its detections against event-detector's on the file, and
    how long after each detection's last packet was written its line came."""
    sys.path.insert(0, str(REPO / "tests"))
    from live_replay import records, watch_through_fifo

    if not (LOCK.is_file() and LOCK_LOG.is_file()):
        sys.exit(f"bench: {LOCK} is absent (the shared captures beside the repository)")
    cores, load_before = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=CACHE) as tmp:
        tmp = Path(tmp)
        log = pd.read_csv(LOCK_LOG, header=None, names=["time", "device", "event"], dtype=str)
        when = pd.to_datetime(log["time"], format="%B %d, %Y at %I:%M:%S%p")
        log["utc"] = when.dt.tz_localize("America/New_York").dt.tz_convert("UTC")
        log = log.sort_values("utc", kind="stable")
        actions = log[log["event"] != "event_batt"]["utc"]
        middle = (
            actions.iloc[len(actions) // 2 - 1]
            + (actions.iloc[len(actions) // 2] - actions.iloc[len(actions) // 2 - 1]) / 2
        )
        stamp = middle.strftime("%Y-%m-%d %H:%M:%S")
        halves = {}
        for part, flag in (("first", "-B"), ("second", "-A")):
            pcap = tmp / f"{part}.pcap"
            run(["editcap", "-F", "pcap", flag, stamp, LOCK, pcap], env={"TZ": "UTC"})
            rows = log[(log["utc"] < middle) == (part == "first")]
            listed = tmp / f"{part}-action.csv"
            rows.assign(
                event=rows["event"].replace({"event_lock": "action", "event_unlock": "action"})
            )[["time", "device", "event"]].to_csv(listed, header=False, index=False)
            halves[part] = (pcap, listed)
        (first, first_log), (second, second_log) = halves["first"], halves["second"]
        second_packets = packet_count(second)
        _, frames = records(second)
        days = (frames[-1][0] - frames[0][0]) / 86_400
        run([sys.executable, MAIN, "lock", "192.168.1.122", first, "--events", first_log,
             "--event", "action", *LOCK_READING, "-o", tmp / "learn", "--no-report",
             "-q"])  # fmt: skip
        signature = tmp / "learn" / "signature.csv"
        period = pd.read_csv(signature)["keepalive_period"].iloc[0]
        run([sys.executable, DETECTOR, signature, second, "--events", second_log,
             *LOCK_READING, "-o", tmp / "offline", "-q"])  # fmt: skip
        offline = pd.read_csv(tmp / "offline" / "detections.csv", dtype=str)
        scored = pd.read_csv(tmp / "offline" / "scored-events.csv", dtype=str)
        found = int(((scored["event"] == "action") & (scored["status"] == "found")).sum())
        listed = int((scored["event"] == "action").sum())
        false = int((scored["status"] == "false").sum())
        rows, verdicts = [], []
        for k in range(args.repeat):
            fifo = tmp / f"fifo-{k}" / second.name  # (named as the file: the same uids)
            fifo.parent.mkdir()
            os.mkfifo(fifo)
            out = tmp / f"live-{k}"
            command = [sys.executable, DETECTOR, signature, "--live", fifo, "-o", out]
            started = time.perf_counter()
            late = watch_through_fifo(command, second, fifo, args.speed)
            wall = time.perf_counter() - started
            live = pd.read_csv(out / "detections.csv", dtype=str)
            same = live.drop(columns="signature").equals(offline.drop(columns="signature"))
            starts_off, starts_live = set(offline["start_utc"]), set(live["start_utc"])
            rows.append(
                f"| {k + 1} | {wall:.0f} s | {len(live)} | "
                f"{len(starts_off - starts_live)} | {len(starts_live - starts_off)} | "
                f"{'yes' if same else 'no'} | {np.median(late):.2f} s | {max(late):.2f} s |"
            )
            verdicts.append((same, max(late)))
    worst = max(v[1] for v in verdicts)
    verdict = [
        f"offline on the second half: {found} of {listed} actions found, {false} false "
        f"({len(offline)} detections)",
        f"live at {args.speed:g}x: the same detections CSV as offline in "
        f"{sum(v[0] for v in verdicts)} of {len(verdicts)} runs: "
        f"{met(all(v[0] for v in verdicts))}",
        f"each within 5 s of its last packet: the latest {worst:.2f} s: {met(worst < 5)}",
    ]
    text = "\n".join(
        [
            f"The shared Schlage lock week (its actions have the sizes of its hourly status "
            f"report), lock and unlock learned as one event 'action' by main.py --events "
            f"from the first half of its log (keepalive_period {period:g} s: the status "
            f"report's period where it was learned), the second half ({days:.1f} days, "
            f"{second_packets:,} packets) written to a FIFO at {args.speed:g}× its "
            f"pace into `event-detector.py SIGNATURE --live FIFO`; {machine(cores, load_before)}. "
            "Late: from the wall time the detection's last packet was written to the line "
            "on standard output (the row is in detections.csv before it).",
            "",
            "| run | wall | detections | offline's missed | not offline's | the same CSV | "
            "late, median | late, most |",
            "|---:|---:|---:|---:|---:|---|---:|---:|",
            *rows,
            "",
            *[f"- {v}" for v in verdict],
            "",
            *busy_note(cores, load_before),
            "Produced by `python tests/bench/bench.py live-lock"
            + (f" --speed {args.speed:g}" if args.speed != 1000 else "")
            + f" --repeat {args.repeat}`.",
        ]
    )
    write_section(LIVE_RESULTS, "The Schlage lock's actions (keep-alive look-alikes)", text,
                  "; ".join(verdict))  # fmt: skip


def _copies(capture: Path, copies: int, path: Path) -> Path:
    """`copies` of a pcap capture one after the other (each shifted past the one before by
    its span and an hour: editcap -t, mergecap -a), as pcap."""
    out = subprocess.run(
        ["capinfos", "-a", "-e", "-S", "-T", "-r", str(capture)],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1].split("\t")  # fmt: skip
    shift = math.ceil(float(out[-1]) - float(out[-2])) + 3600
    parts = []
    for k in range(copies):
        part = path.with_name(f"{path.stem}-{k}.pcap")
        run(["editcap", "-F", "pcap", "-t", str(k * shift), capture, part])
        parts.append(part)
    run(["mergecap", "-a", "-F", "pcap", "-w", path, *parts])
    for part in parts:
        part.unlink()
    return path, shift


def _per_copy(single: pd.DataFrame, copies: int, shift: int, packets: int) -> pd.DataFrame:
    """The detections of one copy (event-detector on the capture alone) as they would be
    in each copy of the stream: times shifted, frames counted on."""
    parts = []
    for k in range(copies):
        part = single.copy()
        part["start"] = (part["start"].astype(float) + k * shift).map("{:.6f}".format)
        for column in ("first_frame", "last_frame"):
            part[column] = (part[column].astype(int) + k * packets).astype(str)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _listed_times(flows_csv: Path, path: Path) -> Path:
    """An event-times CSV for the memory benchmark's --events runs: the starts of the
    device's TLS connections to its cloud (the plug's toggles, in every copy), at most
    LISTED_TIMES spread evenly over the capture."""
    flows = pd.read_csv(flows_csv, usecols=["ts", "orig_h", "resp_p"])
    starts = np.sort(flows.loc[(flows["orig_h"] == DEVICE_IP) & (flows["resp_p"] == 443), "ts"])
    chosen = starts[np.unique(np.linspace(0, len(starts) - 1, LISTED_TIMES).round().astype(int))]
    pd.DataFrame({"time": [f"{t:.3f}" for t in chosen]}).to_csv(path, index=False)
    return path


def _tshark_version() -> str:
    out = subprocess.run([tshark_path(), "--version"], capture_output=True, text=True).stdout
    return out.split()[2] if out.startswith("TShark") else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    translator = sub.add_parser("translator", help="packet-translator.py against bare tshark")
    translator.add_argument(
        "--min-packets",
        type=int,
        default=MIN_PACKETS,
        help="size of the big capture (default: %(default)s)",
    )
    translator.set_defaults(function=bench_translator)

    flows_parser = sub.add_parser("flows", help="stream-identifier.py on a big packets CSV")
    flows_parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of the packets CSV (default: %(default)s)"
    )
    flows_parser.set_defaults(function=bench_flows)

    signature = sub.add_parser("signature", help="signature-extractor.py on many recordings")
    signature.add_argument(
        "--recordings",
        type=int,
        default=100,
        help="flows CSVs, one per recording (default: %(default)s)",
    )
    signature.add_argument(
        "--flows", type=int, default=10_000, help="flows per recording (default: %(default)s)"
    )
    signature.set_defaults(function=bench_signature)
    evaluate = sub.add_parser("evaluate", help="evaluate.py on the shared event recordings")
    evaluate.set_defaults(function=bench_evaluate)
    report = sub.add_parser("report", help="what the traffic report adds to main.py")
    report.set_defaults(function=bench_report)
    long_parser = sub.add_parser("long", help="main.py and event-detector with --events")
    long_parser.set_defaults(function=bench_long)
    memory = sub.add_parser("memory", help="peak memory of main.py and stream-identifier")
    memory.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(MEMORY_SIZES),
        help="packets of the captures (default: %(default)s)",
    )
    memory.add_argument(
        "--report", action="store_true", help="main.py with the report too (as long again)"
    )
    memory.add_argument(
        "--events",
        action="store_true",
        help="main.py --events and event-detector --events too (a times list from the "
        "device's connections to its cloud)",
    )
    memory.add_argument(
        "--spread",
        action="store_true",
        help="the copies a week apart (a week-long recording of one home), not at once",
    )
    memory.set_defaults(function=bench_memory)
    chunks = sub.add_parser("chunks", help="one big capture in chunks on every core")
    chunks.add_argument(
        "--min-packets",
        type=int,
        default=1_000_000,
        help="size of the capture (default: %(default)s)",
    )
    chunks.set_defaults(function=bench_chunks)
    windows_parser = sub.add_parser("windows", help="cutting a big packets CSV into windows")
    windows_parser.add_argument("--min-packets", type=int, default=1_000_000)
    windows_parser.add_argument("--windows", type=int, default=71, help="(default: 71)")
    windows_parser.set_defaults(function=bench_windows)
    live_parser = sub.add_parser("live", help="event-detector --live through a pipe")
    live_parser.add_argument(
        "--speed", type=float, default=1000.0, help="pace of the memory replay (default: 1000)"
    )
    live_parser.add_argument(
        "--copies", type=int, default=6, help="copies in the throughput stream (default: 6)"
    )
    live_parser.set_defaults(function=bench_live)
    lock_parser = sub.add_parser(
        "live-lock", help="event-detector --live on the lock's second half, against offline"
    )
    lock_parser.add_argument(
        "--speed", type=float, default=1000.0, help="pace of the replay (default: 1000)"
    )
    lock_parser.add_argument("--repeat", type=int, default=2, help="runs (default: 2)")
    lock_parser.set_defaults(function=bench_live_lock)
    features_parser = sub.add_parser("features", help="feature-extractor.py, time and memory")
    features_parser.add_argument("--rows", type=int, default=1_000_000)
    features_parser.add_argument("--big-rows", type=int, default=10_000_000)
    features_parser.set_defaults(function=bench_features)
    for benchmark in (
        translator,
        flows_parser,
        signature,
        evaluate,
        report,
        long_parser,
        chunks,
        live_parser,
        features_parser,
    ):
        benchmark.add_argument(
            "--repeat", type=int, default=3, help="runs; the median is reported (default: 3)"
        )
    shared = (
        translator,
        flows_parser,
        evaluate,
        long_parser,
        memory,
        chunks,
        windows_parser,
        features_parser,
    )
    for benchmark in shared:  # the shared captures
        benchmark.add_argument(
            "--shared",
            type=Path,
            default=SHARED,
            help="the shared captures (default: ../shared/pcaps)",
        )
    args = parser.parse_args()
    args.function(args)


if __name__ == "__main__":
    main()
