"""Events inside long-lived connections: the bursts CSV, keep-alives, burst patterns
learned from a long capture and its event log, detection under delay and jitter, two
events told apart by the device's reply (or refused in one line where nothing tells
them apart), and one name per party. On made captures of a device that keeps one TCP
connection to its cloud open all day (tests/made_connection.py: text2pcap), and on the
real week of a Wi-Fi lock in ../shared (skipped where it is absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import made_connection as made

from conftest import SHARED, run_script

pytestmark = pytest.mark.skipif(
    not (shutil.which("text2pcap") and shutil.which("editcap")),
    reason="text2pcap and editcap (Wireshark's) are not installed",
)


HOURS, EVENTS = 10.0, 24  # a day's morning: 12 commands to learn from, 12 to find


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """A day's half of each: the clean capture, and the same events 0.5-2 s late."""
    folder = tmp_path_factory.mktemp("connection")
    clean = made.make(folder, HOURS, EVENTS, name="clean")
    jittered = made.make(folder, HOURS, EVENTS, jitter=True, name="jittered")
    alike = made.make(folder, HOURS, EVENTS, same_reply=True, name="alike")
    parts = {
        "clean": made.halves(clean, _mkdir(folder / "clean-halves")),
        "jittered": made.halves(clean, _mkdir(folder / "jittered-halves"), jittered),
        "alike": made.halves(alike, _mkdir(folder / "alike-halves")),
    }
    return clean, parts


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def relabelled(log: Path, folder: Path) -> Path:
    """The log with lock and unlock as one event, 'action'."""
    times = pd.read_csv(log, dtype=str)
    times["event"] = "action"
    path = folder / f"action-{log.name}"
    times.to_csv(path, index=False)
    return path


def scored(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "scored-events.csv", dtype=str, keep_default_na=False)


def test_bursts_csv_marks_the_keepalives_and_names_the_party(captures, tmp_path):
    clean, _ = captures
    run_script("main.py", "lock", made.DEVICE, clean.pcap, "-o", tmp_path, "--no-report", "-q")
    flows = pd.read_csv(tmp_path / "clean.pcap.flows.csv")
    bursts = pd.read_csv(tmp_path / "clean.pcap.bursts.csv")
    link = bursts[bursts["resp_p"] == made.CLOUD_PORT]
    # One row per burst, each naming its flow; a flow's bursts are numbered from 1.
    assert set(link["flow_uid"]) <= set(flows["uid"])
    assert (link["uid"] == link["flow_uid"] + "/" + link["burst"].astype(str)).all()
    # Only the connection's very first burst opens it (its SYN); the rest are inside it.
    assert link.sort_values("ts")["opens"].tolist() == [1] + [0] * (len(link) - 1)
    # The pings every minute are keep-alives, with the period they have; no command is.
    pings = link["first_payload_sizes"] == "85 -85"
    commands = link["first_payload_sizes"].astype(str).str.contains("267")
    assert pings.sum() > HOURS * 55 and link.loc[pings, "keepalive"].mean() > 0.99
    assert link.loc[pings & (link["keepalive"] == 1), "period"].between(59, 61).all()
    assert commands.sum() == len(clean.events)
    assert (link.loc[commands, "keepalive"] == 0).all()
    # One party, one name: the DNS answer came 100 s after the connection opened.
    assert set(flows.loc[flows["resp_p"] == made.CLOUD_PORT, "remote_name"]) == {made.CLOUD_NAME}
    assert set(link["remote_name"]) == {made.CLOUD_NAME}


