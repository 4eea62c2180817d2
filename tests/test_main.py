"""main.py end to end on the three TP-Link captures in data/, as a user runs it: the event's
patterns, what is background and what is left out, the intermediate CSVs, profile.yaml for
the firewall (checked, and compared with the hand-written profile of the same plug)."""

from __future__ import annotations

import re
import subprocess
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from iotsig import csvio
from iotsig.commands.main import Main
from iotsig.schema import FLOWS, PACKETS
from iotsig.signature import read_signature_csv
from iotsig.tshark import tshark_path

from conftest import (
    CAPTURES,
    GATEWAY_IP,
    PHONE_IP,
    PLUG_IP,
    PLUG_MAC,
    TPLINK_CAPTURES,
    quick_first,
    run_script,
)
from signature_checks import (
    C_NAME,
    DOMAIN,
    NO_BASELINE,
    assert_clean_run,
    assert_no_outputs,
    background_section,
    block_names,
    load_handwritten,
    load_profile,
    policy_names,
    sections,
)


def _main(output_dir, *options, captures=TPLINK_CAPTURES, check=True):
    result = run_script(
        "main.py", "TpLinkPlug", PLUG_IP, *captures, "-o", output_dir, *options, check=check
    )
    return SimpleNamespace(
        result=result,
        dir=output_dir,
        text=(output_dir / "pattern.txt").read_text()
        if (output_dir / "pattern.txt").exists()
        else "",
    )


@pytest.fixture(scope="module")
def toggle(plug_toggle):
    """main.py TpLinkPlug 192.168.1.135 data/*.pcap --event toggle, no baseline (conftest's
    plug_toggle, run once per session)."""
    output, result = plug_toggle
    run = SimpleNamespace(result=result, dir=output, text=(output / "pattern.txt").read_text())
    run.signature = read_signature_csv(run.dir / "signature.csv")
    run.profile = load_profile(run.dir / "profile.yaml")
    return run


@pytest.fixture(scope="module")
def with_idle(tmp_path_factory):
    """The same with --idle: a capture of the plug without the event, made of one
    recording's own UDP/9999 and ARP frames (what the plug does while the app is open)."""
    base = tmp_path_factory.mktemp("idle")
    idle = base / "idle.pcap"
    subprocess.run(
        [tshark_path(), "-r", TPLINK_CAPTURES[2], "-Y", "udp.port == 9999 or arp", "-w", idle],
        check=True,
        capture_output=True,
    )
    run = _main(base / "out", "--idle", idle, "--event", "toggle")
    run.signature = read_signature_csv(run.dir / "signature.csv")
    run.profile = load_profile(run.dir / "profile.yaml")
    return run


def _events(signature: pd.DataFrame) -> pd.DataFrame:
    return signature[signature["role"] == "event"].sort_values("order").reset_index(drop=True)


def _flows(run) -> dict[str, pd.DataFrame]:
    return {
        c.name: csvio.read_table(run.dir / f"{c.name}.flows.csv", FLOWS) for c in TPLINK_CAPTURES
    }


# --- the event ---------------------------------------------------------------------------


