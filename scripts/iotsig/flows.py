"""Packets CSV -> flows CSV: one row per flow, Zeek conn.log style, all in vectorised pandas.

A flow is the packets of one 5-tuple (both directions) of one capture. It ends after
`idle_timeout` seconds without a packet, at a new TCP SYN once the connection was closed
(a FIN or RST since the previous SYN: port reuse; a retransmitted SYN stays in its flow), and
is cut every `max_duration` seconds counted from its first packet. SYN and SYN-ACK are
recognised with or without the ECN bits (E, C).
Non-IP frames are grouped by their addresses and protocol (ARP by sender/target IP).

A burst is a run of one flow's packets without a gap longer than `burst_gap` seconds: a
long-lived connection (a lock's MQTT/TLS link to its cloud) carries many, its keep-alives
and, now and then, the few messages of a user event (BehavIoT's bursts, the feature
notebook's subflows). Bursts are built in the same pass as the flows (build).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import geo
from .fields import FLOW_FIELDS
from .parties import UNSPECIFIED_ADDRESSES, address_class, canonical_ip, canonical_ips
from .schema import BURSTS, FLOWS

DEFAULT_IDLE_TIMEOUT = 120.0  # NFStream's default idle timeout
DEFAULT_MAX_DURATION = 600.0
DEFAULT_BURST_GAP = 1.0  # seconds of silence inside a flow that end a burst (BehavIoT's)
FIRST_SIZES = 10
PORT_SPAN = 65537  # endpoint key = address code * PORT_SPAN + port + 1

# Columns the flow builder reads from a packets CSV: the packet's own, and what names the
# remote party (DNS answers, TLS server name, HTTP host). The other application fields are
# carried into the flows where the packets CSV has them.
PACKET_COLUMNS = [  # (what features.py cuts its units from)
    "capture",
    "frame_number",
    "ts",
    "frame_len",
    "eth_src",
    "eth_dst",
    "ip_src",
    "ip_dst",
    "l4_proto",
    "src_port",
    "dst_port",
    "tcp_flags",
    "l4_payload_len",
]
REQUIRED = [
    *PACKET_COLUMNS,
    "highest_layer",
    "dns_qry_name",
    "dns_flags_response",
    "dns_answer_addrs",
    "http_host",
    "tls_server_name",
]
OPTIONAL = [
    "eth_src_vendor",
    "eth_dst_vendor",
    "direction",
    *[f for f in FLOW_FIELDS if f not in REQUIRED],
]
GENERIC_LAYERS = {
    "",
    "eth",
    "sll",
    "ip",
    "ipv6",
    "tcp",
    "udp",
    "data",
    "icmp",
    "icmpv6",
    "arp",
    "igmp",
    "ethertype",
    "llc",
    "vlan",
    "_ws.malformed",
    "_ws.short",
    # content carried by a protocol, not a protocol of its own
    "x509ce",
    "x509af",
    "x509sat",
    "x509if",
    "pkix1explicit",
    "pkix1implicit",
    "ocsp",
    "cms",
    "ber",
    "image-jfif",
    "image-gif",
    "png",
    "media",
    "data-text-lines",
    "xml",
    "urlencoded-form",
    "mime_multipart",
}


@dataclass
class FlowOptions:
    """How flows are built (stream-identifier's flags): seconds, and the device's
    addresses (one address or several; each checked and written canonically)."""

    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_duration: float = DEFAULT_MAX_DURATION
    device_ips: tuple[str, ...] = ()
    burst_gap: float = DEFAULT_BURST_GAP

    def __post_init__(self):
        addresses = (self.device_ips,) if isinstance(self.device_ips, str) else self.device_ips
        try:
            self.device_ips = tuple(str(ipaddress.ip_address(a.strip())) for a in addresses)
        except (ValueError, AttributeError):
            raise ValueError(
                f"device_ips: {self.device_ips!r} is not an IP address or a sequence of them"
            ) from None
        for name in ("idle_timeout", "max_duration", "burst_gap"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(
                    f"{name}: a positive number of seconds, not {getattr(self, name)!r}"
                )

    def settings(self) -> dict:
        """What a signature keeps of how its flows were built."""
        return {
            "idle_timeout": self.idle_timeout,
            "max_duration": self.max_duration,
            "burst_gap": self.burst_gap,
        }


@dataclass
class Built:
    flows: pd.DataFrame
    bursts: pd.DataFrame  # empty when not asked for


def bursts_beside(flows_csv) -> Path:
    """The bursts CSV beside a flows CSV: <name>.bursts.csv for <name>.flows.csv (any other
    CSV: its stem)."""
    name = Path(flows_csv).name
    stem = name[: -len(".flows.csv")] if name.endswith(".flows.csv") else Path(name).stem
    return Path(flows_csv).parent / f"{stem}.bursts.csv"


def build_flows(packets: pd.DataFrame, options: FlowOptions | None = None) -> pd.DataFrame:
    """Packets (as read by csvio.read_table) -> flows, ordered by first packet."""
    return build(packets, options, bursts=False).flows


def build(packets: pd.DataFrame, options: FlowOptions | None = None, bursts: bool = True) -> Built:
    """Packets (as read by csvio.read_table) -> flows ordered by first packet, and their
    bursts ordered by first packet, keep-alives marked (the BURSTS columns)."""
    options = options or FlowOptions()
    if packets.empty:
        return Built(pd.DataFrame(columns=FLOWS.names), pd.DataFrame(columns=BURSTS.names))
    p = prepare(packets)
    built = build_of(p, options, cross_flow([evidence(p, options)], options), bursts)
    return Built(with_uids(built.flows, 0), finished_bursts(built.bursts, 0))


def flows_of(p: Packets, options: FlowOptions, shared: CrossFlow) -> pd.DataFrame:
    """The flows of packets that hold whole conversations (all packets, or a partition of
    them by conversation_hash), with what is shared across flows given: ordered by first
    packet (time, then row), without uid, with the row of each flow's first packet in
    `first_row` (the rows p was prepared with)."""
    return build_of(p, options, shared, bursts=False).flows


def build_of(p: Packets, options: FlowOptions, shared: CrossFlow, bursts: bool = True) -> Built:
    """flows_of, and (with `bursts`) the flows' bursts, each with the number of its flow
    in `flow` (its place among these flows) and its first packet's row in `first_row`:
    without uids and keep-alive marks (finished_bursts adds them)."""
    rows, flow, continued, chunk_start = _assign_flows(p, options)
    s = _in_flow_order(p, rows, flow)
    tcp = values_at(p["l4_proto"], rows[_flow_starts(flow)]) == "tcp"
    is_orig = _orient(s, tcp)
    flows = _aggregate(s, p, is_orig)
    _label_device(flows, s, p, is_orig, options)
    _name_remote(flows, shared)
    flows["first_row"] = p.rows[s["row"][_flow_starts(s["flow"])]]
    flows["chunk_start"] = chunk_start  # (not a CSV column: live.py resumes segments by it)
    found = _bursts(s, p, is_orig, flows, continued, options) if bursts else pd.DataFrame()
    return Built(flows, found)


def with_uids(flows: pd.DataFrame, before: int) -> pd.DataFrame:
    """Flows (of flows_of, in the CSV's order, `before` flows written ahead of them) with
    their uid, capture#N, N their number in the CSV, and the CSV's columns."""
    numbers = pd.Series(np.arange(before + 1, before + len(flows) + 1), index=flows.index)
    flows = flows.assign(uid=flows["capture"] + "#" + numbers.astype(str))
    return flows.reindex(columns=FLOWS.names)


def finished_bursts(bursts: pd.DataFrame, before: int) -> pd.DataFrame:
    """Bursts (of build_of; `before` flows ahead of theirs in the flows CSV) in the CSV's
    order, with their uids (the flow's uid, '/', the burst's number in it), keep-alives
    marked, and the BURSTS columns."""
    if bursts.empty:
        return pd.DataFrame(columns=BURSTS.names)
    order = np.lexsort((bursts["first_row"].to_numpy(), bursts["ts"].to_numpy()))
    bursts = bursts.take(order).reset_index(drop=True)
    numbers = (bursts["flow"].to_numpy() + before + 1).astype(str).astype(object)
    flow_uid = bursts["capture"].to_numpy(dtype=object) + "#" + numbers
    columns = {
        "uid": flow_uid + "/" + bursts["burst"].to_numpy().astype(str).astype(object),
        "flow_uid": flow_uid,
        **{c: bursts[c].to_numpy() for c in BURSTS.names if c in bursts},
    }
    columns.update(keepalives(bursts))
    return pd.DataFrame(columns, columns=BURSTS.names)


# Text columns stay pandas categoricals throughout: a million packets carry a few thousand
# distinct strings, and integer codes sort, group and compare fast in little memory.
TEXT_COLUMNS = [
    "capture",
    "l4_proto",
    "tcp_flags",
    "highest_layer",
    "eth_src",
    "eth_dst",
    "ip_src",
    "ip_dst",
    "direction",
    "eth_src_vendor",
    "eth_dst_vendor",
    *FLOW_FIELDS,
    "dns_flags_response",
    "dns_answer_addrs",
]
# What the flow statistics read packet by packet, gathered in flow order; the text columns
# stay in capture order and are looked up by row (most are empty in most packets).
FLOW_ORDER_COLUMNS = [
    "ts",
    "frame_len",
    "frame_number",
    "src_port",
    "dst_port",
    "l4_payload_len",
    "src_addr",
    "dst_addr",
    "src_key",
    "dst_key",
    "syn",
    "syn_ack",
]


def _categorical(packets: pd.DataFrame, name: str, n: int) -> pd.Series:
    if name not in packets:
        return pd.Series(pd.Categorical.from_codes(np.zeros(n, np.int8), [""]))
    column = packets[name]
    if pd.api.types.is_numeric_dtype(column):  # e.g. icmp_type read as a number: 3, not 3.0
        codes, uniques = pd.factorize(column)  # spelled once per distinct number
        labels = [f"{u:.0f}" if float(u).is_integer() else repr(u) for u in uniques]
        codes = np.where(codes < 0, len(labels), codes)
        return pd.Series(pd.Categorical.from_codes(codes, pd.Index(labels + [""]).unique()))
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object).where(column.notna(), "").astype(str).astype("category")
    elif column.isna().any() or "" not in column.cat.categories:
        column = column.cat.add_categories([""]) if "" not in column.cat.categories else column
        column = column.fillna("")
    return column


def _respelled(column: pd.Series, spell) -> pd.Series:
    """The categorical column with each category spelled by `spell`; categories that come
    out the same are merged."""
    categories = column.cat.categories
    spelled = [spell(c) for c in categories]
    if spelled == list(categories):
        return column
    codes, uniques = pd.factorize(np.array(spelled, dtype=object))
    return pd.Series(pd.Categorical.from_codes(codes[column.cat.codes.to_numpy()], uniques))


def values_at(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """The strings of a categorical column at some rows, as an object array."""
    categories = np.asarray(column.cat.categories, dtype=object)
    return categories[column.cat.codes.to_numpy()[rows]]


class Packets(dict):
    """The packets' columns by name, in capture order: text as categorical Series, numbers
    as numpy arrays (a dict, not a DataFrame, which would copy each column put in it), the
    vocabulary that src_addr and dst_addr index, and each packet's row in the packets CSV
    (what orders flows that start at the same time)."""

    addresses: np.ndarray
    rows: np.ndarray


def prepare(packets: pd.DataFrame, rows: np.ndarray | None = None) -> Packets:
    """The packets' columns as the builder reads them; rows: their rows in the whole
    packets CSV, in increasing order (default 0, 1, ...: the table is the whole CSV)."""
    n = len(packets)
    if not packets.index.equals(pd.RangeIndex(n)):  # e.g. several CSVs concatenated
        packets = packets.reset_index(drop=True)
    p = Packets()
    p.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    for name in TEXT_COLUMNS:
        p[name] = _categorical(packets, name, n)
    # One spelling per address, as tshark writes them, whatever a person typed in a CSV.
    for name, spell in (
        ("ip_src", canonical_ip),
        ("ip_dst", canonical_ip),
        ("eth_src", str.lower),
        ("eth_dst", str.lower),
        ("dns_answer_addrs", canonical_ips),
    ):
        p[name] = _respelled(p[name], spell)
    for name in ("ts", "frame_len", "frame_number", "src_port", "dst_port", "l4_payload_len"):
        p[name] = pd.to_numeric(packets[name], errors="coerce").to_numpy(dtype=float)
    for name in ("ts", "frame_len", "l4_payload_len"):
        p[name] = np.nan_to_num(p[name], nan=0.0)
    # Address of each side: IP when there is one (ARP sender/target IP too), else MAC;
    # all four columns coded against one vocabulary so that the two sides compare.
    vocabulary = pd.Index(
        pd.unique(
            np.concatenate(
                [
                    np.asarray(p[c].cat.categories, dtype=object)
                    for c in ("ip_src", "ip_dst", "eth_src", "eth_dst")
                ]
            )
        )
    )

    def coded(name):
        return vocabulary.get_indexer(p[name].cat.categories)[p[name].cat.codes.to_numpy()]

    ip_src, ip_dst = coded("ip_src"), coded("ip_dst")
    empty = vocabulary.get_loc("") if "" in vocabulary else -2
    p["src_addr"] = np.where(ip_src != empty, ip_src, coded("eth_src")).astype(np.int64)
    p["dst_addr"] = np.where(ip_dst != empty, ip_dst, coded("eth_dst")).astype(np.int64)
    p.addresses = np.asarray(vocabulary, dtype=object)
    src_port = np.nan_to_num(p["src_port"], nan=-1).astype(np.int64)
    dst_port = np.nan_to_num(p["dst_port"], nan=-1).astype(np.int64)
    p["src_key"] = p["src_addr"] * PORT_SPAN + src_port + 1
    p["dst_key"] = p["dst_addr"] * PORT_SPAN + dst_port + 1
    p["syn"], p["syn_ack"], p["closing"] = _tcp_kinds(p["tcp_flags"])
    if RESUMES in packets:  # (live.py's, never a CSV's)
        p[RESUMES] = pd.to_numeric(packets[RESUMES], errors="coerce").to_numpy(dtype=float)
    return p


# A live watch (live.py) lets the packets of a long conversation's finished max_duration
# chunks go: the first packet it keeps of such a conversation carries, in this column, where
# the segment's next chunk starts, so that the chunks after it are cut where a whole
# capture's are, and its first flow continues the one before (no new opening).
RESUMES = "resumes_chunk_at"


def _assign_flows(p: Packets, options: FlowOptions) -> tuple[np.ndarray, ...]:
    """The packets in flow order, flows numbered by their first packet and packets in time
    order within a flow: for each, its row in p and its flow number; and for each flow
    whether it continues the one before it in its conversation (cut by max_duration), and
    when its max_duration chunk started."""
    # Conversation: capture, protocol and both endpoints (lower key first); sorted by it,
    # then time. lexsort is stable: packets at the same time keep their capture order.
    conversation = [
        p["capture"].cat.codes.to_numpy(),
        p["l4_proto"].cat.codes.to_numpy(),
        np.minimum(p["src_key"], p["dst_key"]),
        np.maximum(p["src_key"], p["dst_key"]),
    ]
    order = np.lexsort([p["ts"], *reversed(conversation)])
    same = np.ones(len(order), dtype=bool)
    same[0] = False
    for key in conversation:
        in_order = key[order]
        same[1:] &= in_order[1:] == in_order[:-1]
    ts = p["ts"][order]
    syn, closing = p["syn"][order], p["closing"][order]
    gap = np.r_[np.inf, np.diff(ts)]
    new_flow = ~same | (gap > options.idle_timeout)
    # Port reuse: a SYN starts a new flow when a FIN or RST came after the previous SYN of
    # the same segment (or after the segment's start): not for a retransmitted SYN.
    closes_before = np.cumsum(closing) - closing
    first_row = np.flatnonzero(new_flow)[np.cumsum(new_flow) - 1]
    syn_rows = np.flatnonzero(syn)
    previous_syn = np.r_[0, syn_rows[:-1]]
    follows_syn = np.r_[False, first_row[syn_rows[1:]] == first_row[syn_rows[:-1]]]
    since = np.where(follows_syn, closes_before[previous_syn], closes_before[first_row[syn_rows]])
    new_flow[syn_rows[closes_before[syn_rows] > since]] = True
    cut_by_time = new_flow.copy()
    segment = np.cumsum(new_flow)
    segment_first = np.flatnonzero(new_flow)
    origin = ts[segment_first]
    resumed = np.zeros(len(order), dtype=bool)
    if RESUMES in p:  # a conversation's first packet kept by a live watch (RESUMES)
        given = p[RESUMES][order][segment_first]
        at = ~np.isnan(given) & ~same[segment_first]
        origin[at] = given[at]
        resumed[segment_first[at]] = True
    segment_start = origin[segment - 1]
    chunk = np.floor((ts - segment_start) / options.max_duration).astype(np.int64)
    new_flow |= np.r_[False, (chunk[1:] != chunk[:-1]) & same[1:]]
    # Number the flows by (first timestamp, first row) so the CSV reads in time order, and
    # move each flow's run of packets to its place: no second sort of a million packets.
    starts = np.flatnonzero(new_flow)
    lengths = np.diff(np.r_[starts, len(order)])
    by_first = np.lexsort((order[starts], ts[starts]))
    place = np.empty(len(starts), np.int64)
    place[by_first] = np.cumsum(lengths[by_first]) - lengths[by_first]
    flow_in_order = np.cumsum(new_flow) - 1
    rows = np.empty_like(order)
    rows[place[flow_in_order] + np.arange(len(order)) - starts[flow_in_order]] = order
    continued = (~cut_by_time[starts] | resumed[starts])[by_first]
    chunk_start = (segment_start + chunk * options.max_duration)[starts][by_first]
    return rows, np.repeat(np.arange(len(starts)), lengths[by_first]), continued, chunk_start


def packets_in_flows(p: Packets, options: FlowOptions) -> tuple[np.ndarray, ...]:
    """The packets in flow order, flows numbered as build numbers them (the flows CSV's
    order) and packets in time order within a flow: each packet's row in p, its flow, and
    whether its flow's originator sent it. What features.py cuts its units from, without
    the flows' statistics."""
    rows, flow = _assign_flows(p, options)[:2]
    names = ("src_key", "dst_key", "src_port", "dst_port", "syn", "syn_ack")
    s = {"flow": flow, **{name: p[name][rows] for name in names}}
    tcp = values_at(p["l4_proto"], rows[_flow_starts(flow)]) == "tcp"
    return rows, flow, _orient(s, tcp)


def conversation_hash(p: Packets) -> np.ndarray:
    """A 64-bit number per packet, the same for all the packets of one conversation as
    _assign_flows groups them (capture, protocol and both endpoints, either way round):
    what partitions packets so that a partition holds whole conversations. Computed from
    the values as spelled, not from codes, so that chunks prepared apart agree."""
    address = _hashed(p.addresses)
    src = _mixed(address[p["src_addr"]] + _port_number(p["src_port"]) * _GOLDEN)
    dst = _mixed(address[p["dst_addr"]] + _port_number(p["dst_port"]) * _GOLDEN)
    capture = _hashed(p["capture"].cat.categories)[p["capture"].cat.codes.to_numpy()]
    proto = _hashed(p["l4_proto"].cat.categories)[p["l4_proto"].cat.codes.to_numpy()]
    return _mixed(src + dst + _mixed(capture) + _mixed(_mixed(proto)))  # src + dst: symmetric


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _hashed(values) -> np.ndarray:
    """A stable 64-bit number per string (Python's hash() changes from run to run)."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little")
            for v in values
        ],
        dtype=np.uint64,
    )


def _port_number(ports: np.ndarray) -> np.ndarray:
    return (np.nan_to_num(ports, nan=-1).astype(np.int64) + 1).astype(np.uint64)


def _mixed(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit (uint64 wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _in_flow_order(p: Packets, rows: np.ndarray, flow: np.ndarray) -> dict[str, np.ndarray]:
    """The packets' numbers in flow order, with each packet's row in p."""
    return {"row": rows, "flow": flow, **{name: p[name][rows] for name in FLOW_ORDER_COLUMNS}}


def _tcp_kinds(flags: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per packet: SYN (without ACK), SYN-ACK, and FIN or RST; the ECN bits (E, C) of an
    ECN-setup SYN or SYN-ACK are ignored. Decided once per distinct flags value."""
    categories = [str(c).replace("E", "").replace("C", "") for c in flags.cat.categories]
    codes = flags.cat.codes.to_numpy()

    def table(test):
        return np.array([test(c) for c in categories] + [False])[codes]  # code -1: none

    return (
        table(lambda c: c == "S"),
        table(lambda c: c == "SA"),
        table(lambda c: "F" in c or "R" in c),
    )


def _flow_starts(flow: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, flow[1:] != flow[:-1]])


def _orient(s: dict[str, np.ndarray], tcp: np.ndarray) -> np.ndarray:
    """orig = sender of the TCP SYN, else receiver of the SYN-ACK, else the first packet's
    sender; a first packet from a well-known port to a high one is taken for a reply, and
    so is a TCP flow's first packet from the lower port (a connection open before the
    capture, or its later chunks: the server's port is below its client's ephemeral one,
    so every chunk of a days-long connection is oriented alike). `tcp`: per flow."""
    flow = s["flow"]
    starts = _flow_starts(flow)
    orig_key = s["src_key"][starts].copy()
    first_src_port = s["src_port"][starts]
    first_dst_port = s["dst_port"][starts]
    looks_reply = ((first_src_port < 1024) & (first_dst_port >= 1024)) | (
        tcp & (first_src_port < first_dst_port)
    )
    orig_key[looks_reply] = s["dst_key"][starts][looks_reply]
    for kind, key in (("syn_ack", "dst_key"), ("syn", "src_key")):  # SYN wins over SYN-ACK
        rows = np.flatnonzero(s[kind])
        if len(rows):
            first_rows = pd.Series(rows).groupby(flow[rows]).first()
            orig_key[first_rows.index.to_numpy()] = s[key][first_rows.to_numpy()]
    return s["src_key"] == orig_key[flow]


def _aggregate(s: dict[str, np.ndarray], p: Packets, is_orig: np.ndarray) -> pd.DataFrame:
    addresses = p.addresses
    flow, rows = s["flow"], s["row"]
    starts = _flow_starts(flow)
    n = len(starts)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    out["capture"] = values_at(p["capture"], rows[starts])
    out["uid"] = out["capture"] + "#" + pd.Series(np.arange(1, n + 1)).astype(str)
    ts = s["ts"]
    out["ts"] = np.minimum.reduceat(ts, starts)
    out["duration"] = np.round(np.maximum.reduceat(ts, starts) - out["ts"].to_numpy(), 6)
    out["proto"] = values_at(p["l4_proto"], rows[starts])

    # Endpoints: from the first packet, swapped where it was sent by the responder.
    first_is_orig = is_orig[starts]
    src_addr, dst_addr = s["src_addr"][starts], s["dst_addr"][starts]
    src_port, dst_port = s["src_port"][starts], s["dst_port"][starts]
    out["orig_h"] = addresses[np.where(first_is_orig, src_addr, dst_addr)]
    out["resp_h"] = addresses[np.where(first_is_orig, dst_addr, src_addr)]
    out["orig_p"] = np.where(first_is_orig, src_port, dst_port)
    out["resp_p"] = np.where(first_is_orig, dst_port, src_port)

    sizes, payload = s["frame_len"], s["l4_payload_len"]
    for side, mask in (("orig", is_orig), ("resp", ~is_orig)):
        side_flow = flow[mask]
        counts = np.bincount(side_flow, minlength=n)
        out[f"{side}_pkts"] = counts
        for column, values in ((f"{side}_bytes", payload), (f"{side}_frame_bytes", sizes)):
            out[column] = np.bincount(side_flow, values[mask], minlength=n).astype(np.int64)
        for stat, values in _group_stats(side_flow, sizes[mask], n).items():
            out[f"{side}_size_{stat}"] = np.round(values, 3)
        side_ts = ts[mask]
        follows = np.zeros(len(side_flow), dtype=bool)  # (np.r_[False, ...] is 1 long when empty)
        follows[1:] = side_flow[1:] == side_flow[:-1]
        gaps = np.diff(side_ts, prepend=0.0)[follows]
        for stat, values in _group_stats(side_flow[follows], gaps, n).items():
            out[f"{side}_iat_{stat}"] = np.round(values, 6)
        # MAC and vendor of the side: from its first packet.
        side_rows = rows[mask]
        side_starts = _flow_starts(side_flow) if len(side_flow) else side_flow
        for column, source in (("mac", "eth_src"), ("vendor", "eth_src_vendor")):
            values = np.full(n, "", dtype=object)
            values[side_flow[side_starts]] = values_at(p[source], side_rows[side_starts])
            out[f"{side}_{column}"] = values
    # A responder that never sent: its MAC is the destination of the originator's packets.
    silent = (out["resp_mac"] == "").to_numpy()
    out.loc[silent, "resp_mac"] = values_at(p["eth_dst"], rows[starts[silent]])
    out.loc[silent, "resp_vendor"] = values_at(p["eth_dst_vendor"], rows[starts[silent]])

    frames = s["frame_number"]
    out["first_frame"] = np.fmin.reduceat(frames, starts)
    out["last_frame"] = np.fmax.reduceat(frames, starts)
    opening = np.maximum.reduceat((s["syn"] | s["syn_ack"]).astype(np.int8), starts)
    out["handshake"] = np.where(out["proto"].to_numpy() == "tcp", opening, np.nan)
    place = np.empty_like(rows)
    place[rows] = np.arange(len(rows))  # each row's place in flow order
    out["service"] = _distinct_per_flow(p["highest_layer"], place, s, n, skip=GENERIC_LAYERS)
    for name in FLOW_FIELDS:
        out[name] = _distinct_per_flow(p[name], place, s, n)
    out["first_sizes"] = _first_sizes(flow, starts, sizes, is_orig, n)
    out["first_payload_sizes"] = _first_payload_sizes(flow, sizes, payload, is_orig, n)
    return out


# Columns a burst takes from its flow: who talks, and who the device and the remote are.
BURST_FROM_FLOW = [
    "capture",
    "proto",
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "device_side",
    "orig_mac",
    "resp_mac",
    "remote_h",
    "remote_name",
    "remote_class",
]


# What a burst has of its own packets (the bursts CSV's columns that a flow has too): a
# burst that is its flow's only one has the flow's.
BURST_OWN = [
    c for c in BURSTS.names if c in FLOWS.by_name and c not in [*BURST_FROM_FLOW, "uid", "ts"]
]


def _bursts(
    s: dict[str, np.ndarray],
    p: Packets,
    is_orig: np.ndarray,
    flows: pd.DataFrame,
    continued: np.ndarray,
    options: FlowOptions,
) -> pd.DataFrame:
    """Each flow cut where its packets pause longer than options.burst_gap: one row per
    burst, with the counts, sizes, application fields and packet profile of its own
    packets and its flow's parties; `flow` is the flow's number among `flows`. A flow of
    one burst that opens its connection (most flows: a DNS query, a short connection) is
    its flows CSV row and no burst row; a flow of one burst inside a connection already
    open gives its own figures; the others' bursts are counted packet by packet."""
    flow, ts = s["flow"], s["ts"]
    flow_start = np.ones(len(flow), dtype=bool)
    flow_start[1:] = flow[1:] != flow[:-1]
    gap = np.diff(ts, prepend=-np.inf)
    new = flow_start | (gap > options.burst_gap)
    starts = np.flatnonzero(new)
    owner = flow[starts]
    first_in_flow = flow_start[starts]
    # A burst opens its connection when it is the first of a flow whose opening the
    # capture holds: a TCP handshake, or another protocol's first packet after silence.
    handshake = pd.to_numeric(flows["handshake"], errors="coerce").to_numpy()[owner]
    opens = first_in_flow & ~continued[owner] & (handshake != 0)
    several = np.bincount(owner, minlength=len(flows)) > 1
    listed = np.flatnonzero(several[owner] | ~opens)
    # (columns gathered in a dict, the frame made once: a column set at a time costs)
    out = {"flow": owner[listed]}
    number = np.arange(len(starts)) - np.flatnonzero(first_in_flow)[owner] + 1
    out["burst"] = number[listed]
    out["ts"] = ts[starts[listed]]
    out["gap_before"] = np.where(first_in_flow, np.nan, np.round(gap[starts], 6))[listed]
    for column in BURST_FROM_FLOW + BURST_OWN:
        out[column] = flows[column].to_numpy()[owner[listed]]
    out["opens"] = opens[listed].astype(np.int8)
    out["first_row"] = p.rows[s["row"][starts[listed]]]
    if several.any():
        mine = several[flow]  # the packets of flows of several bursts
        own = _burst_figures(s, p, is_orig, mine, new)
        # (the bursts of those flows, in order, are the first listed of their flows' rows)
        rows = np.flatnonzero(several[owner[listed]])
        for column in BURST_OWN:
            values = out[column].copy()
            values[rows] = own[column]
            out[column] = values
    return pd.DataFrame(out)


def _burst_figures(
    s: dict[str, np.ndarray], p: Packets, is_orig: np.ndarray, mine: np.ndarray, new: np.ndarray
) -> dict[str, np.ndarray]:
    """BURST_OWN of the bursts of the packets `mine` (whole flows, in flow order), one
    value per burst in order; `new`: where a burst starts."""
    ts, rows, flow_new = s["ts"][mine], s["row"][mine], new[mine]
    burst = np.cumsum(flow_new) - 1
    starts = np.flatnonzero(flow_new)
    n = len(starts)
    sizes, payload, is_orig = s["frame_len"][mine], s["l4_payload_len"][mine], is_orig[mine]
    last = np.r_[starts[1:], len(burst)] - 1
    own = {"duration": np.round(ts[last] - ts[starts], 6)}
    for side, mask in (("orig", is_orig), ("resp", ~is_orig)):
        side_burst = burst[mask]
        own[f"{side}_pkts"] = np.bincount(side_burst, minlength=n)
        for column, values in ((f"{side}_bytes", payload), (f"{side}_frame_bytes", sizes)):
            own[column] = np.bincount(side_burst, values[mask], minlength=n).astype(np.int64)
        stats = _group_stats(side_burst, sizes[mask], n)
        own[f"{side}_size_min"] = np.round(stats["min"], 3)
        own[f"{side}_size_max"] = np.round(stats["max"], 3)
    frames = s["frame_number"][mine]
    own["first_frame"] = np.fmin.reduceat(frames, starts)
    own["last_frame"] = np.fmax.reduceat(frames, starts)
    place = np.full(len(p.rows), -1, dtype=np.int64)
    place[rows] = np.arange(len(rows))
    by_burst = {"row": rows, "flow": burst}
    for name in FLOW_FIELDS:
        own[name] = _distinct_per_flow(p[name], place, by_burst, n)
    own["first_payload_sizes"] = _first_payload_sizes(burst, sizes, payload, is_orig, n)
    return own


# Keep-alives: bursts of one series (capture, protocol, the two parties, the server port and
# the largest frame each way, to KEEPALIVE_SIZE_BIN bytes) that recur at the series' steady
# period. The period is the gap between consecutive bursts of the series that most other
# gaps agree with (within KEEPALIVE_TOLERANCE); it must account for at least
# KEEPALIVE_MIN_GAPS gaps and KEEPALIVE_SHARE of them. A burst is a keep-alive when another
# one of its series comes one or two periods before or after it.
KEEPALIVE_SIZE_BIN = 16
KEEPALIVE_MIN_GAPS = 3
KEEPALIVE_SHARE = 0.25


def keepalive_tolerance(period: np.ndarray) -> np.ndarray:
    """Seconds a keep-alive may be off its period: timers are steady, the network is not
    (2.5 s of delay and jitter), and a long period drifts (0.2%)."""
    return np.maximum(2.5, 0.002 * period)


def keepalives(bursts: pd.DataFrame) -> dict[str, np.ndarray]:
    """`keepalive` (1/0) and `period` (seconds, for keep-alives) of each burst."""
    n = len(bursts)
    result = {"keepalive": np.zeros(n, np.int8), "period": np.full(n, np.nan)}
    if n < KEEPALIVE_MIN_GAPS + 1:
        return result
    series = keepalive_series(bursts)
    ts = bursts["ts"].to_numpy(float)
    order = np.lexsort((ts, series))
    series, ts = series[order], ts[order]
    period = series_periods(series, ts)[series]
    keepalive = near_period(series, ts, period, (1, 2, -1, -2))
    result["keepalive"][order] = keepalive
    result["period"][order] = np.where(keepalive, np.round(period, 3), np.nan)
    return result


def keepalive_series(bursts: pd.DataFrame) -> np.ndarray:
    """Each burst's series (a number): the same capture, protocol, parties, server port
    and largest frame each way (to KEEPALIVE_SIZE_BIN bytes)."""
    remote_h, resp_h = bursts["remote_h"].to_numpy(), bursts["resp_h"].to_numpy()
    near = np.where(remote_h == resp_h, bursts["orig_h"].to_numpy(), resp_h)
    name = bursts["remote_name"].fillna("").to_numpy()
    party = np.where(name != "", name, remote_h)
    key = [
        pd.factorize(np.asarray(c, dtype=object))[0]
        for c in (bursts["capture"], bursts["proto"], near, party)
    ]
    key.append(pd.factorize(bursts["resp_p"].fillna(-1).to_numpy())[0])
    for column in ("orig_size_max", "resp_size_max"):
        binned = np.nan_to_num(bursts[column].to_numpy(float), nan=-1) // KEEPALIVE_SIZE_BIN
        key.append(pd.factorize(binned)[0])
    return _series_ids(key)


def near_period(
    series: np.ndarray, ts: np.ndarray, period: np.ndarray, multiples: tuple
) -> np.ndarray:
    """Which bursts (sorted by series, then time; `period` each, NaN for none) have
    another of their series `multiples` of their period away (within the tolerance)."""
    found = np.zeros(len(ts), dtype=bool)
    steady = ~np.isnan(period)
    if not steady.any():
        return found
    period = np.nan_to_num(period)
    tolerance = keepalive_tolerance(period)
    # One sorted line of all the times, each series far from the others.
    span = float(ts.max() - ts.min()) + 4 * float(period.max()) + 10.0
    line = series * span + (ts - ts.min())
    for k in multiples:
        target = line + k * period
        low = np.searchsorted(line, target - abs(k) * tolerance, side="left")
        high = np.searchsorted(line, target + abs(k) * tolerance, side="right")
        found |= high > low
    return steady & found


def _series_ids(codes: list[np.ndarray]) -> np.ndarray:
    ids = codes[0].astype(np.int64)
    for column in codes[1:]:
        ids = pd.factorize(ids * (int(column.max()) + 1) + column)[0]
    return ids


def series_periods(series: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Each series' period (NaN where it has none), from its bursts sorted by series, time."""
    periods = np.full(int(series.max()) + 1, np.nan)
    same = series[1:] == series[:-1]
    gaps, owner = np.diff(ts)[same], series[1:][same]
    if not len(gaps):
        return periods
    order = np.lexsort((gaps, owner))
    gaps, owner = gaps[order], owner[order]
    span = float(gaps.max()) * 2 + 10.0
    line = owner * span + gaps
    tolerance = keepalive_tolerance(gaps)
    agreeing = np.searchsorted(line, line + tolerance, side="right") - np.searchsorted(
        line, line - tolerance, side="left"
    )
    frame = pd.DataFrame({"owner": owner, "gap": gaps, "agreeing": agreeing})
    best = frame.loc[frame.groupby("owner")["agreeing"].idxmax()]
    total = np.bincount(owner, minlength=len(periods))[best["owner"].to_numpy()]
    count = best["agreeing"].to_numpy()
    steady = (count >= KEEPALIVE_MIN_GAPS) & (count >= KEEPALIVE_SHARE * total)
    periods[best["owner"].to_numpy()[steady]] = best["gap"].to_numpy()[steady]
    return periods


def _group_stats(groups: np.ndarray, values: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """min, max, mean and population std of values per group (groups sorted), NaN where
    a group has none."""
    result = {stat: np.full(n, np.nan) for stat in ("min", "max", "mean", "std")}
    if not len(values):
        return result
    starts = _flow_starts(groups)
    present = groups[starts]
    counts = np.diff(np.r_[starts, len(groups)])
    total = np.add.reduceat(values, starts)
    mean = total / counts
    squares = np.add.reduceat(values * values, starts)
    result["min"][present] = np.minimum.reduceat(values, starts)
    result["max"][present] = np.maximum.reduceat(values, starts)
    result["mean"][present] = mean
    result["std"][present] = np.sqrt(np.maximum(squares / counts - mean * mean, 0.0))
    return result


def _distinct_per_flow(
    column: pd.Series, place: np.ndarray, s: dict[str, np.ndarray], n: int, skip: set | None = None
) -> np.ndarray:
    """Distinct non-empty values of each flow, ';'-joined in first-seen order. Only the
    packets that carry a value are looked at: most columns are empty in most packets."""
    wanted = np.append(~column.cat.categories.isin((skip or set()) | {""}), False)  # code -1
    result = np.full(n, "", dtype=object)
    hits = np.sort(place[np.flatnonzero(wanted[column.cat.codes.to_numpy()])])  # flow order
    hits = hits[hits >= 0]  # (-1: a packet left out, see _burst_figures)
    if not len(hits):
        return result
    which, value, vocabulary = _split_values(column, s["row"][hits])
    flow = s["flow"][hits][which]
    first = ~pd.Series(flow * len(vocabulary) + value).duplicated().to_numpy()
    groups, joined = _join_sorted(flow[first], vocabulary[value[first]], ";")
    result[groups] = joined
    return result


def _split_values(column: pd.Series, rows: np.ndarray):
    """The non-empty ';'-separated values of a categorical column at `rows` (a DNS answer
    holds several addresses), split once per distinct cell: for each value, the index in
    rows it comes from and its code in the vocabulary returned."""
    parts = [str(label).split(";") for label in column.cat.categories]
    codes, vocabulary = pd.factorize(np.array([v for x in parts for v in x], dtype=object))
    vocabulary = np.asarray(vocabulary, dtype=object)
    counts = np.array([len(x) for x in parts] + [0])  # code -1: no value
    first = np.cumsum(counts) - counts
    cells = column.cat.codes.to_numpy()[rows]
    per_row = counts[cells]
    which = np.repeat(np.arange(len(rows)), per_row)
    within = np.arange(len(which)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    value = codes[first[cells][which] + within]
    keep = vocabulary[value] != ""
    return which[keep], value[keep], vocabulary


def _join_sorted(groups: np.ndarray, values: np.ndarray, separator: str):
    """Join the values of each run of equal (sorted) group numbers: a list comprehension
    over slices is many times faster than groupby().agg(str.join)."""
    starts = _flow_starts(groups)
    bounds = np.r_[starts, len(groups)].tolist()
    items = values.tolist()
    joined = [separator.join(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return groups[starts], np.array(joined, dtype=object)


def _first_sizes(
    flow: np.ndarray, starts: np.ndarray, sizes: np.ndarray, is_orig: np.ndarray, n: int
) -> np.ndarray:
    position = np.arange(len(flow)) - np.repeat(starts, np.diff(np.r_[starts, len(flow)]))
    head = np.flatnonzero(position < FIRST_SIZES)
    signed = np.where(is_orig[head], sizes[head], -sizes[head]).astype(np.int64)
    return _spell_sizes(flow[head], signed, n)


def _first_payload_sizes(
    flow: np.ndarray, sizes: np.ndarray, payload: np.ndarray, is_orig: np.ndarray, n: int
) -> np.ndarray:
    """The signed frame lengths of each flow's first packets that carry payload (requests
    and replies: what tells apart two events that use the same flow, as in PingPong). A
    packet repeated at once, same direction and size, counts once: a retransmission or a
    capture's duplicate must not shift the sequence."""
    carrying = np.flatnonzero(np.nan_to_num(payload) > 0)
    if not len(carrying):
        return np.full(n, "", dtype=object)
    flow = flow[carrying]
    signed = np.where(is_orig[carrying], sizes[carrying], -sizes[carrying]).astype(np.int64)
    repeated = np.r_[False, (flow[1:] == flow[:-1]) & (signed[1:] == signed[:-1])]
    flow, signed = flow[~repeated], signed[~repeated]
    starts = _flow_starts(flow)
    position = np.arange(len(flow)) - np.repeat(starts, np.diff(np.r_[starts, len(flow)]))
    head = np.flatnonzero(position < FIRST_SIZES)
    return _spell_sizes(flow[head], signed[head], n)


def _spell_sizes(flow: np.ndarray, signed: np.ndarray, n: int) -> np.ndarray:
    """Each flow's sizes, space-separated; flows without any: ''."""
    codes, uniques = pd.factorize(signed)  # spelled once per distinct size
    spelled = np.array([str(u) for u in uniques], dtype=object)[codes]
    groups, joined = _join_sorted(flow, spelled, " ")
    result = np.full(n, "", dtype=object)
    result[groups] = joined
    return result


def _label_device(
    flows: pd.DataFrame,
    s: dict[str, np.ndarray],
    p: Packets,
    is_orig: np.ndarray,
    options: FlowOptions,
) -> None:
    if options.device_ips:
        orig = flows["orig_h"].isin(options.device_ips).to_numpy()
        resp = flows["resp_h"].isin(options.device_ips).to_numpy()
        # The device before it has its address (a DHCP DISCOVER from 0.0.0.0): the
        # translator's direction says whether it sent the flow (by its MAC).
        early = flows["orig_h"].isin(UNSPECIFIED_ADDRESSES).to_numpy() & ~(orig | resp)
        if early.any():
            orig = orig | (early & _sides_by_direction(len(flows), s, p, is_orig)[0])
    else:  # from the packets' direction column, when the translator was told the device
        orig, resp = _sides_by_direction(len(flows), s, p, is_orig)
    flows["device_side"] = np.select([orig, resp], ["orig", "resp"], "")
    flows["remote_h"] = np.where(flows["device_side"] == "resp", flows["orig_h"], flows["resp_h"])


def _sides_by_direction(count: int, s, p: Packets, is_orig: np.ndarray) -> tuple:
    """(device is orig, device is resp) per flow, by the packets' direction column: the
    side that sent most of the packets the translator saw the device send or receive."""
    rows = s["row"]
    sent = (p["direction"] == "sent").to_numpy()[rows]
    known = sent | (p["direction"] == "received").to_numpy()[rows]
    device_sent_as = pd.Series(np.where(sent, is_orig, ~is_orig))
    votes = device_sent_as[known].groupby(s["flow"][known]).mean()
    share = votes.reindex(range(count)).to_numpy()
    return share > 0.5, share < 0.5


def _name_remote(flows: pd.DataFrame, shared: CrossFlow) -> None:
    """One party, one name: the remote address is named by the capture's DNS answers to
    the device for it (the latest at or before the flow's start), else by the flow's own
    TLS server name, else by a DNS answer after the flow's start (a connection opened
    before the capture's first answer), else by the TLS server name of another connection
    to that address in the capture, else by the flow's HTTP host."""
    remote_is_orig = (flows["device_side"] == "resp").to_numpy()
    # The TLS/HTTP names belong to the server: only use them when the remote is the server.
    tls = np.where(remote_is_orig, "", _first_value(flows["tls_server_name"]))
    host = np.where(remote_is_orig, "", _first_value(flows["http_host"], strip=_PORT))
    before, after = _names_for_flows(flows, shared.dns_answers)
    tls_before, tls_after = _names_for_flows(flows, shared.server_names)
    other_tls = np.where(remote_is_orig, "", np.where(tls_before != "", tls_before, tls_after))
    name = before
    for fallback in (tls, after, other_tls, host):
        name = np.where(name != "", name, fallback)
    flows["remote_name"] = name
    flows["remote_class"] = _classify(flows["remote_h"].to_numpy(), shared.gateways)
    for column, values in geo.columns_for(flows["remote_h"].to_numpy()).items():
        flows[column] = values


_PORT = re.compile(r":\d+$")


def _first_value(cells: pd.Series, strip: re.Pattern | None = None) -> np.ndarray:
    """The first of each cell's ';'-separated values (without `strip`), once per distinct cell."""
    codes, uniques = pd.factorize(cells.to_numpy())
    firsts = [str(u).split(";")[0] for u in uniques]
    if strip:
        firsts = [strip.sub("", f) for f in firsts]
    return np.array(firsts + [""], dtype=object)[codes]


# ---------------------------------------------------------------------------------------
# What names and classes a flow's remote party beyond its own packets: the DNS answers the
# device received and who acts as its gateway. Gathered from each stretch of packets
# (evidence: all of them, or each chunk of a big packets CSV) and put together once
# (cross_flow), so that flows built partition by partition get the same names.
# ---------------------------------------------------------------------------------------


@dataclass
class Evidence:
    """What one stretch of packets (rows in CSV order) shows beyond its own flows."""

    dns_answers: pd.DataFrame  # capture, ts, addr, name, received: one row per answer address
    server_names: pd.DataFrame  # capture, ts, addr, name: the TLS server name a client sent
    directions_given: bool  # the packets CSV has a direction column that is filled in
    dns_servers: set[str]
    dhcp_servers: set[str]
    router_macs: set[str]  # the MACs that packets to external addresses go to
    mac_ips: set[tuple[str, str]]  # (eth_src, ip_src) of every packet


@dataclass
class CrossFlow:
    """What every flow is named and classed with, from all the packets: the DNS answers
    to the device (capture, ts, addr, name; in time order) and the gateway addresses."""

    dns_answers: pd.DataFrame
    gateways: set[str]
    server_names: pd.DataFrame  # capture, ts, addr, name; in time order


def evidence(p: Packets, options: FlowOptions) -> Evidence:
    def addresses(column: str, where) -> set[str]:
        return set(values_at(p[column], np.flatnonzero(np.asarray(where))))

    not_icmp = (p["l4_proto"] != "icmp").to_numpy()
    dns_servers = addresses("ip_dst", (p["dst_port"] == 53) & not_icmp)
    dns_servers |= addresses("ip_src", (p["src_port"] == 53) & not_icmp)
    categories = p["ip_dst"].cat.categories
    external = np.array([address_class(c) == "external" for c in categories] + [False])
    # Distinct (MAC, IP) senders, by codes: the router's IPs are those of its MACs.
    eth, ip = p["eth_src"], p["ip_src"]
    pairs = np.unique(
        eth.cat.codes.to_numpy().astype(np.int64) * (len(ip.cat.categories) + 1)
        + ip.cat.codes.to_numpy()
    )
    macs = np.asarray(eth.cat.categories, dtype=object)[pairs // (len(ip.cat.categories) + 1)]
    ips = np.asarray(ip.cat.categories, dtype=object)[pairs % (len(ip.cat.categories) + 1)]
    return Evidence(
        dns_answers=_dns_answers(p, options),
        server_names=_server_names(p),
        directions_given=bool((p["direction"] != "").any()),
        dns_servers=dns_servers,
        dhcp_servers=addresses("ip_src", p["dhcp_msg_type"].isin(["offer", "ack"])),
        router_macs=addresses("eth_dst", external[p["ip_dst"].cat.codes.to_numpy()]) - {""},
        mac_ips=set(zip(macs.tolist(), ips.tolist())),
    )


def combined(pieces: list[Evidence]) -> Evidence:
    """The evidence of consecutive stretches as one (what a chunked read keeps: the sets
    of addresses stay as small as the distinct addresses)."""
    found = [e.dns_answers for e in pieces if len(e.dns_answers)]
    return Evidence(
        dns_answers=pd.concat(found, ignore_index=True) if found else pieces[0].dns_answers,
        server_names=pd.concat([e.server_names for e in pieces], ignore_index=True),
        directions_given=any(e.directions_given for e in pieces),
        dns_servers=set().union(*(e.dns_servers for e in pieces)),
        dhcp_servers=set().union(*(e.dhcp_servers for e in pieces)),
        router_macs=set().union(*(e.router_macs for e in pieces)),
        mac_ips=set().union(*(e.mac_ips for e in pieces)),
    )


def cross_flow(pieces: list[Evidence], options: FlowOptions) -> CrossFlow:
    """The evidence of all the packets (pieces in CSV order) put together."""
    everything = combined(pieces)
    answers = everything.dns_answers
    # To the device, when it is known: by its address, else by the direction column.
    if not options.device_ips and everything.directions_given:
        answers = answers[answers["received"].to_numpy()]
    answers = answers.drop(columns="received").sort_values("ts", kind="stable")
    server_names = everything.server_names.sort_values("ts", kind="stable")
    return CrossFlow(answers, _gateways(everything), server_names)


def _dns_answers(p: Packets, options: FlowOptions) -> pd.DataFrame:
    """One row per address of each DNS answer (to the device's address when it is given):
    where it was received, when, the address and the query name."""
    answers = (p["dns_flags_response"] == "1") & (p["dns_answer_addrs"] != "")
    if options.device_ips:
        answers &= p["ip_dst"].isin(options.device_ips)
    rows = np.flatnonzero(answers.to_numpy())
    which, addr, vocabulary = _split_values(p["dns_answer_addrs"], rows)
    rows = rows[which]
    return pd.DataFrame(
        {
            "capture": values_at(p["capture"], rows),
            "ts": p["ts"][rows],
            "addr": vocabulary[addr],
            "name": _first_value(pd.Series(values_at(p["dns_qry_name"], rows), dtype=object)),
            "received": (p["direction"] == "received").to_numpy()[rows],
        }
    )


def _server_names(p: Packets) -> pd.DataFrame:
    """One row per packet that names its server (a TLS client hello): where, when, the
    server's address and the name."""
    rows = np.flatnonzero((p["tls_server_name"] != "").to_numpy())
    return pd.DataFrame(
        {
            "capture": values_at(p["capture"], rows),
            "ts": p["ts"][rows],
            "addr": values_at(p["ip_dst"], rows),
            "name": _first_value(pd.Series(values_at(p["tls_server_name"], rows), dtype=object)),
        }
    )


def _names_for_flows(flows: pd.DataFrame, names: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each flow, the name that `names` (capture, ts, addr, name; in time order) gives
    its remote address in the same capture: the latest at or before the flow's start, and
    the earliest after it."""
    found = [np.full(len(flows), "", dtype=object) for _ in range(2)]
    if names.empty or flows.empty:
        return found[0], found[1]
    lookup = pd.DataFrame(
        {
            "capture": flows["capture"].to_numpy(),
            "ts": flows["ts"].to_numpy(),
            "addr": flows["remote_h"].to_numpy(),
            "row": np.arange(len(flows)),
        }
    ).sort_values("ts", kind="stable")
    for result, direction in zip(found, ("backward", "forward")):
        matched = pd.merge_asof(lookup, names, on="ts", by=["capture", "addr"], direction=direction)
        result[matched["row"].to_numpy()] = matched["name"].fillna("").to_numpy()
    return found[0], found[1]


def _gateways(seen: Evidence) -> set[str]:
    """Local addresses acting as the device's DNS server, DHCP server or router (the
    router: the IPs its MACs send from)."""
    router_ips = {ip for mac, ip in seen.mac_ips if mac in seen.router_macs}
    candidates = (seen.dns_servers | seen.dhcp_servers | router_ips) - {"", "0.0.0.0"}
    return {a for a in candidates if address_class(a) == "local"}


def _classify(addresses: np.ndarray, gateways: set[str]) -> np.ndarray:
    codes, uniques = pd.factorize(addresses)
    classes = np.array(
        ["gateway" if u in gateways else address_class(u) for u in uniques] + [""], dtype=object
    )
    return classes[codes]
