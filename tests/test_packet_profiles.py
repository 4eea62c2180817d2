"""Packet profiles (issue 13): events that share every flow are told apart by their packets,
and detection does not need DNS. Real captures from ../shared/pcaps/events (skipped with a
reason where ../shared is absent), run through the real scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from iotsig import csvio, signature
from iotsig.schema import DETECTIONS, FLOWS, SIGNATURE

from conftest import CAPTURES, SHARED, run_script

EVENTS = SHARED / "pcaps" / "events"
BULB_IP = "192.168.1.231"  # TapoLight in ../shared/pcaps/events/devices.yaml
PLUG_IP = "192.168.1.135"


def _recordings(device: str, event: str) -> list:
    folder = EVENTS / device / event
    if not folder.is_dir():
        pytest.skip(f"{folder} not found: ../shared/pcaps/events is needed beside the repo")
    return sorted(folder.glob("*.pcap"))


def _detected(output_dir) -> list[tuple[str, str]]:
    found = csvio.read_table(output_dir / "detections.csv", DETECTIONS)
    found = found[found["status"] == "detected"]
    return sorted(zip(found["capture"], found["event"]))


# --- the flows CSV ----------------------------------------------------------------------


def test_payload_sizes_are_the_first_payload_packets_signed_and_deduplicated():
    flows = signature.payload_matrix(pd.Series(["345 -194 265 -787", "", "81 -145", "x 1"]))
    assert flows.shape == (4, signature.PROFILE_WINDOW)
    assert flows[0, :4].tolist() == [345, -194, 265, -787]
    assert np.isnan(flows[1]).all() and np.isnan(flows[3]).all()  # (not a number: no sizes)
    assert flows[2, :2].tolist() == [81, -145] and np.isnan(flows[2, 2:]).all()


@pytest.mark.slow  # main.py twice on the bulb's recordings
def test_the_flows_csv_shows_the_request_that_tells_two_bulb_actions_apart(tmp_path):
    """The phone's HTTP request to the bulb is 345 bytes for set_color and 281 for toggle,
    in every recording; each packet is captured twice (it counts once)."""
    for event, request in (("set_color", 345), ("toggle", 281)):
        capture = _recordings("TapoLight", event)[0]
        run_script(
            "main.py", "TapoLight", BULB_IP, capture, "-o", tmp_path / event, "-q", "--no-report"
        )
        flows = csvio.read_table(tmp_path / event / f"{capture.name}.flows.csv", FLOWS)
        http = flows[(flows["http_request_method"] == "POST") & (flows["resp_h"] == BULB_IP)]
        assert len(http) == 1
        sizes = http["first_payload_sizes"].iat[0].split()
        assert sizes[:2] == [str(request), "-194"], sizes  # not "281 281 -194 -194"


# --- learning ---------------------------------------------------------------------------


def _main(event: str, recordings: list, out, *options) -> None:
    """main.py on the bulb's recordings of one event."""
    run_script(
        "main.py",
        "TapoLight",
        BULB_IP,
        *recordings,
        "--event",
        event,
        "-o",
        out,
        "-q",
        "--no-report",
        *options,
    )


def _learn(event: str, train: list, others: list, out, *extra) -> pd.DataFrame:
    _main(event, train, out, "--idle", *others, *extra)
    return csvio.read_table(out / "signature.csv", SIGNATURE)


@pytest.mark.slow
def test_same_flow_events_get_patterns_made_of_the_packets_that_differ(tmp_path):
    """toggle against set_color as baseline (same HTTP flow, phone to bulb): before packet
    profiles every flow was background and toggle had no event pattern."""
    toggles = _recordings("TapoLight", "toggle")[:6]
    colours = _recordings("TapoLight", "set_color")[:10]
    learned = _learn("toggle", toggles, colours, tmp_path / "toggle")
    events = learned[learned["role"] == "event"]
    http = events[events["http_request_method"] == "POST"]
    assert len(http) == 1, learned[["pattern", "role", "packet_profile"]]
    profile = signature.parse_profile(http["packet_profile"].iat[0])
    assert (281.0, 281.0) in profile and (345.0, 345.0) not in profile
    text = (tmp_path / "toggle" / "pattern.txt").read_text()
    assert "packet profile (first packets with payload, frame bytes): remote party 281" in text


