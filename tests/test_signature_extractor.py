"""signature-extractor.py on flows CSVs, as a user runs it (and the library where that is
clearer): signature.csv read back, the firewall-format checker, baselines, --support, bad
input and names from packets that try to break the outputs."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from iotsig import csvio, signature
from iotsig.errors import InputError, collected
from iotsig.profile import build_profile, policy, printable, unexpressible, validate_profile
from iotsig.schema import FLOWS, SIGNATURE, SIGNATURE_VERSION

from conftest import (
    CAPTURES,
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
    strings_in,
)


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    """One flows CSV per TP-Link recording, made by the two earlier scripts."""
    base = tmp_path_factory.mktemp("flows")
    run_script("packet-translator.py", *TPLINK_CAPTURES, "-o", base, "-q")
    run_script("stream-identifier.py", *sorted(base.glob("*.packets.csv")), "-o", base, "-q")
    paths = sorted(base.glob("*.flows.csv"))
    assert [p.name for p in paths] == [f"{c.name}.flows.csv" for c in TPLINK_CAPTURES]
    return paths


def extract(output_dir, flow_files, *options, check=True, device_ip=PLUG_IP):
    """Run signature-extractor.py; returns the result with the outputs that were written."""
    result = run_script(
        "signature-extractor.py",
        *flow_files,
        "--device-name",
        "TpLinkPlug",
        "--device-ip",
        device_ip,
        "-o",
        output_dir,
        *options,
        check=check,
    )
    run = SimpleNamespace(result=result, dir=output_dir, text="", signature=None, profile=None)
    if (output_dir / "pattern.txt").exists():
        run.text = (output_dir / "pattern.txt").read_text(encoding="utf-8")
        run.signature = signature.read_signature_csv(output_dir / "signature.csv")
        run.profile = load_profile(output_dir / "profile.yaml")
    return run


def edit_flows(source, target, keep=None, **changes):
    """A flows CSV edited as a person would: rows kept by `keep(frame)`, columns changed
    by `changes` (column -> function of the frame returning the new column)."""
    frame = csvio.read_table(source, FLOWS)
    if keep is not None:
        frame = frame[keep(frame)]
    for column, change in changes.items():
        frame[column] = change(frame)
    csvio.write_table(frame, FLOWS, target)
    return target


def _row(signature_frame, **where) -> pd.Series:
    mask = pd.Series(True, index=signature_frame.index)
    for column, value in where.items():
        mask &= signature_frame[column] == value
    (index,) = signature_frame.index[mask]
    return signature_frame.loc[index]


@pytest.fixture(scope="module")
def default(flows, tmp_path_factory):
    run = extract(tmp_path_factory.mktemp("default"), flows)
    run.flow_files = flows
    return run


# --- signature.csv ---------------------------------------------------------------------------


def test_signature_csv_loads_back_with_the_schema_columns_and_types(default):
    frame = default.signature
    assert list(frame.columns) == SIGNATURE.names
    assert set(frame["signature_version"]) == {SIGNATURE_VERSION}
    assert list(frame["order"]) == [1, 2, 3, 4]
    assert list(frame["role"]) == ["event"] * 3 + ["background (inferred)"]
    assert list(frame["server_port"]) == [9999, 53, 443, 9999]
    assert list(frame["proto"]) == ["tcp", "udp", "tcp", "udp"]
    assert frame["recordings_seen"].tolist() == [3, 3, 3, 3]
    assert (frame["device_name"] == "TpLinkPlug").all() and (frame["device_ip"] == PLUG_IP).all()
    # the ranges are ranges
    for metric in ("orig_pkts", "resp_pkts", "duration", "orig_frame_bytes"):
        assert (frame[f"{metric}_min"] <= frame[f"{metric}_max"]).all()


def test_signature_csv_agrees_with_the_library_and_profile(default, flows):
    result = signature.extract(signature.read_recordings(flows), "TpLinkPlug", PLUG_IP)
    assert result.device_mac == PLUG_MAC  # found in the capture: no --device-mac given
    assert list(result.patterns["pattern"]) == list(default.signature["pattern"])
    assert list(result.event_patterns["remote"]) == [PHONE_IP, "gateway", DOMAIN]
    assert build_profile(result) == default.profile


def test_a_signature_csv_of_another_version_is_refused_clearly(default, tmp_path):
    frame = pd.read_csv(default.dir / "signature.csv", dtype=str, keep_default_na=False)
    frame["signature_version"] = "99"
    frame.to_csv(tmp_path / "v99.csv", index=False)
    with pytest.raises(
        InputError,
        match=r"v99\.csv: signature version \[99\] is not supported "
        rf"\(this tool reads versions 2 and {SIGNATURE_VERSION}",
    ):
        signature.read_signature_csv(tmp_path / "v99.csv")


def test_a_version_2_signature_is_read_as_flow_patterns(default, tmp_path):
    """A signature learned before bursts (version 2, without unit, accepted_profile,
    periodic and the flow settings) still detects: its patterns are flows."""
    frame = pd.read_csv(default.dir / "signature.csv", dtype=str, keep_default_na=False)
    new = ["unit", "accepted_profile", "periodic", "idle_timeout", "max_duration", "burst_gap"]
    frame.drop(columns=new).assign(signature_version="2").to_csv(tmp_path / "v2.csv", index=False)
    read = signature.read_signature_csv(tmp_path / "v2.csv")
    assert list(read.columns) == SIGNATURE.names
    assert set(read["unit"]) == {"flow"} and set(read["periodic"]) == {0}
    assert read["burst_gap"].isna().all()
    current = signature.read_signature_csv(default.dir / "signature.csv")
    same = [c for c in SIGNATURE.names if c not in new + ["signature_version"]]
    pd.testing.assert_frame_equal(read[same], current[same], check_dtype=False)


def test_a_version_1_signature_without_packet_profiles_is_named_as_old(default, tmp_path):
    frame = pd.read_csv(default.dir / "signature.csv", dtype=str, keep_default_na=False)
    frame = frame.drop(columns=["packet_profile"]).assign(signature_version="1")
    frame.to_csv(tmp_path / "v1.csv", index=False)
    with pytest.raises(
        InputError,
        match=r"v1\.csv: signature version \[1\] is not supported.*"
        "learn the signature again",
    ):
        signature.read_signature_csv(tmp_path / "v1.csv")


def test_a_signature_csv_with_missing_columns_is_refused_naming_them(default, tmp_path):
    frame = pd.read_csv(default.dir / "signature.csv", dtype=str, keep_default_na=False)
    frame.drop(columns=["pattern", "server_port"]).to_csv(tmp_path / "cut.csv", index=False)
    with pytest.raises(
        InputError,
        match=r"cut\.csv: not a signature CSV: missing column\(s\) "
        r"pattern, server_port$",
    ):
        signature.read_signature_csv(tmp_path / "cut.csv")


@pytest.mark.slow  # the whole pipeline again, without the device options
def test_flows_made_without_knowing_the_device_give_the_same_signature(default, tmp_path):
    """The fixture's flows CSVs were made without --device-ip, so their remote_h,
    remote_name and remote_class describe the responder, the plug itself when the phone
    or the gateway opens the flow. The extractor must not take that for the remote party:
    made with --device-ip, the same recordings give the same signature."""
    run_script(
        "packet-translator.py", *TPLINK_CAPTURES, "--device-ip", PLUG_IP, "-o", tmp_path, "-q"
    )
    run_script(
        "stream-identifier.py",
        *sorted(tmp_path.glob("*.packets.csv")),
        "--device-ip",
        PLUG_IP,
        "-o",
        tmp_path,
        "-q",
    )
    flows_with_device = sorted(tmp_path.glob("*.flows.csv"))
    for support in ("1", "0.6"):  # (0.6: with the ARP patterns, which the phone and gateway open)
        knowing = extract(tmp_path / f"knowing{support}", flows_with_device, "--support", support)
        not_knowing = extract(tmp_path / f"not{support}", default.flow_files, "--support", support)
        pd.testing.assert_frame_equal(knowing.signature, not_knowing.signature)
    assert "arp-gateway" in set(knowing.signature["pattern"])


def test_a_given_device_mac_is_the_profiles_mac(flows, tmp_path):
    run = extract(tmp_path, flows, "--device-mac", "50-C7-BF-ED-0A-55", "-q")
    assert run.profile["device-info"]["mac"] == "50:c7:bf:ed:0a:55"
    assert run.result.stdout == ""  # -q


# --- the format checker ------------------------------------------------------------------------


def _set(path: str, value):
    """A change to a profile: set the value at a dotted path ('~' deletes the key)."""

    def change(profile):
        *parents, last = path.split("/")
        node = profile
        for key in parents:
            node = node[key]
        if value == "~":
            del node[last]
        else:
            node[last] = value

    return change


def _rename(path: str, new_name: str):
    def change(profile):
        *parents, old = path.split("/")
        node = profile
        for key in parents:
            node = node[key]
        items = list(node.items())
        node.clear()
        node.update((new_name if k == old else k, v) for k, v in items)

    return change


VALID = {
    "device-info": {"name": "plug", "mac": PLUG_MAC, "ipv4": PLUG_IP},
    "single-policies": {
        "coap-get": {
            "protocols": {
                "coap": {"type": "CON", "method": "GET", "uri": "/status"},
                "udp": {"dst-port": 5683},
                "ipv4": {"src": "self", "dst": "coap"},
            }
        }
    },
    "interactions": {
        "toggle": {
            "dhcp-discover": {
                "protocols": {
                    "dhcp": {"type": "discover", "client-mac": "self"},
                    "udp": {"src-port": 68, "dst-port": 67},
                    "ipv4": {"src": "0.0.0.0", "dst": "broadcast"},
                }
            },
            "dns-query": {
                "protocols": {
                    "dns": {"qtype": "A", "domain-name": "$.tplinkra.com"},
                    "udp": {"dst-port": 53},
                    "ipv4": {"src": "self", "dst": "gateway"},
                },
                "bidirectional": True,
            },
            "https": {
                "protocols": {"tcp": {"dst-port": 443}, "ipv4": {"src": "self", "dst": DOMAIN}},
                "bidirectional": True,
                "initiator": "src",
                "timeout": 5,
                "stats": {
                    "rate": "10/second",
                    "packet-size": "54 - 1514",
                    "packet-count": {"fwd": 16, "bwd": 12},
                    "duration": "0.9 s",
                },
            },
        }
    },
}
HTTPS = "interactions/toggle/https"


@pytest.mark.parametrize(
    "change, problem",
    [
        (_set("device-info/mac", "~"), "device-info.mac is missing"),
        (_set("device-info/mac", "50:c7:bf:ed:0a"), "is not a MAC address"),
        (_set("device-info/name", "tp link"), "device-info.name 'tp link' is not"),
        (_set("device-info/ipv4", "192.168.1.300"), "is not an ipv4 address"),
        (_set(f"{HTTPS}/protocols/https", {"port": 443}), "unknown protocol 'https'"),
        (_set(f"{HTTPS}/protocols/tcp/port", 443), "unknown field 'port'"),
        (_set(f"{HTTPS}/protocols/tcp/dst-port", 70000), "70000 is not a port number"),
        (_set(f"{HTTPS}/protocols/tcp/dst-port", "443"), "'443' is not a port number"),
        (_set("interactions/toggle/dns-query/protocols/dns", None), "must be a map, not None"),
        (_set(f"{HTTPS}/protocols", {}), "no protocols"),
        (_rename(HTTPS, "https-backward"), "policy name is not C-safe"),
        (_rename(HTTPS, "https.443"), "policy name is not C-safe"),
        (_rename("interactions/toggle", "toggle plug"), "interaction name 'toggle plug'"),
        (_set("single-policies/coap-get/protocols/coap/type", "CONFIRMABLE"), "is not a CoAP type"),
        (_set("single-policies/coap-get/protocols/coap/method", "2.05"), "is not a CoAP method"),
        (_set("single-policies/coap-get/protocols/coap/code", "GET"), "unknown field 'code'"),
        (
            _set("interactions/toggle/dhcp-discover/protocols/dhcp/client_mac", "self"),
            "unknown field 'client_mac'",
        ),
        (
            _set("interactions/toggle/dhcp-discover/protocols/dhcp/type", "DHCPDISCOVER"),
            "is not a DHCP message type",
        ),
        (
            _set("interactions/toggle/dns-query/protocols/dns/domain-name", "evil\nexample.com"),
            "holds a quote, backslash or control character",
        ),
        (
            _set("interactions/toggle/dns-query/protocols/dns/domain-name", "$"),
            "matches every name",
        ),
        (
            _set("interactions/toggle/dns-query/protocols/dns/domain-name", "a" * 64 + ".com"),
            "longer than 63",
        ),
        (
            _set("interactions/toggle/dns-query/protocols/dns/qtype", "A AAAA"),
            "is not a qtype name",
        ),
        (_set(f"{HTTPS}/protocols/ipv4/dst", 'x");system("reboot'), "is not an address, an alias"),
        (_set(f"{HTTPS}/bidirectional", "yes"), "bidirectional must be true or false"),
        (_set(f"{HTTPS}/initiator", "client"), "initiator must be src or dst"),
        (_set(f"{HTTPS}/stats/rate", "10 per second"), "stats.rate: invalid value"),
        (_set(f"{HTTPS}/stats/duration", "1 minute"), "stats.duration: invalid value"),
        (_set(f"{HTTPS}/stats/jitter", "1 ms"), "unknown stat 'jitter'"),
        (_set("single-policies/coap-get/timeout", 5), "unknown key 'timeout'"),
        # Rules broader than any traffic: addresses alone, or TCP/UDP without a port.
        (_set(f"{HTTPS}/protocols/tcp", "~"), "addresses only, no protocol: it would allow all"),
        (_set(f"{HTTPS}/protocols/tcp", {}), "neither src-port nor dst-port: it would allow every"),
    ],
)
def test_validate_profile_catches_real_mistakes(change, problem):
    assert validate_profile(VALID) == []
    broken = copy.deepcopy(VALID)
    change(broken)
    problems = validate_profile(broken)
    assert len(problems) == 1 and problem in problems[0], problems


def test_validate_profile_on_the_hand_written_profile_flags_only_what_the_firewall_misreads():
    """The firewall authors' own profile passes the checker except for what the
    translator really mishandles: a policy name with dots (not a C name) and TLS fields
    it has no parser for. Suffix wildcards, aliases, lists and ARP/DHCP policies pass."""
    hand = load_handwritten()
    problems = validate_profile(hand)
    assert [p for p in problems if ".tls: unknown field" not in p] == [
        "interactions.dns-https-tplinkcloud.dns...-query-plug-tplinkcloud: policy name is not "
        "C-safe ([A-Za-z0-9_-], no 'backward')"
    ]
    tls_fields = [
        field
        for interaction in hand["interactions"].values()
        for policy in interaction.values()
        for field in policy["protocols"].get("tls", {})
    ]
    assert len(problems) == 1 + len(tls_fields) == 18


@pytest.mark.parametrize(
    "pattern, changes, reason",
    [
        ("tls", {"http_request_method": "GET", "http_request_uri": "/api/*"}, "ends with *"),
        ("tls", {"http_request_method": "GET", "http_request_uri": '/a"b'}, "holds a quote"),
        ("tls", {"http_request_method": "GET /x", "http_request_uri": "/"}, "not a method name"),
        ("tls", {"coap_type": "CON", "coap_code": "GET", "coap_uri": "/a\nb"}, "the CoAP URI"),
        ("dns", {"dns_qry_name": "$.example.com"}, "starts with $, the firewall's suffix wildcard"),
        ("dns", {"dns_qry_type": "A;TYPE 65"}, "'TYPE 65' is not a type name"),
        ("tls", {"proto": "eapol"}, "no section for eapol frames"),
        ("tls", {"http_request_method": "GET", "http_request_uri": "/api/status"}, ""),
    ],
)
def test_patterns_the_firewall_cannot_match_safely_are_left_out_of_the_profile(
    flows, pattern, changes, reason
):
    patterns = signature.extract(signature.read_recordings(flows), "p", PLUG_IP).patterns
    port = {"dns": 53, "tls": 443}[pattern]
    original = patterns[patterns["server_port"] == port].iloc[0].to_dict()
    row = SimpleNamespace(**{**original, **changes})
    assert (reason in unexpressible(row)) if reason else unexpressible(row) == ""
    made = policy(row, "ipv4")
    if reason:
        assert made is None
    else:
        assert made["protocols"]["http"] == {"method": "GET", "uri": "/api/status"}
        assert (
            validate_profile(
                {"device-info": {"name": "p", "mac": PLUG_MAC}, "single-policies": {"http": made}}
            )
            == []
        )


# --- baseline --------------------------------------------------------------------------------


def test_baseline_flows_move_matching_patterns_to_background(flows, tmp_path):
    # A recording of the plug without the event: one recording's UDP/9999 and ARP flows.
    idle = edit_flows(
        flows[0],
        tmp_path / "idle.flows.csv",
        keep=lambda f: (f["proto"] == "arp") | (f["orig_p"] == 9999),
    )
    run = extract(tmp_path / "out", flows, "--baseline", idle)
    assert_clean_run(run.result, run.dir)
    udp = _row(run.signature, proto="udp", server_port=9999)
    assert udp["role"] == "background"
    events = run.signature[run.signature["role"] == "event"]
    assert list(events["remote"]) == [PHONE_IP, "gateway", DOMAIN]
    assert NO_BASELINE not in run.text
    assert block_names(background_section(run.text)) == [udp["pattern"]]
    assert list(run.profile["single-policies"]) == [udp["pattern"]]
    assert list(run.profile["interactions"]["event"]) == list(events["pattern"])


def test_a_baseline_with_all_the_event_traffic_leaves_no_event(flows, tmp_path):
    run = extract(tmp_path / "out", flows, "--baseline", *flows)
    assert set(run.signature["role"]) == {"background"}
    assert "background: no event pattern" in run.result.stderr
    assert "None: the recordings have no flow in common that is not background." in run.text
    assert "interactions" not in run.profile
    assert len(run.profile["single-policies"]) == 4


# --- --support -------------------------------------------------------------------------------


def test_support_below_one_keeps_a_pattern_seen_in_two_of_three_recordings(
    flows, tmp_path, default
):
    run = extract(tmp_path, flows, "--support", "0.6")
    arp = run.signature[run.signature["proto"] == "arp"]
    assert sorted(arp["remote"]) == [PHONE_IP, "gateway"]
    assert set(arp["recordings_seen"]) == {2} and set(arp["role"]) == {"event"}
    assert "at least 2 of 3 recordings (--support 0.6)" in run.text
    assert run.text.count("seen in 2/3 recordings") == 2
    events = run.signature[run.signature["role"] == "event"]
    assert list(events["remote"])[:3] == [PHONE_IP, "gateway", DOMAIN]  # still first, in order
    left_out = sections(run.text)["Left"]
    assert "(1 fingerprints)" in left_out and "ICMP" in left_out and "ARP" not in left_out

    # In the profile: the phone's ARP request for the plug, its reply allowed back.
    phone_arp = run.profile["interactions"]["event"][_row(arp, remote=PHONE_IP)["pattern"]]
    assert phone_arp["protocols"] == {"arp": {"type": "request", "spa": PHONE_IP, "tpa": "self"}}
    assert phone_arp["bidirectional"] is True

    # With the default (all recordings) the same ARP flows are left out.
    assert not (default.signature["proto"] == "arp").any()
    assert "at least 3 of 3 recordings (--support 1)" in default.text


@pytest.mark.parametrize("support", ["0", "1.5", "half"])
def test_support_must_be_a_fraction(flows, tmp_path, support):
    result = run_script(
        "signature-extractor.py",
        *flows,
        "--device-name",
        "p",
        "--device-ip",
        PLUG_IP,
        "--support",
        support,
        "-o",
        tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "argument --support" in result.stderr.splitlines()[-1]


# --- bad input -------------------------------------------------------------------------------


def test_one_recording_warns_and_still_writes_the_outputs(flows, tmp_path):
    run = extract(tmp_path, flows[:1])
    assert_clean_run(run.result, tmp_path)
    (warning,) = run.result.stderr.splitlines()
    assert warning.startswith(
        "signature-extractor.py: warning: only one recording: a "
        "signature from one recording cannot tell stable traffic from "
        "accidental traffic"
    )
    assert "Warning: only one recording" in sections(run.text)[""]
    assert set(run.signature["recordings_total"]) == {1}
    assert len(run.signature) > 3 and "interactions" in run.profile


def test_recordings_with_nothing_in_common_say_so_and_write_empty_valid_outputs(flows, tmp_path):
    # Recording 1 keeps only the TCP/9999 flow, 2 only the DNS flow, 3 only the TLS flow.
    keeps = [
        lambda f: f["resp_p"] == 9999,
        lambda f: f["resp_p"] == 53,
        lambda f: f["resp_p"] == 443,
    ]
    disjoint = [
        edit_flows(source, tmp_path / source.name, keep=keep) for source, keep in zip(flows, keeps)
    ]
    run = extract(tmp_path / "out", disjoint)
    assert run.result.returncode == 0
    assert_clean_run(run.result, run.dir)
    assert "warning: the recordings have no flow in common" in run.result.stderr
    found = sections(run.text)
    assert found["Event"].startswith("Event patterns, in event order (0)")
    assert "None: the recordings have no flow in common" in found["Event"]
    assert "(0)\n" in background_section(run.text) and "None." in background_section(run.text)
    assert found["Left"].count("in 1/3 recordings (1 flow)") == 3
    assert run.profile == {"device-info": {"name": "TpLinkPlug", "mac": PLUG_MAC, "ipv4": PLUG_IP}}
    assert run.signature.empty and list(run.signature.columns) == SIGNATURE.names


def test_a_device_ip_that_never_appears_is_one_error_line_and_no_outputs(flows, tmp_path):
    run = extract(tmp_path, flows, device_ip="10.0.0.99", check=False)
    assert run.result.returncode == 1
    assert_clean_run(run.result, tmp_path)
    assert run.result.stderr == (
        "signature-extractor.py: error: device IP 10.0.0.99 never "
        "appears in the flows of " + ", ".join(c.name for c in TPLINK_CAPTURES) + "\n"
    )
    assert_no_outputs(tmp_path)


@pytest.mark.parametrize(
    "option, value",
    quick_first(
        2,
        [
            ("--device-ip", "192.168.1.256"),
            ("--device-mac", "50:c7:bf:ed:0a"),
            ("--device-ip", "plug.local"),
            ("--device-ip", ""),
            ("--device-mac", "50:c7:bf:ed:0a:5g"),
            ("--device-mac", "50c7bfed0a54"),
        ],
    ),
)
def test_an_invalid_ip_or_mac_is_a_usage_error(flows, tmp_path, option, value):
    options = {"--device-name": "p", "--device-ip": PLUG_IP, option: value}
    result = run_script(
        "signature-extractor.py",
        *flows,
        *[x for o in options.items() for x in o],
        "-o",
        tmp_path / "out",
        check=False,
    )
    assert result.returncode == 2
    assert_clean_run(result)
    assert result.stderr.splitlines()[-1].startswith(
        f"signature-extractor.py: error: argument {option}: {value!r} is not"
    )
    assert not (tmp_path / "out").exists()


def test_missing_columns_in_a_flows_csv_are_named(flows, tmp_path):
    frame = pd.read_csv(flows[1], dtype=str, keep_default_na=False)
    cut = tmp_path / "cut.flows.csv"
    frame.drop(columns=["resp_p", "dns_qry_name", "remote_name"]).to_csv(cut, index=False)
    run = extract(tmp_path / "out", [flows[0], cut, flows[2]], check=False)
    assert run.result.returncode == 1
    assert_clean_run(run.result, run.dir)
    assert run.result.stderr == (
        f"signature-extractor.py: error: {cut}: not a flows CSV: "
        "missing column(s) resp_p, remote_name, dns_qry_name\n"
    )
    assert_no_outputs(run.dir)


def test_flows_files_with_one_name_in_different_folders_are_different_recordings(flows, tmp_path):
    # e.g. run1/plug.flows.csv, run2/plug.flows.csv, run3/plug.flows.csv
    same_name = []
    for number, source in enumerate(flows, 1):
        (tmp_path / f"run{number}").mkdir()
        same_name.append(edit_flows(source, tmp_path / f"run{number}" / "plug.flows.csv"))
    run = extract(tmp_path / "out", same_name)
    assert list(run.signature["role"]) == ["event"] * 3 + ["background (inferred)"]
    assert f"Recordings: 3 ({', '.join(map(str, same_name))})" in run.text


def test_the_same_flows_file_twice_is_refused(flows, tmp_path):
    again = flows[0].parent / ".." / flows[0].parent.name / flows[0].name
    run = extract(tmp_path, [*flows, again], check=False)
    assert run.result.returncode == 1
    assert run.result.stderr == (
        f"signature-extractor.py: error: {again}: given twice: each flows CSV is one recording\n"
    )
    assert_no_outputs(tmp_path)


def test_a_baseline_without_the_device_is_said(flows, tmp_path):
    idle = edit_flows(flows[0], tmp_path / "other.flows.csv", keep=lambda f: f["proto"] == "")
    run = extract(tmp_path / "out", flows, "--baseline", idle)
    assert run.result.stderr == (
        f"signature-extractor.py: warning: device IP {PLUG_IP} does "
        "not appear in the baseline (other): nothing is background\n"
    )
    assert "Background patterns (seen without the event too) (0)" in run.text


def test_a_missing_flows_file_is_one_error_line(flows, tmp_path):
    run = extract(tmp_path, [*flows, tmp_path / "nope.flows.csv"], check=False)
    assert run.result.returncode == 1
    assert (
        run.result.stderr
        == f"signature-extractor.py: error: {tmp_path / 'nope.flows.csv'}: no such file\n"
    )
    assert_no_outputs(tmp_path)


# --- names that come from packets ----------------------------------------------------------

# (value, whether the firewall can use it as a domain name). The translator pastes domain
# names into C string literals and takes any string that is not an address or alias for a
# domain: a newline, quote or backslash would change the C it generates, a label over 63
# characters is no DNS name, "$" is its suffix wildcard, and "external" or a network
# would silently allow far more than one server.
HOSTILE = [
    ("evil\nname.example", False),
    ('quo"te.example', False),
    ("back\\slash.example", False),
    ("tab\tname.example", False),
    ("a" * 64 + ".example", False),
    ("x." * 127 + "example", False),  # 261 characters
    ("$", False),
    ("host:8443.example", True),
    ("- [a]: {b}", True),
    ("'quoted'.example", True),
    ("=cmd|' /C calc'!A0", True),
    ("backward.example", True),
    ("external", "name only"),  # a fine DNS query name, but an alias as an address
    ("0.0.0.0/0", "name only"),
]


@pytest.fixture(scope="module")
def hostile_runs(flows, tmp_path_factory):
    """One run per hostile value, put in all three recordings as the DNS query name and as
    the TLS server's name (remote_name and tls_server_name)."""
    runs = {}
    for number, (value, _) in enumerate(HOSTILE):
        base = tmp_path_factory.mktemp(f"hostile{number}")
        edited = [
            edit_flows(
                source,
                base / source.name,
                dns_qry_name=lambda f, value=value: f["dns_qry_name"].replace(DOMAIN, value),
                remote_name=lambda f, value=value: f["remote_name"].replace(DOMAIN, value),
                tls_server_name=lambda f, value=value: f["tls_server_name"].replace(DOMAIN, value),
            )
            for source in flows
        ]
        runs[value] = extract(base / "out", edited)
    return runs