def test_the_event_is_phone_tcp_9999_then_dns_then_tls_443_in_that_order(toggle):
    events = _events(toggle.signature)
    assert len(events) == 3
    tcp, dns, tls = events.itertuples()

    # 1. The phone's app opens TCP/9999 on the plug.
    assert (tcp.proto, tcp.server_port, tcp.device_side) == ("tcp", 9999, "resp")
    assert (tcp.remote, tcp.remote_kind, tcp.remote_class) == (PHONE_IP, "address", "local")
    # 2. The plug asks the gateway for use1-api.tplinkra.com (A).
    assert (dns.proto, dns.server_port, dns.device_side) == ("udp", 53, "orig")
    assert (dns.remote, dns.remote_kind, dns.remote_addrs) == ("gateway", "class", GATEWAY_IP)
    assert (dns.dns_qry_name, dns.dns_qry_type) == (DOMAIN, "A")
    # 3. The plug opens TLS/443 to that name: a different address in each recording, one
    # pattern all the same because the fingerprint keeps the name.
    assert (tls.proto, tls.server_port, tls.device_side) == ("tcp", 443, "orig")
    assert (tls.remote, tls.remote_kind, tls.tls_server_name) == (DOMAIN, "domain", DOMAIN)
    addresses = tls.remote_addrs.split(";")
    assert len(addresses) == len(set(addresses)) == 3

    assert list(events["order"]) == [1, 2, 3]
    assert list(events["recordings_seen"]) == [3, 3, 3]
    assert list(events["recordings_total"]) == [3, 3, 3]
    assert events["start_offset_median"].is_monotonic_increasing
    assert events["start_offset_median"].iloc[0] == 0
    assert set(events["event"]) == {"toggle"}

    # pattern.txt tells the same, in the same order.
    section = sections(toggle.text)["Event"]
    assert section.startswith("Event patterns, in event order (3)")
    assert block_names(section) == list(events["pattern"])
    assert section.count("seen in 3/3 recordings") == 3
    assert f"{PHONE_IP} (local)  ->  device {PLUG_IP}" in section
    assert "TCP port 9999 (served by the device)" in section
    assert f"device {PLUG_IP}  ->  gateway ({GATEWAY_IP})" in section
    assert f"DNS query {DOMAIN}, type A" in section
    assert f"device {PLUG_IP}  ->  {DOMAIN} ({', '.join(sorted(addresses))})" in section
    assert "TCP port 443 (served by the remote party)" in section


def test_the_tls_server_has_a_different_address_in_each_recording(toggle):
    """What makes the name, not the address, the right fingerprint for the third pattern."""
    servers = {
        name: set(flows.loc[flows["resp_p"] == 443, "resp_h"])
        for name, flows in _flows(toggle).items()
    }
    assert all(len(s) == 1 for s in servers.values())
    assert len(set.union(*servers.values())) == 3
    tls = _events(toggle.signature).iloc[2]
    assert set(tls["remote_addrs"].split(";")) == set.union(*servers.values())


def test_the_plugs_udp_9999_replies_are_background_not_event(toggle):
    udp = toggle.signature[
        (toggle.signature["proto"] == "udp") & (toggle.signature["server_port"] == 9999)
    ]
    assert len(udp) == 1
    assert udp.iloc[0]["role"] == "background (inferred)"
    assert (udp.iloc[0]["device_side"], udp.iloc[0]["remote"]) == ("orig", PHONE_IP)
    assert udp.iloc[0]["recordings_seen"] == 3
    assert udp.iloc[0]["flows_min"] >= 2  # several flows in every recording: not one event

    name = udp.iloc[0]["pattern"]
    assert name not in block_names(sections(toggle.text)["Event"])
    assert block_names(background_section(toggle.text)) == [name]
    assert "UDP port 9999 (served by the device)" in background_section(toggle.text)
    # Not part of the event's interaction; allowed on its own.
    assert name in toggle.profile["single-policies"]
    assert name not in toggle.profile["interactions"]["toggle"]


def test_without_a_baseline_pattern_txt_says_background_could_not_be_told_apart(toggle):
    header = sections(toggle.text)[""]
    assert NO_BASELINE in header
    assert "--baseline" in header and "--idle" in header
    assert background_section(toggle.text).startswith("Likely background patterns")


def test_arp_and_icmp_seen_in_some_recordings_only_are_left_out_with_counts(toggle):
    # The data: ARP (phone and gateway asking for the plug) in 2 of the 3 recordings,
    # ICMP (port unreachable from the phone) in 1.
    flows = _flows(toggle)
    assert sum((f["proto"] == "arp").any() for f in flows.values()) == 2
    assert sum((f["proto"] == "icmp").any() for f in flows.values()) == 1

    assert not toggle.signature["proto"].isin(["arp", "icmp"]).any()
    left_out = sections(toggle.text)["Left"]
    assert left_out.startswith("Left out: seen in too few recordings (3 fingerprints)")
    lines = [line for line in left_out.splitlines() if line.startswith("- ")]
    assert len(lines) == 3
    assert re.search(
        r"^- ARP -> device from local \[ARP .*\]: in 2/3 recordings \(2 flows\)$", left_out, re.M
    )
    assert re.search(
        r"^- ARP -> device from gateway \[ARP .*\]: in 2/3 recordings \(2 flows\)$", left_out, re.M
    )
    assert re.search(
        r"^- ICMP -> device from local \[ICMP type 3\]: in 1/3 recordings \(1 flow\)$",
        left_out,
        re.M,
    )
    for profile_text in (toggle.dir / "profile.yaml").read_text().splitlines():
        assert "arp" not in profile_text and "icmp" not in profile_text


