"""feature-extractor.py: units, netml's feature values, labels, the partitioned path, errors;
and (slow) the check against netml itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from iotsig import csvio, features, flow_partitions
from iotsig.schema import FEATURES, FLOWS, PACKETS

from conftest import REPO, TPLINK_CAPTURES, run_script

CAPTURE = TPLINK_CAPTURES[0]  # 1724059939.pcap: in the quick tier's captures
PLUG_IP = "192.168.1.135"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """feature-extractor on one capture (translated first), and its flows CSV."""
    out = tmp_path_factory.mktemp("features")
    result = run_script(
        "feature-extractor.py",
        CAPTURE,
        "--features",
        "IAT_SIZE,STATS,SIZE",
        "--header",
        "--min-packets",
        "1",
        "-o",
        out,
    )
    packets_csv = out / f"{CAPTURE.name}.packets.csv"
    run_script("stream-identifier.py", packets_csv, "-o", out / "flows", "-q")
    return result, out, packets_csv


def test_one_row_per_flow_with_the_flows_csvs_uid_and_5_tuple(extracted):
    result, out, _ = extracted
    table = csvio.read_table(out / "features.csv", features.features_table([]))
    flows_csv = csvio.read_table(out / "flows" / f"{CAPTURE.name}.flows.csv", FLOWS)
    assert table.columns[: len(FEATURES.names)].tolist() == FEATURES.names
    merged = table.merge(flows_csv, on="uid", suffixes=("", "_flow"))
    assert len(merged) == len(table) == len(flows_csv)
    for column in ("orig_h", "resp_h", "proto"):
        assert (merged[column].astype(str) == merged[f"{column}_flow"].astype(str)).all()
    assert (merged["packets"] == merged["orig_pkts"] + merged["resp_pkts"]).all()
    assert (pd.to_numeric(merged["stats_num_pkts"]) == merged["packets"]).all()
    assert "wrote" in result.stdout and "L = " in result.stdout


def test_the_values_are_netmls_definitions_on_the_packets(extracted):
    _, out, packets_csv = extracted
    table = pd.read_parquet(out / "features.parquet")
    csv = pd.read_csv(out / "features.csv")
    assert len(table) == len(csv)
    assert np.allclose(table["stats_mean"], csv["stats_mean"])
    packets = csvio.read_table(packets_csv, PACKETS)
    length = sum(c.startswith("size_") for c in table.columns)
    assert length == features.default_length(table["packets"].to_numpy())
    # the longest flow, by hand from its packets
    row = table.loc[table["packets"].idxmax()]
    ends = {(row.orig_h, row.orig_p), (row.resp_h, row.resp_p)}
    mine = packets[
        packets.apply(lambda p: {(p.ip_src, p.src_port), (p.ip_dst, p.dst_port)} == ends, axis=1)
    ].sort_values("ts", kind="stable")
    sizes = mine["frame_len"].to_numpy(float)
    iats = np.diff(mine["ts"].to_numpy(float))
    assert len(sizes) == row.packets
    expected_sizes = np.pad(sizes, (0, max(0, length - len(sizes))))[:length]
    assert np.allclose([row[f"size_{i}"] for i in range(length)], expected_sizes)
    interleaved = np.ravel(np.column_stack([iats, sizes[:-1]])).tolist() + [sizes[-1]]
    width = 2 * length - 1
    interleaved = (interleaved + [0] * width)[:width]
    assert np.allclose([row[f"iat_size_{i}"] for i in range(width)], interleaved, atol=1e-6)
    q1, q2, q3 = np.quantile(sizes, [0.25, 0.5, 0.75])
    stats = [
        iats.sum(),
        len(sizes) / iats.sum(),
        sizes.sum() / iats.sum(),
        sizes.mean(),
        sizes.std(),
        q1,
        q2,
        q3,
        sizes.min(),
        sizes.max(),
        len(sizes),
        sizes.sum(),
    ]
    assert np.allclose([row[f"stats_{s}"] for s in features.STATS], stats, rtol=1e-6)
    flags = "".join(mine["tcp_flags"].fillna("").astype(str))
    assert row["tcp_ack"] == flags.count("A") and row["tcp_syn"] == flags.count("S")
    ttls = mine["ip_ttl"].to_numpy(float)
    expected_ttls = np.pad(ttls, (0, max(0, length - len(ttls))))[:length]
    assert np.array_equal([row[f"ttl_{i}"] for i in range(length)], expected_ttls)


def test_partitions_give_the_whole_files_units(extracted, tmp_path, monkeypatch):
    """The memory-flat path (a big packets CSV read in partitions by conversation) writes
    the same units and values as the one-pass path."""
    _, out, packets_csv = extracted
    options = features.FeatureOptions(
        unit="burst", features=("IAT_SIZE", "STATS", "SAMP_SIZE"), header=True
    )
    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    whole = features.write_features([packets_csv], tmp_path / "whole", options)
    monkeypatch.setattr(flow_partitions, "ONE_PASS_BYTES", 1 << 10)
    monkeypatch.setattr(flow_partitions, "PARTITION_BYTES", 4 << 10)
    assert flow_partitions.partitions_for(packets_csv) > 1
    cut = features.write_features([packets_csv], tmp_path / "cut", options)
    a = pd.read_parquet(whole.parquet).sort_values("uid").reset_index(drop=True)
    b = pd.read_parquet(cut.parquet).sort_values("uid").reset_index(drop=True)
    assert len(a) > 5 and a["uid"].str.contains("/").all()
    pd.testing.assert_frame_equal(a, b)


def test_uniflows_bursts_and_windows(extracted, tmp_path):
    _, _, packets_csv = extracted
    packets = csvio.read_table(packets_csv, PACKETS)
    for unit, check in (
        ("uniflow", lambda t: (t["uid"].str.contains("#u")).all()),
        ("burst", lambda t: t["uid"].str.contains("/").all()),
        ("window", lambda t: (t["orig_h"] == PLUG_IP).all()),
    ):
        result = run_script(
            "feature-extractor.py",
            packets_csv,
            "--unit",
            unit,
            "--interval",
            "10",
            "--device-ip",
            PLUG_IP,
            "--min-packets",
            "1",
            "--features",
            "STATS",
            "-o",
            tmp_path / unit,
        )
        table = pd.read_parquet(tmp_path / unit / "features.parquet")
        assert check(table), (unit, table.head())
        assert f"{unit}(s)" in result.stdout
        if unit != "window":  # every packet in one unit
            assert table["packets"].sum() == len(packets)
        else:
            mine = (packets["ip_src"] == PLUG_IP) | (packets["ip_dst"] == PLUG_IP)
            assert table["packets"].sum() == mine.sum()
            assert (table["duration"] < 10).all()


def test_events_label_the_units_in_their_window_and_a_list_that_labels_none_is_said(
    extracted, tmp_path
):
    _, out, packets_csv = extracted
    flows_csv = csvio.read_table(out / "flows" / f"{CAPTURE.name}.flows.csv", FLOWS)
    first = float(flows_csv["ts"].min())
    times = tmp_path / "times.csv"
    times.write_text(f"time,event\n{first:.3f},toggle\n")
    result = run_script(
        "feature-extractor.py", packets_csv, "--events", times, "-o", tmp_path / "a"
    )
    table = pd.read_parquet(tmp_path / "a" / "features.parquet")
    assert set(table["label"]) <= {"toggle", "idle"} and (table["label"] == "toggle").any()
    assert "toggle" in result.stdout
    # a window unit (600 s from the device's first packet) overlaps the listed time's window
    times.write_text(f"time,event\n{first + 5:.3f},toggle\n")
    run_script(
        "feature-extractor.py", packets_csv, "--unit", "window", "--device-ip", PLUG_IP,
        "--features", "STATS", "--events", times, "-o", tmp_path / "w",
    )  # fmt: skip
    assert set(pd.read_parquet(tmp_path / "w" / "features.parquet")["label"]) == {"toggle"}
    far = tmp_path / "far.csv"
    far.write_text("time,event\n1000000000,toggle\n")
    result = run_script("feature-extractor.py", packets_csv, "--events", far, "-o", tmp_path / "b")
    assert result.stderr.strip() == (
        f"feature-extractor.py: warning: {far}: no unit falls in any listed event's window: "
        "every unit is idle"
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--features", "IAT,BOGUS"], "unknown feature type BOGUS"),
        (["--length", "0"], "must be 1 or more"),
        (["--unit", "session"], "invalid choice: 'session'"),
    ],
)
def test_bad_options_are_one_line_usage_errors(arguments, message, tmp_path):
    result = run_script("feature-extractor.py", CAPTURE, *arguments, "-o", tmp_path, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("feature-extractor.py: error: ") and message in result.stderr
    assert not (tmp_path / "features.csv").exists()


def test_a_file_that_is_neither_capture_nor_packets_csv_is_one_error_line(tmp_path):
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n")
    result = run_script("feature-extractor.py", other, "-o", tmp_path / "o", check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and f"{other}: " in result.stderr


def test_parse_features_names_every_type():
    assert features.parse_features("iat_size, stats") == ("IAT_SIZE", "STATS")
    with pytest.raises(ValueError, match="known: IAT, SIZE, IAT_SIZE, STATS"):
        features.parse_features("FFT")


@pytest.mark.slow
def test_uniflow_features_equal_netmls(tmp_path):
    """tests/bench/netml_check.py on the repo's captures and one event recording of each
    shared device: netml 0.7.1 in a venv of its own (made once, tests/.bench/netml-venv)."""
    shared = sorted((REPO.parent / "shared" / "pcaps" / "events").glob("*/*"))
    captures = [*TPLINK_CAPTURES, *(sorted(d.glob("*.pcap"))[0] for d in shared)]
    result = subprocess.run(
        [sys.executable, REPO / "tests" / "bench" / "netml_check.py", *captures],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "netml_check: the same" in result.stdout
    assert "0 flow(s) only netml keeps, 0 only ours" in result.stdout


@pytest.mark.slow
def test_signature_labels_name_the_event_whose_pattern_a_flow_matches(plug_toggle, tmp_path):
    output, _ = plug_toggle
    signature = output / "signature.csv"
    packets_csv = sorted(output.glob("*.packets.csv"))[0]
    run_script("feature-extractor.py", packets_csv, "--signature", signature, "-o", tmp_path)
    table = pd.read_parquet(tmp_path / "features.parquet")
    assert (table["label"] == "toggle").any() and (table["label"] == "idle").any()
