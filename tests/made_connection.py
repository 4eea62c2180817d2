"""A made capture of a device that keeps one TCP connection to its cloud open all day: a
keep-alive exchange every minute and, now and then, a user's command inside it (a lock's
'lock' or 'unlock'): the cloud sends the same 213-byte command for both, the device's reply
tells them apart. Optionally every packet is delayed by 0.5-2 s of network delay and jitter.
The pcap is written by text2pcap (Wireshark's own tool); the event log is a CSV of UTC
times. Only documentation addresses (RFC 5737) are used."""

from __future__ import annotations

import random
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packet_bytes import (
    ethernet,
    ipv4_header,
    transport_packet,
    udp_segment,
    write_timed_capture,
)

DEVICE, CLOUD, GATEWAY = "192.0.2.20", "203.0.113.10", "192.0.2.1"
DEVICE_MAC, GATEWAY_MAC = "02:00:00:00:00:20", "02:00:00:00:00:01"
DEVICE_PORT, CLOUD_PORT = 51000, 8883
CLOUD_NAME = "cloud.example.net"
START = 1_700_000_000.0
KEEPALIVE_PERIOD = 60.0
COMMAND, LOCK_REPLY, UNLOCK_REPLY, OTHER_REPLY = 213, 120, 140, 160  # TCP payload bytes


@dataclass
class Made:
    pcap: Path
    log: Path
    events: list[tuple[float, str]]  # (listed time, 'lock' or 'unlock')


def _frame(from_device: bool, flags: str, payload_len: int) -> bytes:
    src, dst = (DEVICE, CLOUD) if from_device else (CLOUD, DEVICE)
    sport, dport = (DEVICE_PORT, CLOUD_PORT) if from_device else (CLOUD_PORT, DEVICE_PORT)
    bits = sum({"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}[f] for f in flags)
    header = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, bits, 65535, 0, 0)
    packet = transport_packet(src, dst, 6, header, 16, bytes(payload_len))
    frame = ethernet(packet, src=DEVICE_MAC if from_device else GATEWAY_MAC)
    if not from_device:  # to the device's MAC
        frame = bytes.fromhex(DEVICE_MAC.replace(":", "")) + frame[6:]
    return frame


def _dns_answer_frame() -> bytes:
    """The gateway's DNS answer to the device: CLOUD_NAME is CLOUD."""
    name = b"".join(bytes([len(p)]) + p.encode() for p in CLOUD_NAME.split(".")) + b"\0"
    answer = (
        struct.pack("!HHHHHH", 0x4242, 0x8180, 1, 1, 0, 0)
        + name
        + struct.pack("!HH", 1, 1)
        + b"\xc0\x0c"
        + struct.pack("!HHIH", 1, 1, 60, 4)
        + bytes(int(x) for x in CLOUD.split("."))
    )
    segment = udp_segment(GATEWAY, DEVICE, 53, 40053, answer)
    frame = ethernet(ipv4_header(GATEWAY, DEVICE, 17, len(segment)) + segment, src=GATEWAY_MAC)
    return bytes.fromhex(DEVICE_MAC.replace(":", "")) + frame[6:]


def _exchange(
    at: float, steps: list[tuple[float, bool, str, int]], rng: random.Random | None = None
) -> list[tuple[float, bytes]]:
    """The steps' frames (offset, sent by the device?, TCP flags, payload bytes). With
    `rng`, each packet from the cloud reaches the capture 0.5-2 s late (network delay and
    jitter on the path), and what the device sends after it waits for it."""
    frames, late = [], 0.0
    for offset, by_device, flags, size in steps:
        if rng is not None and not by_device:
            late += rng.uniform(0.5, 2.0)
        frames.append((at + offset + late, _frame(by_device, flags, size)))
    return frames


def make(
    folder: Path,
    hours: float = 16.0,
    events: int = 40,
    jitter: bool = False,
    seed: int = 1,
    name: str = "lock",
    same_reply: bool = False,
    other_reply_every: int = 0,
) -> Made:
    """The capture and its log: `events` commands at random times at least 5 minutes
    apart, lock and unlock alternating, each listed 0.5-3 s before its command arrives
    (a phone's log is not the network's clock). The connection opens first; the only DNS
    answer naming the cloud comes 100 s later (a device that resolved its cloud before).
    `same_reply`: the device answers lock and unlock alike; `other_reply_every`: every
    n-th command gets a third reply, neither lock's nor unlock's (told apart in most
    actions, not all)."""
    rng = random.Random(seed)
    delays = random.Random(seed + 1) if jitter else None  # the same events, delayed
    packets = _exchange(
        START,
        [
            (0.0, True, "S", 0),
            (0.05, False, "SA", 0),
            (0.10, True, "A", 0),
            (0.15, True, "PA", 180),
            (0.25, False, "PA", 90),
            (0.30, True, "A", 0),
        ],
    )
    packets.append((START + 100.0, _dns_answer_frame()))
    end = START + hours * 3600
    at = START + 20.0
    while at < end:  # the device's timer: a ping and its answer
        packets += _exchange(
            at, [(0.0, True, "PA", 31), (0.06, False, "PA", 31), (0.1, True, "A", 0)], delays
        )
        at += KEEPALIVE_PERIOD
    listed, times = [], []
    while len(times) < events:
        t = rng.uniform(START + 300, end - 300)
        if all(abs(t - u) > 300 for u in times):
            times.append(t)
    for number, t in enumerate(sorted(times)):
        kind = "lock" if number % 2 == 0 else "unlock"
        reply = LOCK_REPLY if kind == "lock" or same_reply else UNLOCK_REPLY
        if other_reply_every and number % other_reply_every == other_reply_every - 1:
            reply = OTHER_REPLY
        arrives = t + rng.uniform(0.5, 3.0)
        packets += _exchange(
            arrives,
            [
                (0.0, False, "PA", COMMAND),
                (0.08, True, "PA", reply),
                (0.14, False, "A", 0),
                (0.35, True, "PA", 60),
                (0.42, False, "PA", 40),
                (0.47, True, "A", 0),
            ],
            delays,
        )
        listed.append((t, kind))
    packets.sort(key=lambda p: p[0])
    pcap = folder / f"{name}.pcap"
    write_timed_capture(packets, pcap)
    log = folder / f"{name}-events.csv"
    log.write_text("time,event\n" + "".join(f"{_iso(t)},{kind}\n" for t, kind in listed))
    return Made(pcap, log, listed)


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def halves(made: Made, folder: Path, jittered: Made | None = None) -> dict:
    """The log cut at its middle: the first half's capture and log to learn from, the
    second half's (of `jittered` when given: the same events, delayed) to detect in."""
    times = sorted(t for t, _ in made.events)
    middle = (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
    cut = _iso(middle).replace("T", " ").rstrip("Z")[:19]
    parts = {}
    for part, flag, source in (("first", "-B", made), ("second", "-A", jittered or made)):
        pcap = folder / f"{part}.pcap"
        subprocess.run(  # (editcap reads the time in the local zone)
            ["editcap", flag, cut, str(source.pcap), str(pcap)], check=True, env={"TZ": "UTC"}
        )
        log = folder / f"{part}.csv"
        lines = source.log.read_text().splitlines()
        keep = [
            line
            for line, (t, _) in zip(lines[1:], source.events)
            if (t < middle) == (part == "first")
        ]
        log.write_text("\n".join([lines[0], *keep]) + "\n")
        parts[part] = (pcap, log)
    return parts
