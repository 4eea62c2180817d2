#!/usr/bin/env python3
"""feature-extractor's --unit uniflow against netml 0.7.1 (PyPI, Apache-2.0), capture by capture.

    python tests/bench/netml_check.py [CAPTURE ...]   # default: the shared event captures
                                                      # and data/*.pcap

netml runs in a virtual environment of its own (it pins numpy 2.0, pandas 2.2, scikit-learn
1.5), made once in tests/.bench/netml-venv (git-ignored; --venv elsewhere). For each capture
and each feature type (IAT, SIZE, IAT_SIZE, STATS, SAMP_NUM, SAMP_SIZE; the vector types also
with --fft; --header's TCP flag counts and TTLs), netml's flows are taken whole
(`pcap2flows(interval=...)` longer than any gap, `flow_ptks_thres=2`; q_interval set on the
PCAP object, which netml 0.7.1 reads in flow2features but sets only when it splits by
quantile) and ours are cut with an idle timeout and maximum duration longer than the
capture. The flows both keep (same 5-tuple, first packet time and packet count) must have
every value within 1e-6 (relative for values over 1); with L and the sampling window
netml's, and our defaults must come out as netml's when the two keep the same flows.
Exits 1 and names the first difference otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "pcaps"
VENV = REPO / "tests" / ".bench" / "netml-venv"
NETML = "netml==0.7.1"
TYPES = ["IAT", "SIZE", "IAT_SIZE", "STATS", "SAMP_NUM", "SAMP_SIZE"]
FFT_TYPES = ["IAT", "SIZE", "IAT_SIZE", "SAMP_NUM", "SAMP_SIZE"]
WHOLE = 1e9  # seconds: longer than any capture, so no flow is split
TOLERANCE = 1e-6


def default_captures() -> list[Path]:
    return sorted(SHARED.glob("events/*/*/*.pcap")) + sorted((REPO / "data").glob("*.pcap"))


def netml_python(venv: Path) -> Path:
    """The netml venv's python, made (once) with the system's python3 and pip."""
    python = venv / "bin" / "python"
    if python.exists() and not subprocess.call(
        [python, "-c", "import netml.pparser.parser"], stderr=subprocess.DEVNULL
    ):
        return python
    print(f"netml_check: making {venv} with {NETML} (once)", file=sys.stderr)
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", venv], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", NETML], check=True, stdout=subprocess.DEVNULL
    )
    return python


# --- netml's side (run by the netml venv's python: no iotsig there) ------------------------


def netml_side(pcap: str) -> dict:
    """netml's features of one capture: per feature type (and FFT- type), its fids, first
    packet times, packet counts and feature rows; its dim and sampling window."""
    import numpy as np
    from netml.pparser import parser as pp

    pcap_object = pp.PCAP(pcap, flow_ptks_thres=2, verbose=0)
    pcap_object.pcap2flows(interval=WHOLE)
    pcap_object.q_interval = 0.9  # (netml 0.7.1 sets it only when splitting by quantile)
    flows = pcap_object.flows
    out = {
        "fids": [list(map(str, fid)) for fid, _ in flows],
        "first": [float(pkts[0].time) for _, pkts in flows],
        "packets": [len(pkts) for _, pkts in flows],
        "dim": int(np.floor(np.quantile([len(p) for _, p in flows], 0.9))) if flows else 0,
        "rate": float(pp._get_split_interval([pp._get_flow_duration(p) for _, p in flows], 0.3))
        if flows
        else 0.0,
        "features": {},
    }
    if not flows:
        return out
    for kind in TYPES:
        pcap_object.flow2features(kind, fft=False, header=False)
        out["features"][kind] = pcap_object.features.tolist()
    for kind in FFT_TYPES:
        pcap_object.flow2features(kind, fft=True, header=False)
        out["features"]["FFT-" + kind] = pcap_object.features.tolist()
    try:  # (netml's header reads pkt.payload.proto: an IPv6 packet has none)
        pcap_object.flow2features("SIZE", fft=False, header=True)
    except AttributeError as e:
        out["header_error"] = f"netml's header fails: {type(e).__name__}: {e}"
    else:
        # (the 8 flag counts and the first dim packets' TTLs, then SIZE's dim values)
        header = 8 + out["dim"]
        out["features"]["HEADER"] = [row[:header] for row in pcap_object.features.tolist()]
    return out


# --- ours, and the comparison --------------------------------------------------------------


def our_side(packets_csv: Path, length: int, rate: float, fft: bool, header: bool):
    """Our uniflow features of a packets CSV (the library as feature-extractor runs it)."""
    import pandas as pd

    from iotsig import features, flows

    options = features.FeatureOptions(
        unit="uniflow",
        features=tuple(FFT_TYPES if fft else TYPES),
        fft=fft,
        header=header,
        length=length,
        sampling_rate=rate,
        flow=flows.FlowOptions(idle_timeout=WHOLE, max_duration=WHOLE),
    )
    with tempfile.TemporaryDirectory(prefix="netml-check-") as tmp:
        written = features.write_features([packets_csv], Path(tmp), options)
        table = pd.read_parquet(written.parquet)
    # (netml's defaults are over its IPv4 TCP/UDP flows; ours over every unit kept)
    alike = table[table["proto"].isin(["tcp", "udp"]) & ~table["orig_h"].str.contains(":")]
    defaults = (
        features.default_length(alike["packets"].to_numpy()),
        features.default_sampling_rate(alike["duration"].to_numpy()),
    )
    return table, defaults


def compare(capture: Path, netml: dict, work: Path) -> list[str]:
    """The differences between netml's and our features of one capture (empty: none)."""
    import numpy as np

    from iotsig import packets

    if not netml["fids"]:
        return []
    translation = packets.translate(capture, packets.output_path(capture, work))
    ours, defaults = our_side(translation.output, netml["dim"], netml["rate"], False, True)
    ours_fft, _ = our_side(translation.output, netml["dim"], netml["rate"], True, False)
    proto = {"6": "tcp", "17": "udp"}

    def key(src, dst, sport, dport, protocol, first, count):
        return (src, dst, int(float(sport)), int(float(dport)), protocol, round(first, 6), count)

    mine = {
        key(r.orig_h, r.resp_h, r.orig_p, r.resp_p, r.proto, r.ts, r.packets): i
        for i, r in enumerate(ours.itertuples())
        if r.proto in ("tcp", "udp") and ":" not in r.orig_h  # (netml: IPv4 only)
    }
    problems, both, only_netml = [], [], []
    for j, (fid, first, count) in enumerate(zip(netml["fids"], netml["first"], netml["packets"])):
        if fid[0] == "":  # netml's one bucket for every non-IPv4 packet: no flow
            continue
        k = key(fid[0], fid[1], fid[2], fid[3], proto.get(fid[4], fid[4]), first, count)
        if k in mine:
            both.append((j, mine[k]))
        else:
            only_netml.append(k)
    names = {
        "IAT": "iat_",
        "SIZE": "size_",
        "IAT_SIZE": "iat_size_",
        "STATS": "stats_",
        "SAMP_NUM": "samp_num_",
        "SAMP_SIZE": "samp_size_",
        "HEADER": ("tcp_", "ttl_"),
    }
    rows_netml = [j for j, _ in both]
    rows_ours = [i for _, i in both]
    for kind, values in netml["features"].items():
        fft = kind.startswith("FFT-")
        stem = names[kind.removeprefix("FFT-")]
        table = ours_fft if fft else ours
        stems = stem if isinstance(stem, tuple) else (stem,)
        columns = [
            c
            for c in table.columns
            if c.startswith(tuple(("fft_" if fft else "") + s for s in stems))
        ]
        if stem == "iat_":
            columns = [c for c in columns if not c.startswith(("iat_size_", "fft_iat_size_"))]
        theirs = np.asarray(values, dtype=float)[rows_netml]
        have = table[columns].to_numpy(dtype=float)[rows_ours]
        if theirs.shape != have.shape:
            problems.append(f"{capture.name}: {kind}: netml {theirs.shape}, ours {have.shape}")
            continue
        off = np.abs(theirs - have) > TOLERANCE * np.maximum(1.0, np.abs(theirs))
        if off.any():
            r, c = np.argwhere(off)[0]
            problems.append(
                f"{capture.name}: {kind} of flow {netml['fids'][rows_netml[r]]}: "
                f"{columns[c]} netml {theirs[r, c]!r}, ours {have[r, c]!r} "
                f"({int(off.any(axis=1).sum())} flow(s) differ)"
            )
    # (netml's bucket of every IPv6 packet counts in its quantiles: not comparable then)
    bucket = any(fid[0] == "" for fid in netml["fids"])
    same_flows = not only_netml and len(both) == len(mine) and not bucket
    if same_flows and defaults != (netml["dim"], netml["rate"]):
        problems.append(
            f"{capture.name}: same flows, but our default L and sampling window "
            f"{defaults} are not netml's {(netml['dim'], netml['rate'])}"
        )
    compare.counts.append((capture.name, len(both), len(only_netml), len(mine) - len(both)))
    if "header_error" in netml:
        compare.skipped.append(capture.name)
    return problems