@pytest.mark.slow
def test_the_detector_tells_same_flow_events_apart(tmp_path):
    """Signatures learned without any baseline (what a user of main.py alone has) still
    do not take a set_color for a toggle, nor the reverse."""
    toggles, colours = _recordings("TapoLight", "toggle"), _recordings("TapoLight", "set_color")
    local = [c for c in colours if _has_local_request(c)]
    signatures = {}
    for event, recordings in (("toggle", toggles[:5]), ("set_color", local[:5])):
        _main(event, recordings, tmp_path / event)
        signatures[event] = tmp_path / event / "signature.csv"
    held_out = [toggles[6], local[6]]
    run_script("event-detector.py", *signatures.values(), *held_out, "-o", tmp_path / "d", "-q")
    assert _detected(tmp_path / "d") == sorted(
        [(toggles[6].name, "toggle"), (local[6].name, "set_color")]
    )


def _has_local_request(capture) -> bool:
    """set_color goes through the phone's HTTP request to the bulb in some recordings and
    through the cloud in others."""
    out = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(capture),
            "-Y",
            f"http.request and ip.dst=={BULB_IP}",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return bool(out.stdout.strip())


# --- detection without DNS ----------------------------------------------------------------


def _without_dns(capture, folder):
    editcap_less = folder / capture.name
    subprocess.run(
        [
            shutil.which("tshark") or "tshark",
            "-n",
            "-r",
            str(capture),
            "-Y",
            "not dns",
            "-w",
            str(editcap_less),
        ],
        check=True,
        capture_output=True,
    )
    return editcap_less


def test_an_event_is_found_in_a_capture_without_any_dns(tmp_path, plug_signatures):
    """A device with cached addresses sends no DNS query: the packet profiles and the
    addresses learned in training still find the toggle and the boot."""
    toggles = sorted((CAPTURES / "events" / "TpLinkPlug" / "toggle").glob("*.pcap"))
    boots = sorted((CAPTURES / "events" / "TpLinkPlug" / "boot").glob("*.pcap"))
    # plug_signatures: main.py learned each from toggles[:3] or boots[:3], the other three
    # as --idle (once per session, shared with test_event_detector.py).
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    held_out = [_without_dns(c, stripped) for c in (toggles[3], boots[3])]
    run_script(
        "event-detector.py",
        plug_signatures["toggle"],
        plug_signatures["boot"],
        *held_out,
        "-o",
        tmp_path / "d",
        "-q",
    )
    assert _detected(tmp_path / "d") == sorted(
        [(held_out[0].name, "toggle"), (held_out[1].name, "boot")]
    )
    found = csvio.read_table(tmp_path / "d" / "detections.csv", DETECTIONS)
    assert not found["missing_patterns"].fillna("").str.contains("dns-").any()


# --- routes ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_event_with_two_routes_gets_a_variant_per_route(tmp_path):
    """The bulb's set_color goes from the phone straight to the bulb (HTTP) in some
    recordings and through the cloud in others: nothing recurs in all of them that toggle
    lacks. Each route becomes a variant of the signature, and each is detected."""
    colours = _recordings("TapoLight", "set_color")
    local = [c for c in colours if _has_local_request(c)]
    cloud = [c for c in colours if c not in local]
    train = local[:4] + cloud[:3]
    toggles = _recordings("TapoLight", "toggle")[:6]
    learned = _learn("set_color", train, toggles, tmp_path / "learn")
    events = learned[learned["role"] == "event"]
    assert sorted(set(events["variant"])) == [1, 2], events[["pattern", "variant"]]
    profile = yaml.safe_load((tmp_path / "learn" / "profile.yaml").read_text())
    assert list(profile["interactions"]) == ["set_color", "set_color-variant-2"]
    assert "the event took 2 routes" in (tmp_path / "learn" / "pattern.txt").read_text()
    held_out = [local[5], cloud[4], toggles[0].parent / _recordings("TapoLight", "toggle")[8].name]
    run_script(
        "event-detector.py",
        tmp_path / "learn" / "signature.csv",
        *held_out,
        "-o",
        tmp_path / "d",
        "-q",
    )
    assert _detected(tmp_path / "d") == sorted(
        [(local[5].name, "set_color"), (cloud[4].name, "set_color")]
    )