def test_every_intermediate_csv_is_in_the_output_dir(toggle):
    for capture in TPLINK_CAPTURES:
        packets = csvio.read_table(toggle.dir / f"{capture.name}.packets.csv", PACKETS)
        flows = csvio.read_table(toggle.dir / f"{capture.name}.flows.csv", FLOWS)
        assert set(packets["capture"]) == {capture.name}
        assert list(packets["frame_number"]) == list(range(1, len(packets) + 1))
        assert set(flows["capture"]) == {capture.name}
        assert flows["orig_pkts"].sum() + flows["resp_pkts"].sum() == len(packets)
    expected = {
        f"{c.name}.{kind}.csv" for c in TPLINK_CAPTURES for kind in ("packets", "flows", "bursts")
    }
    assert {p.name for p in toggle.dir.iterdir()} == expected | {
        "pattern.txt",
        "profile.yaml",
        "signature.csv",
        "inventory.csv",
        "endpoint-map.png",
        "endpoint-map.svg",
        "timeline.png",
        "report.html",
    }


def test_progress_and_closing_summary_are_printed(toggle):
    out = toggle.result.stdout
    assert_clean_run(toggle.result, toggle.dir)
    assert toggle.result.stderr == ""  # no warning on good input
    for capture in TPLINK_CAPTURES:
        assert f"{capture.name}.packets.csv" in out and f"{capture.name}.flows.csv" in out
    assert (
        "signature-extractor: 3 event pattern(s), 1 background, 3 fingerprint(s) left "
        "out as noise, from 3 recording(s)"
    ) in out
    assert re.fullmatch(
        rf"main: done in \d+\.\d s; every intermediate CSV is in "
        rf"{re.escape(str(toggle.dir))}/; to look at it all, open "
        rf"{re.escape(str(toggle.dir / 'report.html'))}",
        out.splitlines()[-1],
    )


# --- profile.yaml ------------------------------------------------------------------------


def test_profile_loads_with_safe_load_and_passes_the_format_check(toggle):
    # (load_profile asserted validate_profile() == [])
    assert toggle.profile["device-info"] == {"name": "TpLinkPlug", "mac": PLUG_MAC, "ipv4": PLUG_IP}
    assert list(toggle.profile) == ["device-info", "single-policies", "interactions"]


def test_device_mac_comes_from_the_capture_when_not_given(toggle):
    # No --device-mac on the command line: the MAC that sends from 192.168.1.135.
    assert "--device-mac" not in toggle.result.args
    assert toggle.profile["device-info"]["mac"] == PLUG_MAC
    assert PLUG_MAC in sections(toggle.text)[""].splitlines()[0]


def test_policy_and_interaction_names_are_c_safe(toggle):
    names = policy_names(toggle.profile) + list(toggle.profile["interactions"])
    assert len(names) == 5
    for name in names:
        assert C_NAME.match(name) and "backward" not in name.lower(), name
    assert sorted(policy_names(toggle.profile)) == sorted(toggle.signature["pattern"])
    assert list(toggle.profile["interactions"]) == ["toggle"]


def test_the_interaction_keeps_event_order_after_safe_load(toggle):
    interaction = toggle.profile["interactions"]["toggle"]
    assert list(interaction) == list(_events(toggle.signature)["pattern"])
    tcp, dns, tls = interaction.values()
    assert tcp["protocols"]["tcp"] == {"dst-port": 9999}
    assert tcp["protocols"]["ipv4"] == {"src": PHONE_IP, "dst": "self"}
    assert (tcp["initiator"], tcp["bidirectional"]) == ("src", True)
    assert dns["protocols"]["dns"] == {"qtype": "A", "domain-name": DOMAIN}
    assert tls["protocols"]["ipv4"]["dst"] == DOMAIN
    # and in the file itself, not just after loading
    text = (toggle.dir / "profile.yaml").read_text()
    positions = [text.index(f"\n    {name}:\n") for name in interaction]
    assert positions == sorted(positions)