compare.counts = []
compare.skipped = []  # captures whose header vector netml cannot give


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("captures", nargs="*", type=Path)
    parser.add_argument("--venv", type=Path, default=VENV)
    parser.add_argument("--netml-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.netml_side:  # (in the netml venv)
        json.dump({str(c): netml_side(str(c)) for c in args.captures}, sys.stdout)
        return 0
    captures = args.captures or default_captures()
    python = netml_python(args.venv)
    side = subprocess.run(
        [python, __file__, "--netml-side", *map(str, captures)],
        capture_output=True,
        text=True,
    )
    if side.returncode:
        sys.exit(f"netml_check: netml failed: {side.stderr.strip().splitlines()[-1]}")
    theirs = json.loads(side.stdout)
    problems = []
    with tempfile.TemporaryDirectory(prefix="netml-check-") as tmp:
        for capture in captures:
            problems += compare(capture, theirs[str(capture)], Path(tmp))
    kept = sum(c[1] for c in compare.counts)
    netml_only = sum(c[2] for c in compare.counts)
    ours_only = sum(c[3] for c in compare.counts)
    print(
        f"netml_check: {len(captures)} capture(s), {kept} TCP/UDP flow(s) both keep "
        f"compared on {len(TYPES)} feature types, {len(FFT_TYPES)} FFT types and the header "
        f"vector (TCP flag counts, TTLs); {netml_only} flow(s) only netml keeps, "
        f"{ours_only} only ours"
    )
    if compare.skipped:
        print(
            f"netml_check: {len(compare.skipped)} capture(s) without netml's header vector "
            "(its header features fail on an IPv6 packet)"
        )
    for problem in problems:
        print(f"netml_check: {problem}", file=sys.stderr)
    print(f"netml_check: {'DIFFERENT' if problems else 'the same'} (tolerance {TOLERANCE:g})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