@pytest.mark.slow  # one extraction per hostile name
@pytest.mark.parametrize("value, usable", HOSTILE, ids=[repr(v)[:24] for v, _ in HOSTILE])
def test_hostile_names_cannot_break_the_outputs(hostile_runs, value, usable):
    run = hostile_runs[value]
    assert_clean_run(run.result, run.dir)  # and load_profile checked the profile
    dns = _row(run.signature, proto="udp", server_port=53)
    tls = _row(run.signature, proto="tcp", server_port=443)
    # signature.csv keeps the exact values, whatever they hold
    assert dns["dns_qry_name"] == value
    assert (tls["remote"], tls["tls_server_name"]) == (value, value)
    assert tls["remote_kind"] == "domain"

    # pattern.txt: the value on one line, control characters shown escaped
    shown = printable(value)
    assert f"DNS query {shown}, type A" in run.text
    assert f"->  {shown} (" in run.text
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", run.text)
    assert block_names(sections(run.text)["Event"]) == list(
        run.signature.loc[run.signature["role"] == "event", "pattern"]
    )

    # profile.yaml: loads with safe_load to exactly the values, or leaves them out
    names = policy_names(run.profile)
    assert all(C_NAME.match(n) and "backward" not in n.lower() for n in names)
    interaction = run.profile["interactions"]["event"]
    if usable:
        assert interaction[dns["pattern"]]["protocols"]["dns"]["domain-name"] == value
    else:
        assert dns["pattern"] not in interaction
        assert "left out of profile.yaml: the DNS query name" in run.text
    tls_dst = interaction[tls["pattern"]]["protocols"]["ipv4"]["dst"]
    if usable is True:
        assert tls_dst == value
    else:
        assert tls_dst == sorted(tls["remote_addrs"].split(";"))
        assert "profile.yaml gives its addresses" in run.text
    if not usable:
        assert value not in strings_in(run.profile)