def test_profile_stats_are_the_observed_ranges(toggle):
    tls_row = _events(toggle.signature).iloc[2]
    tls = toggle.profile["interactions"]["toggle"][tls_row["pattern"]]
    assert tls["stats"]["packet-count"] == {
        "fwd": int(tls_row["orig_pkts_max"]),
        "bwd": int(tls_row["resp_pkts_max"]),
    }
    low = int(min(tls_row["orig_size_min_min"], tls_row["resp_size_min_min"]))
    high = int(max(tls_row["orig_size_max_max"], tls_row["resp_size_max_max"]))
    assert tls["stats"]["packet-size"] == f"{low} - {high}"
    assert tls["stats"]["duration"] == f"{tls_row['duration_max']:.3f} s"


def test_profile_agrees_with_the_hand_written_profile_of_the_plug(toggle):
    """What must agree with the firewall authors' own profile of this plug: the device,
    TCP/9999 from the app to the plug, UDP/9999 from the plug to the app, and the
    toggle-plug interaction: DNS A for use1-api.tplinkra.com to the gateway on UDP/53, then
    TCP/443 to that name."""
    hand = load_handwritten()
    ours = toggle.profile
    assert ours["device-info"]["mac"] == hand["device-info"]["mac"]
    assert ours["device-info"]["ipv4"] == hand["device-info"]["ipv4"]

    hand_dns, hand_https = hand["interactions"]["toggle-plug"].values()
    tcp, dns, tls = ours["interactions"]["toggle"].values()
    for key in ("dns", "udp", "ipv4"):
        assert dns["protocols"][key] == hand_dns["protocols"][key], key
    assert hand_dns["protocols"]["dns"]["domain-name"] == DOMAIN
    assert dns["bidirectional"] is hand_dns["bidirectional"] is True
    assert tls["protocols"]["tcp"] == hand_https["protocols"]["tcp"] == {"dst-port": 443}
    assert (
        tls["protocols"]["ipv4"]
        == hand_https["protocols"]["ipv4"]
        == {"src": "self", "dst": DOMAIN}
    )
    assert tls["bidirectional"] is hand_https["bidirectional"] is True

    hand_tcp = hand["single-policies"]["tcp-device-plug-lan"]
    assert tcp["protocols"]["tcp"] == hand_tcp["protocols"]["tcp"] == {"dst-port": 9999}
    assert tcp["protocols"]["ipv4"]["dst"] == hand_tcp["protocols"]["ipv4"]["dst"] == "self"
    assert tcp["bidirectional"] is hand_tcp["bidirectional"] is True

    hand_udp = hand["single-policies"]["udp-plug-phone"]
    (udp,) = ours["single-policies"].values()
    assert udp["protocols"]["udp"] == hand_udp["protocols"]["udp"] == {"src-port": 9999}
    assert udp["protocols"]["ipv4"]["src"] == hand_udp["protocols"]["ipv4"]["src"] == "self"


# --- background from idle captures ---------------------------------------------------------


@pytest.mark.slow  # main.py once more (main.py with --idle also runs in the quick tier:
# conftest's plug_signatures, which test_event_detector.py detects with)
def test_idle_capture_moves_the_udp_9999_pattern_to_background(with_idle):
    assert_clean_run(with_idle.result, with_idle.dir)
    signature = with_idle.signature
    udp = signature[(signature["proto"] == "udp") & (signature["server_port"] == 9999)]
    assert list(udp["role"]) == ["background"]
    events = _events(signature)
    assert [(e.proto, e.server_port, e.remote) for e in events.itertuples()] == [
        ("tcp", 9999, PHONE_IP),
        ("udp", 53, "gateway"),
        ("tcp", 443, DOMAIN),
    ]

    header, background = sections(with_idle.text)[""], background_section(with_idle.text)
    assert NO_BASELINE not in header
    assert background.startswith("Background patterns (seen without the event too) (1)")
    assert block_names(background) == list(udp["pattern"])
    assert block_names(sections(with_idle.text)["Event"]) == list(events["pattern"])

    profile = with_idle.profile
    assert list(profile["single-policies"]) == list(udp["pattern"])
    assert list(profile["interactions"]["toggle"]) == list(events["pattern"])
    # the idle capture's CSVs are kept too, apart from the event's
    assert {p.name for p in (with_idle.dir / "idle").iterdir()} == {
        "idle.pcap.packets.csv",
        "idle.pcap.flows.csv",
        "idle.pcap.bursts.csv",
    }


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.slow  # main.py translates all three captures before it can tell (the same check
# of signature-extractor.py is in the quick tier)
def test_a_device_ip_that_never_appears_is_one_error_line_and_no_outputs(tmp_path):
    result = run_script(
        "main.py", "TpLinkPlug", "192.168.1.99", *TPLINK_CAPTURES, "-o", tmp_path, check=False
    )
    assert result.returncode == 1
    assert_clean_run(result, tmp_path)
    (line,) = result.stderr.splitlines()
    assert line.startswith("main.py: error: device IP 192.168.1.99 never appears")
    assert_no_outputs(tmp_path)