@pytest.mark.parametrize("kind", ["clean", pytest.param("jittered", marks=pytest.mark.slow)])
def test_a_command_inside_an_open_connection_is_learned_and_found(captures, kind, tmp_path):
    """Learned from the first half of the log (the clean capture), found in the second
    half (clean, or every cloud packet 0.5-2 s late): the keep-alives never count."""
    _, parts = captures
    first, first_log = parts["clean"]["first"]
    second, second_log = parts[kind]["second"]
    learn = tmp_path / "learn"
    run_script(
        "main.py",
        "lock",
        made.DEVICE,
        first,
        "--events",
        relabelled(first_log, tmp_path),
        "-o",
        learn,
        "--no-report",
        "-q",
    )
    signature = pd.read_csv(learn / "signature.csv", dtype=str, keep_default_na=False)
    events = signature[signature["role"] == "event"]
    assert events["unit"].tolist() == ["burst"]
    assert events["remote"].tolist() == [made.CLOUD_NAME]
    assert signature["burst_gap"].astype(float).tolist() == [1.0]
    assert "a burst of messages inside a connection" in (learn / "pattern.txt").read_text()
    detect = tmp_path / "detect"
    run_script(
        "event-detector.py",
        learn / "signature.csv",
        second,
        "--events",
        relabelled(second_log, tmp_path),
        "-o",
        detect,
        "-q",
    )
    statuses = scored(detect)["status"].value_counts().to_dict()
    assert statuses == {"found": EVENTS // 2}, statuses


@pytest.mark.slow  # (the quick tier keeps the clean capture's learning)
def test_lock_and_unlock_are_told_apart_by_the_reply(captures, tmp_path):
    _, parts = captures
    first, first_log = parts["clean"]["first"]
    second, second_log = parts["jittered"]["second"]
    signatures = []
    for event in ("lock", "unlock"):
        out = tmp_path / event
        run_script(
            "main.py",
            "lock",
            made.DEVICE,
            first,
            "--events",
            first_log,
            "--event",
            event,
            "-o",
            out,
            "--no-report",
            "-q",
        )
        signatures.append(out / "signature.csv")
    profiles = [pd.read_csv(s, dtype=str)["packet_profile"].tolist() for s in signatures]
    assert profiles == [["-267 174 114 -94"], ["-267 194 114 -94"]]
    detect = tmp_path / "detect"
    run_script("event-detector.py", *signatures, second, "--events", second_log, "-o", detect, "-q")
    table = scored(detect)
    assert (table["status"] == "found").sum() == EVENTS // 2, table["status"].value_counts()
    assert not (table["status"] == "false").any()


@pytest.mark.slow  # (the quick tier keeps the clean capture's learning)
def test_lock_and_unlock_told_apart_in_most_actions_only(tmp_path):
    """Every fifth command gets a reply that is neither lock's nor unlock's: nothing that
    the other event lacks is in every window, so each is learned from what most of its
    windows hold (said in a warning), and found where its reply tells it."""
    mixed = made.make(tmp_path, name="mixed", other_reply_every=5, events=60, hours=24)
    parts = made.halves(mixed, _mkdir(tmp_path / "halves"))
    first, first_log = parts["first"]
    second, second_log = parts["second"]
    signatures = []
    for event in ("lock", "unlock"):
        out = tmp_path / event
        result = run_script(
            "main.py", "lock", made.DEVICE, first, "--events", first_log, "--event", event,
            "-o", out, "--no-report",
        )  # fmt: skip
        signatures.append(out / "signature.csv")
        if event == "lock":
            assert "learned from what recurs in at least 0.5 of them" in result.stderr
    detect = tmp_path / "detect"
    run_script("event-detector.py", *signatures, second, "--events", second_log, "-o", detect, "-q")
    table = scored(detect)
    for event in ("lock", "unlock"):
        mine = table[table["event"] == event]
        listed = mine["status"].isin(["found", "missed"]).sum()
        assert listed == 15, mine["status"].value_counts()
        assert (mine["status"] == "found").sum() / listed >= 0.8, (event, mine["status"])
        assert (mine["status"] == "false").sum() == 0, (event, mine["status"])


@pytest.mark.slow  # (learns twice: 3.4 s)
def test_events_nothing_tells_apart_are_refused_in_one_line(captures, tmp_path):
    """The device answers lock and unlock alike: learning lock says so, naming both
    events and what they share, and leaves the windows for a person to look at."""
    _, parts = captures
    first, first_log = parts["alike"]["first"]
    out = tmp_path / "lock"
    result = run_script(
        "main.py",
        "lock",
        made.DEVICE,
        first,
        "--events",
        first_log,
        "--event",
        "lock",
        "-o",
        out,
        "--no-report",
        "-q",
        check=False,
    )
    assert result.returncode == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("main.py: error: lock cannot be told from unlock: ")
    assert f"a burst in tcp/8883 with {made.CLOUD_NAME} sizes -267 174 114 -94" in message
    assert "check the times" not in message
    index = pd.read_csv(out / "windows" / "windows.csv", dtype=str, keep_default_na=False)
    assert len(index[index["kind"] == "event"]) == EVENTS // 4  # the locks of the first half
    assert index.loc[index["kind"] == "event", "status"].str.startswith("not learned").all()
    assert all((out / "windows" / name).is_file() for name in index["flows_csv"])


@pytest.mark.slow  # (the quick tier keeps the clean capture's learning)
def test_the_detector_builds_flows_as_the_signature_was_learned(captures, tmp_path):
    _, parts = captures
    first, first_log = parts["clean"]["first"]
    second, second_log = parts["clean"]["second"]
    learn = tmp_path / "learn"
    log = relabelled(first_log, tmp_path)
    run_script(
        "main.py", "lock", made.DEVICE, first, "--events", log, "--burst-gap", "0.8",
        "-o", learn, "--no-report", "-q",
    )  # fmt: skip
    result = run_script(
        "event-detector.py", learn / "signature.csv", second, "-o", tmp_path / "detect"
    )
    assert "building flows as the signatures were learned: --burst-gap 0.8" in result.stdout
    told = run_script(
        "event-detector.py", learn / "signature.csv", second, "--burst-gap", "1",
        "-o", tmp_path / "told",
    )  # fmt: skip
    assert "building flows as the signatures were learned" not in told.stdout


# --- the real week of a Wi-Fi lock (../shared/pcaps/long) ------------------------------

LOCK = SHARED / "pcaps" / "long" / "schlage-lock-01.pcap"
LOCK_LOG = SHARED / "pcaps" / "long" / "schlage-lock-01.android-events.csv"
LOCK_IP = "192.168.1.122"
READING = ["--event-column", "3", "--device-column", "2", "--timezone", "America/New_York"]


@pytest.fixture(scope="module")
def lock_halves(tmp_path_factory):
    """The capture and its log cut at the middle of the log's actions (18 before, 18
    after), lock and unlock relabelled 'action' in one copy of each half."""
    if not (LOCK.is_file() and LOCK_LOG.is_file()):
        pytest.skip(f"{LOCK} is absent (the shared captures beside the repository)")
    import subprocess

    folder = tmp_path_factory.mktemp("lock")
    log = pd.read_csv(LOCK_LOG, header=None, names=["time", "device", "event"], dtype=str)
    when = pd.to_datetime(log["time"], format="%B %d, %Y at %I:%M:%S%p")
    log["utc"] = when.dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    log = log.sort_values("utc", kind="stable")
    actions = log[log["event"] != "event_batt"]["utc"]
    middle = actions.iloc[17] + (actions.iloc[18] - actions.iloc[17]) / 2
    parts = {}
    for part, flag in (("first", "-B"), ("second", "-A")):
        pcap = folder / f"{part}.pcap"
        stamp = middle.strftime("%Y-%m-%d %H:%M:%S")
        subprocess.run(["editcap", flag, stamp, LOCK, pcap], check=True, env={"TZ": "UTC"})
        rows = log[(log["utc"] < middle) == (part == "first")]
        apart = folder / f"{part}.csv"
        rows[["time", "device", "event"]].to_csv(apart, header=False, index=False)
        action = folder / f"{part}-action.csv"
        rows.assign(
            event=rows["event"].replace({"event_lock": "action", "event_unlock": "action"})
        )[["time", "device", "event"]].to_csv(action, header=False, index=False)
        parts[part] = (pcap, apart, action)
    return parts


@pytest.mark.slow
def test_the_lock_s_actions_inside_its_cloud_connection(lock_halves, tmp_path):
    """Lock and unlock as one event: learned from the first half of the log, every action
    of the second half found, and no other detection in its two days (the hourly status
    report, the same sizes as an action's, is a keep-alive)."""
    (first, _, first_log), (second, _, second_log) = lock_halves["first"], lock_halves["second"]
    learn = tmp_path / "learn"
    run_script(
        "main.py", "lock", LOCK_IP, first, "--events", first_log, "--event", "action",
        *READING, "-o", learn, "--no-report", "-q",
    )  # fmt: skip
    signature = pd.read_csv(learn / "signature.csv", dtype=str, keep_default_na=False)
    assert signature.loc[signature["role"] == "event", "unit"].tolist() == ["burst"]
    detect = tmp_path / "detect"
    result = run_script(
        "event-detector.py", learn / "signature.csv", second, "--events", second_log,
        *READING, "-o", detect,
    )  # fmt: skip
    table = scored(detect)
    actions = table[table["event"] == "action"]
    assert (actions["status"] == "found").sum() == 18, actions["status"].value_counts()
    assert not (table["status"] == "false").any()
    assert "action: 18 of 18 listed event(s) found (recall 1.00)" in result.stdout


@pytest.mark.slow
def test_the_lock_s_lock_and_unlock_apart_are_refused_in_one_line(lock_halves, tmp_path):
    """In this capture a lock and an unlock are the same exchange: learning one of them
    says so rather than 'check the times'."""
    first, first_log, _ = lock_halves["first"]
    result = run_script(
        "main.py", "lock", LOCK_IP, first, "--events", first_log, "--event", "event_lock",
        *READING, "-o", tmp_path, "--no-report", "-q", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(
        "main.py: error: event_lock cannot be told from event_unlock: what recurs around "
        "its listed times (a burst in tcp/8883 with "
    ), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