@pytest.mark.slow
def test_routes_are_found_without_a_baseline_only_where_flows_and_packets_agree(tmp_path):
    """Without a baseline (main.py alone), set_color's two routes are still told apart:
    the phone's HTTP request is in every direct recording and in no cloud one, the cloud's
    command in every cloud recording and in no direct one. A toggle, whose recordings all
    take one route, stays one signature."""
    colours = _recordings("TapoLight", "set_color")
    local = [c for c in colours if _has_local_request(c)]
    cloud = [c for c in colours if c not in local]
    toggles = _recordings("TapoLight", "toggle")
    for event, recordings in (("set_color", local[:4] + cloud[:4]), ("toggle", toggles[:8])):
        _main(event, recordings, tmp_path / event)
    colour = csvio.read_table(tmp_path / "set_color" / "signature.csv", SIGNATURE)
    assert sorted(set(colour["variant"])) == [1, 2]
    toggle = csvio.read_table(tmp_path / "toggle" / "signature.csv", SIGNATURE)
    assert set(toggle["variant"]) == {1}
    held_out = [local[5], cloud[5], toggles[9]]
    run_script(
        "event-detector.py",
        tmp_path / "set_color" / "signature.csv",
        tmp_path / "toggle" / "signature.csv",
        *held_out,
        "-o",
        tmp_path / "d",
        "-q",
    )
    assert _detected(tmp_path / "d") == sorted(
        [(local[5].name, "set_color"), (cloud[5].name, "set_color"), (toggles[9].name, "toggle")]
    )


@pytest.mark.slow
def test_a_profile_is_the_same_whatever_the_hash_seed():
    """Two packet sizes whose median positions tie are ordered by item, not by the order of
    a set of strings (which changes with PYTHONHASHSEED: two evaluate runs once wrote
    different pattern.txt files)."""
    program = (
        "import numpy as np, pandas as pd\n"
        "from iotsig import signature as sig\n"
        "sizes = sig.payload_matrix(pd.Series(['720 -87', '-87 720', '720 -87', '-87 720']))\n"
        "keys, profiles = sig.profile_patterns(np.zeros(4, int), np.arange(4), sizes, 4)\n"
        "print([sig.profile_text(p) for p in profiles.values()])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in range(8)
    }
    assert len(outputs) == 1, outputs


def test_an_idle_connection_seen_in_every_recording_is_not_the_event(tmp_path):
    """Without a baseline: the Hue bridge's connection to a cloud address, open before each
    recording (no SYN), one packet each way and no recurring payload, shows in the first six
    set_color recordings (and in only 16 of the 20): background, not a pattern the event
    needs. Its connections that carry packets that recur stay event patterns."""
    recordings = _recordings("HueLightEssentials", "set_color")[:6]
    run_script(
        "main.py", "HueLightEssentials", "192.168.1.141", *recordings, "--event", "set_color",
        "-o", tmp_path, "-q", "--no-report",
    )  # fmt: skip
    learned = csvio.read_table(tmp_path / "signature.csv", SIGNATURE)
    idle = learned[learned["remote"] == "35.204.228.58"]
    assert len(idle) and set(idle["role"]) == {"background (inferred)"}, learned[
        ["pattern", "role"]
    ]
    events = learned[learned["role"] == "event"]
    assert len(events) >= 2 and (events["packet_profile"] != "").all()