@pytest.mark.parametrize(
    "arguments, complaint",
    quick_first(
        2,
        [
            (["192.168.1.256"], "argument IPV4: '192.168.1.256' is not"),
            (
                [PLUG_IP, "--device-mac", "50:c7:bf:ed:0a"],
                "argument --device-mac: '50:c7:bf:ed:0a'",
            ),
            (["plug"], "argument IPV4: 'plug' is not"),
            (
                [PLUG_MAC],
                f"argument IPV4: '{PLUG_MAC}' is not an IPv4 or IPv6 address but a MAC address: "
                "give the device's IP here, its MAC with --device-mac",
            ),
            ([PLUG_IP, "--device-mac", "50:c7:bf:ed:0a:zz"], "argument --device-mac"),
        ],
    ),
)
def test_an_invalid_ip_or_mac_is_a_usage_error(tmp_path, arguments, complaint):
    ip, *options = arguments
    result = run_script(
        "main.py", "TpLinkPlug", ip, *TPLINK_CAPTURES, *options, "-o", tmp_path / "out", check=False
    )
    assert result.returncode == 2
    assert_clean_run(result)
    assert result.stderr.splitlines()[-1].startswith(f"main.py: error: {complaint}")
    assert not (tmp_path / "out").exists()


def test_captures_with_one_file_name_are_refused_before_anything_is_written(tmp_path):
    """Their CSVs are named after the capture: they would overwrite each other, and the
    three recordings count as one."""
    copies = []
    for number, capture in enumerate(TPLINK_CAPTURES, 1):
        (tmp_path / f"run{number}").mkdir()
        copies.append(tmp_path / f"run{number}" / "plug.pcap")
        copies[-1].write_bytes(capture.read_bytes())
    result = run_script(
        "main.py", "TpLinkPlug", PLUG_IP, *copies, "-o", tmp_path / "out", check=False
    )
    assert result.returncode == 1
    assert_clean_run(result)
    assert result.stderr.startswith("main.py: error: 3 captures share the name plug.pcap (")
    assert not (tmp_path / "out").exists()


def test_arguments_in_the_wrong_order_and_an_empty_name_are_named(tmp_path):
    """A capture where the address goes (DEVICE PCAP IPV4), and an empty device name (it
    gave 'on device  (' in pattern.txt): one line each saying what is wrong."""
    capture = TPLINK_CAPTURES[0]
    for arguments, complaint in (
        (
            ["TpLinkPlug", capture, PLUG_IP],
            f"argument IPV4: '{capture}' is not an IPv4 or IPv6 address but a file: the "
            "device's address comes before the files",
        ),
        (["", PLUG_IP, capture], "argument DEVICE: the device name is empty"),
        (["  ", PLUG_IP, capture], "argument DEVICE: the device name is empty"),
    ):
        result = run_script("main.py", *arguments, "-o", tmp_path / "out", check=False)
        assert result.returncode == 2
        assert result.stderr == f"main.py: error: {complaint} (see main.py --help)\n"
        assert not (tmp_path / "out").exists()


