"""pattern.txt: the signature for people, readable without a manual."""

from __future__ import annotations

import math

import pandas as pd

from . import geo
from .fields import application_text
from .parties import describe_remote
from .profile import printable, remote_name_problem, unexpressible
from .signature import parse_profile

RULE = "=" * 78


# A busy network gives thousands of one-off fingerprints: pattern.txt is for reading.
NOISE_LISTED = 200


def pattern_text(signature) -> str:
    s = signature
    lines = [
        f"Signature of event '{s.event}' on device {s.device_name} "
        f"({s.device_ip}{', ' + s.device_mac if s.device_mac else ''})",
        f"Recordings: {len(s.recordings)} ({', '.join(s.recordings)})",
        f"A pattern must be seen in at least {_needed(s)} of {len(s.recordings)} "
        f"recordings (--support {s.support:g}).",
        "",
    ]
    for warning in s.warnings:
        lines.append(f"Warning: {warning}")
    if s.warnings:
        lines.append("")
    if not s.baseline_given:
        lines += [
            "Background: no baseline recordings (--baseline / --idle) were given, so "
            "traffic the device",
            "sends anyway could not be told apart from the event by comparison. Patterns that",
            "repeat as several flows in every recording, spread beyond the event's burst, are",
            "listed as likely background below; record the device idle and pass it as a baseline",
            "to be sure.",
            "",
        ]
    events = s.event_patterns
    lines += [RULE, f"Event patterns, in event order ({len(events)})", RULE, ""]
    if events.empty:
        lines += ["None: the recordings have no flow in common that is not background.", ""]
    for number, row in enumerate(events.itertuples(), 1):
        lines += _block(number, row, s)
    background = s.background_patterns
    title = (
        "Background patterns (seen without the event too)"
        if s.baseline_given
        else "Likely background patterns (repeating throughout each recording)"
    )
    lines += [RULE, f"{title} ({len(background)})", RULE, ""]
    if background.empty:
        lines += ["None.", ""]
    for number, row in enumerate(background.itertuples(), 1):
        lines += _block(number, row, s)
    lines += [RULE, f"Left out: seen in too few recordings ({len(s.noise)} fingerprints)", RULE, ""]
    if s.noise.empty:
        lines.append("None.")
    for row in s.noise.head(NOISE_LISTED).itertuples():  # the nearest misses first
        lines.append(
            f"- {_summary_line(row, s)}: in {row.recordings_seen}/{len(s.recordings)} "
            f"recordings ({row.flows} flow{'s' if row.flows != 1 else ''})"
        )
    if len(s.noise) > NOISE_LISTED:
        rest = s.noise.iloc[NOISE_LISTED:]
        lines.append(
            f"- and {len(rest)} more, each in at most {rest['recordings_seen'].max()}/"
            f"{len(s.recordings)} recordings ({rest['flows'].sum()} flows)"
        )
    # Names come from packets: a newline in one must not start a line of its own.
    return "\n".join(printable(line) for line in lines) + "\n"


def _needed(signature) -> int:
    return max(1, math.ceil(signature.support * len(signature.recordings) - 1e-9))