def test_pattern_txt_lists_the_nearest_misses_and_counts_the_rest(flows, tmp_path):
    """A busy network gives thousands of one-off fingerprints: pattern.txt names the 200
    seen in most recordings and counts the others on one line."""

    def with_one_offs(source, number):
        frame = csvio.read_table(source, FLOWS)
        extra = pd.concat([frame[frame["resp_p"] == 443].head(1)] * 150, ignore_index=True)
        extra["resp_h"] = [f"198.51.{number}.{i}" for i in range(150)]
        extra["remote_h"], extra["remote_name"], extra["tls_server_name"] = extra["resp_h"], "", ""
        extra["resp_p"] = 8000 + 150 * number + np.arange(150)  # a port per one-off
        csvio.write_table(
            pd.concat([frame, extra], ignore_index=True), FLOWS, tmp_path / source.name
        )
        return tmp_path / source.name

    run = extract(tmp_path / "out", [with_one_offs(f, n) for n, f in enumerate(flows)])
    left_out = sections(run.text)["Left"]
    listed = [line for line in left_out.splitlines() if line.startswith("- ")]
    assert len(listed) == 201 and listed[-1].startswith("- and ")
    total = int(re.search(r"\((\d+) fingerprints\)", run.text).group(1))
    assert total >= 450
    assert re.match(
        rf"- and {total - 200} more, each in at most 1/3 recordings \(\d+ flows\)", listed[-1]
    )