SCRIPT_NAMES = [
    "main.py",
    "packet-translator.py",
    "stream-identifier.py",
    "signature-extractor.py",
    "traffic-report.py",
    "event-detector.py",
    "evaluate.py",
]


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_a_usage_error_is_one_line_in_every_script(script, tmp_path):
    """argparse wrote its usage block (eight lines for main.py) before the error line."""
    for arguments in ([], ["--no-such-option"]):
        result = run_script(script, *arguments, "-o", tmp_path / "out", check=False)
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"{script}: error: "), lines[0]
        assert lines[0].endswith(f" (see {script} --help)"), lines[0]
        assert result.stdout == ""


def test_a_swapped_name_and_address_and_a_missing_name_are_said_in_one_line(tmp_path):
    """DEVICE IPV4 the other way round said only "'TpLinkPlug' is not an IPv4 or IPv6
    address" (after the whole usage block); a capture as DEVICE was taken as the name."""
    capture = TPLINK_CAPTURES[0]
    for arguments, complaint in (
        (
            [PLUG_IP, "TpLinkPlug", capture],
            f"argument IPV4: 'TpLinkPlug' is not an IP address but DEVICE '{PLUG_IP}' is: "
            "they are swapped, the device's name comes first (DEVICE IPV4 PCAP ...)",
        ),
        (
            [PLUG_IP, capture, *TPLINK_CAPTURES[1:]],
            f"argument DEVICE: '{PLUG_IP}' is an address and IPV4 '{capture}' a file: the "
            "device's name is missing, it comes first (DEVICE IPV4 PCAP ...)",
        ),
        (
            [capture, PLUG_IP, *TPLINK_CAPTURES[1:]],
            f"argument DEVICE: '{capture}' is a file, not a device name: the device's name "
            "and address come before the captures",
        ),
    ):
        result = run_script("main.py", *arguments, "-o", tmp_path / "out", check=False)
        assert result.returncode == 2
        assert result.stderr == f"main.py: error: {complaint} (see main.py --help)\n"
        assert not (tmp_path / "out").exists()


def test_idle_takes_one_capture_per_use_and_the_documented_row_after_the_captures(tmp_path):
    """`--idle a.pcap plug IP b.pcap` took every argument as idle captures ("the following
    arguments are required: DEVICE, IPV4, PCAP"): --idle takes one capture per use, and the
    README's `DEVICE IPV4 PCAP ... --idle PCAP ...` still takes the whole row."""
    first, second, third = TPLINK_CAPTURES
    runs = {
        "before": ["--idle", first, "TpLinkPlug", PLUG_IP, second, third],
        "repeated": ["TpLinkPlug", PLUG_IP, third, "--idle", first, "--idle", second],
        "row": ["TpLinkPlug", PLUG_IP, third, "--idle", first, second, "--event", "toggle"],
    }
    idle = {"before": [first], "repeated": [first, second], "row": [first, second]}
    for name, arguments in runs.items():
        parsed = Main().parse([str(a) for a in arguments])
        assert (parsed.idle, parsed.captures) == (
            idle[name],
            [c for c in TPLINK_CAPTURES if c not in idle[name]],
        ), name
    # ... and a run puts each where it says (the idle captures' CSVs in idle/).
    out = tmp_path / "repeated"
    result = run_script("main.py", *runs["repeated"], "-o", out, "-q", "--no-report")
    assert_clean_run(result, out)
    assert sorted(p.name for p in (out / "idle").glob("*.flows.csv")) == [
        f"{c.name}.flows.csv" for c in idle["repeated"]
    ]
    assert sorted(p.name for p in out.glob("*.flows.csv")) == [f"{third.name}.flows.csv"]
    # A stray file after another option's value is still refused, in one line.
    result = run_script("main.py", *runs["row"], third, "-o", tmp_path / "stray", check=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"main.py: error: unrecognized arguments: {third} (see main.py --help)\n"
    )


def test_an_ipv6_device_is_accepted(tmp_path):
    """main.py takes the device's IPv6 address too (the other stages always did)."""
    capture = CAPTURES / "http_ipv6.pcap"
    run_script(
        "main.py",
        "host",
        "2a00:d40:1:3:7aac:c0ff:fea7:d4c",
        capture,
        "-o",
        tmp_path,
        "-q",
        "--no-report",
    )
    profile = yaml.safe_load((tmp_path / "profile.yaml").read_text())
    assert profile["device-info"]["ipv6"] == "2a00:d40:1:3:7aac:c0ff:fea7:d4c"