def _block(number: int, row, s) -> list[str]:
    device = f"device {s.device_ip}"
    remote = describe_remote(row)
    device_opens = row.device_side == "orig"
    arrow = f"{device}  ->  {remote}" if device_opens else f"{remote}  ->  {device}"
    opener = "the device opens the flow" if device_opens else "the remote party opens the flow"
    burst = getattr(row, "unit", "flow") == "burst"
    if burst:
        opener = (
            "a burst of messages inside a connection the "
            + ("device" if device_opens else "remote party")
            + " opened before"
        )
    lines = [f"{number}. {row.pattern}", f"   {arrow}   ({opener})"]
    where = _where(row.remote_addrs)
    if where:
        lines.append(f"   where: {where}")
    lines.append(f"   protocol: {_protocol(row)}")
    application = application_text(row)
    if application:
        lines.append(f"   application: {application}")
    offset = (
        ""
        if pd.isna(row.start_offset_median)
        else f", starts {row.start_offset_median:+.3f} s after the event's first flow (median)"
    )
    if s.variants:
        route = s.variants[int(row.variant) - 1]
        lines.append(
            f"   variant {row.variant} of {len(s.variants)}: the route the event took "
            f"in {len(route)} recordings ({', '.join(route)})"
        )
    lines.append(f"   seen in {row.recordings_seen}/{row.recordings_total} recordings{offset}")
    flows = _range(row.flows_min, row.flows_max)
    lines.append(f"   {'bursts' if burst else 'flows'} per recording: {flows}")
    sent, received = ("orig", "resp") if device_opens else ("resp", "orig")

    def both(metric_low: str, metric_high: str, unit: str = "") -> str:
        by_device = _range(
            getattr(row, metric_low.format(sent)), getattr(row, metric_high.format(sent))
        )
        by_remote = _range(
            getattr(row, metric_low.format(received)), getattr(row, metric_high.format(received))
        )
        return f"sent by the device {by_device}{unit}, by the remote party {by_remote}{unit}"

    lines.append(f"   packets: {both('{}_pkts_min', '{}_pkts_max')}")
    lines.append(f"   bytes: {both('{}_frame_bytes_min', '{}_frame_bytes_max')}")
    lines.append(f"   packet sizes: {both('{}_size_min_min', '{}_size_max_max', ' bytes')}")
    lines.append(f"   duration: {_range(row.duration_min, row.duration_max, seconds=True)}")
    profile = _profile_words(row.packet_profile, device_opens)
    if profile:
        lines.append(f"   packet profile (first packets with payload, frame bytes): {profile}")
    accepted = _profile_words(getattr(row, "accepted_profile", ""), device_opens)
    if accepted:
        lines.append(
            f"   accepted in detection: {accepted} (a message's size varies with its content, "
            "up to what the device sends at other times)"
        )
    if burst:
        lines.append(
            "   keep-alives (bursts of the connection that recur at its steady period) "
            + ("may match: the event itself recurs on a timer" if row.periodic else "never match")
        )
    reason = unexpressible(row)
    if reason:
        lines.append(f"   (left out of profile.yaml: {reason})")
    elif remote_name_problem(row):
        lines.append(f"   (profile.yaml gives its addresses: {remote_name_problem(row)})")
    return lines + [""]


def _where(addresses) -> str:
    """Country and organisation of the remote addresses (external ones the offline data
    knows), each place once: 'US, AMAZON-AES; IE, AMAZON-02'."""
    found = geo.lookup(a for a in str(addresses or "").split(";") if a)
    places = dict.fromkeys(
        geo.where(country, org)
        for country, org in zip(found["remote_country"], found["remote_org"])
    )
    return "; ".join(p for p in places if p)


def _profile_words(text, device_opens: bool) -> str:
    """'172 -115' -> 'remote party 172, device 115' (from the device's point of view)."""
    words = []
    for low, high in parse_profile(text):
        by_originator = low > 0
        who = "device" if by_originator == device_opens else "remote party"
        low, high = sorted((abs(low), abs(high)))
        words.append(f"{who} {low:.0f}" + (f" to {high:.0f}" if high > low else ""))
    return ", ".join(words)


def _protocol(row) -> str:
    proto = str(row.proto).upper()
    if pd.isna(row.server_port):
        return proto
    who = "the device" if row.server_side == "device" else "the remote party"
    return f"{proto} port {int(row.server_port)} (served by {who})"


def _summary_line(row, s) -> str:
    remote = row.remote
    port = "" if pd.isna(row.server_port) or row.server_port < 0 else f"/{int(row.server_port)}"
    app = application_text(row)
    direction = "device -> " if row.device_side == "orig" else "-> device from "
    return f"{str(row.proto).upper()}{port} {direction}{remote}" + (f" [{app}]" if app else "")


def _range(low, high, seconds: bool = False) -> str:
    if pd.isna(low) or pd.isna(high):
        return "-"
    fmt = (lambda v: f"{v:.3f} s") if seconds else (lambda v: f"{int(v)}")
    return fmt(low) if low == high else f"{fmt(low)} to {fmt(high)}"