def test_a_pattern_without_a_port_never_becomes_an_allow_everything_policy():
    """TCP/UDP flows without ports (IP fragments without their transport header) stay in
    pattern.txt, out of profile.yaml: a policy of addresses alone would allow all traffic."""
    row = pd.Series(
        {
            "proto": "udp",
            "server_port": float("nan"),
            "dns_qry_name": "",
            "http_request_method": "",
            "coap_type": "",
            "coap_code": "",
        }
    )
    row = next(pd.DataFrame([row]).itertuples())
    assert unexpressible(row) == "no UDP port was seen: a policy without one would allow any"
    assert policy(row, "ipv6") is None


def test_a_flows_csv_saved_with_semicolons_is_read_with_one_note(flows, tmp_path):
    """What Excel writes in much of Europe: read as the same flows, with one line saying the
    separator is ';' (it was refused, and before that a list of every column as missing)."""
    table = pd.read_csv(flows[0], dtype=str, keep_default_na=False)
    semicolons = tmp_path / "excel.flows.csv"
    table.to_csv(semicolons, sep=";", index=False)
    notes = []
    with collected(notes):
        [read] = signature.read_recordings([semicolons])
        [original] = signature.read_recordings([flows[0]])
    pd.testing.assert_frame_equal(read.flows, original.flows)
    assert notes == [
        f"{semicolons}: the separator is ';', not ',' (a spreadsheet's export where the decimal "
        "mark is a comma): read as such"
    ]


BOOT = sorted((CAPTURES / "events" / "TpLinkPlug" / "boot").glob("*.pcap"))


@pytest.mark.slow  # (four boots through main.py: 3.3 s)
def test_a_boot_s_dhcp_discover_is_the_device_s_without_its_mac(tmp_path):
    """The plug's DISCOVER/REQUEST from 0.0.0.0 (its MAC, no address yet): given only its IP,
    the signature left that flow out (the device's flows were those with its IP or its
    --device-mac), though stream-identifier credits it to the device. Now it is the
    event's first pattern, the device opening it to broadcast, and profile.yaml's rule
    matches what the device sends: from 0.0.0.0, not from its own address."""
    outputs = {}
    for name, mac in (("ip-only", []), ("with-mac", ["--device-mac", "50:c7:bf:f5:a0:83"])):
        outputs[name] = tmp_path / name
        run_script(
            "main.py", "plug", PLUG_IP, *BOOT, *mac, "-o", outputs[name], "-q", "--no-report"
        )
    patterns = pd.read_csv(outputs["ip-only"] / "signature.csv", dtype=str, keep_default_na=False)
    discover = patterns[patterns["dhcp_msg_type"].str.contains("discover")]
    assert len(discover) == 1
    assert discover.iloc[0][["device_side", "remote_class", "role"]].tolist() == [
        "orig",
        "broadcast",
        "event",
    ]
    text = (outputs["ip-only"] / "pattern.txt").read_text()
    assert "device 192.168.1.135  ->  broadcast (255.255.255.255)" in text
    assert text == (outputs["with-mac"] / "pattern.txt").read_text()
    rule = yaml.safe_load((outputs["ip-only"] / "profile.yaml").read_text())["interactions"]
    rule = rule["event"][discover.iloc[0]["pattern"]]["protocols"]
    assert rule["ipv4"] == {"src": "0.0.0.0", "dst": "broadcast"}
    assert rule["dhcp"] == {"type": "discover", "client-mac": "self"}
    # event-detector finds that pattern in the captures too (it translates them with the
    # signature's device, so the DISCOVER's frames are the device's there as well).
    run_script(
        "event-detector.py", outputs["ip-only"] / "signature.csv", *BOOT, "-o", tmp_path / "d", "-q"
    )
    found = pd.read_csv(tmp_path / "d" / "detections.csv", dtype=str, keep_default_na=False)
    assert len(found) == len(BOOT)
    assert all(discover.iloc[0]["pattern"] in m.split(";") for m in found["matched_patterns"])
