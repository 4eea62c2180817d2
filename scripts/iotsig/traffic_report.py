"""See the traffic before reading it: a device inventory, an endpoint map, an activity
timeline, and one self-contained report.html that ties them to the signature.

Inputs are packets CSVs and/or flows CSVs (told apart by their header). The inventory needs
packets; the endpoint map and the timeline work from flows (the timeline uses packets for its
byte counts when it has them). Flows are matched to a signature's patterns by recomputing
their fingerprints (iotsig.signature.fingerprints) and comparing the fingerprint columns.

Pictures are drawn with matplotlib's object API (Figure + Agg canvas: no pyplot, no display).
Every name shown comes from packets, so it is treated as hostile: control characters are
dropped and mathtext is off in pictures, and everything is HTML-escaped in the report.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import ipaddress
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from . import __version__, csvio
from .errors import InputError, OutputError, ToolError
from .schema import FLOWS, INVENTORY, PACKETS

OUTPUT_NAMES = {"inventory": "inventory.csv", "map_png": "endpoint-map.png",
                "map_svg": "endpoint-map.svg", "timeline": "timeline.png",
                "report": "report.html"}

PACKET_COLUMNS = ["capture", "ts", "frame_len", "eth_src", "eth_dst", "ip_src", "ip_dst"]
PACKET_OPTIONAL = ["eth_src_vendor", "eth_dst_vendor", "ip_version", "l4_proto",
                   "dhcp_hostname", "direction"]
FLOW_COLUMNS = ["capture", "ts", "duration", "proto", "orig_h", "orig_p", "resp_h", "resp_p",
                "orig_pkts", "resp_pkts", "orig_frame_bytes", "resp_frame_bytes"]
FLOW_OPTIONAL = ["uid", "service", "device_side", "orig_mac", "resp_mac", "remote_h",
                 "remote_name", "remote_class", "http_host", "http_request_uri",
                 "dns_qry_name", "dns_qry_type", "http_request_method", "coap_type",
                 "coap_code", "coap_uri", "dhcp_msg_type", "tls_server_name", "icmp_type",
                 "arp_opcode"]

CLASS_COLOURS = {"gateway": "#e6850e", "local": "#2a9d3a", "external": "#1f6fb4",
                 "multicast": "#8e5bbf", "broadcast": "#d0312d", "": "#7f7f7f"}
CLASS_ORDER = ["gateway", "local", "multicast", "broadcast", "external", ""]
DEVICE_COLOUR = "#222222"
MAX_MAP_NODES = 80          # more remote parties than this: the smallest are folded into one
LABEL_CHARS = 40            # longest name drawn in a picture (the tables have it whole)


@dataclass
class Device:
    ip: str = ""
    mac: str = ""
    name: str = "device"
    how: str = ""           # where the address came from, said in the report


@dataclass
class Inputs:
    packet_files: list[Path] = field(default_factory=list)
    flow_files: list[Path] = field(default_factory=list)
    packets: pd.DataFrame | None = None
    flows: pd.DataFrame | None = None


@dataclass
class Report:
    paths: dict[str, Path]
    inventory: pd.DataFrame | None
    endpoints: pd.DataFrame
    matched: pd.DataFrame
    device: Device
    notes: list[str]


# ---------------------------------------------------------------------------------------
# Reading


def csv_kind(path: Path) -> str:
    """'packets', 'flows' (or 'signature', 'capture'): inputs.file_kind, the one rule."""
    from .inputs import file_kind
    return file_kind(path, ("packets", "flows"))


def read_inputs(paths: list[Path]) -> Inputs:
    inputs = Inputs()
    for path in paths:
        kind = csv_kind(path)
        if kind == "signature":
            raise InputError(path, "is a signature CSV: give it with --signature")
        if kind == "capture":
            raise InputError(path, "is a capture: give its packets or flows CSVs (main.py "
                                   "or packet-translator.py writes them)")
        (inputs.packet_files if kind == "packets" else inputs.flow_files).append(Path(path))
    if inputs.packet_files:
        wanted = PACKET_COLUMNS + PACKET_OPTIONAL
        if not inputs.flow_files:  # flows are rebuilt from the packets: read what that needs
            from . import flows as flow_builder
            wanted = list(dict.fromkeys(wanted + flow_builder.REQUIRED + flow_builder.OPTIONAL))
        frames = [csvio.read_table(p, PACKETS, required=PACKET_COLUMNS, columns=wanted,
                                   compact=True)
                  for p in inputs.packet_files]
        inputs.packets = _with_columns(_concat(frames), PACKET_OPTIONAL)
    if inputs.flow_files:
        frames = [csvio.read_table(p, FLOWS, required=FLOW_COLUMNS,
                                   columns=FLOW_COLUMNS + FLOW_OPTIONAL)
                  for p in inputs.flow_files]
        inputs.flows = _with_columns(_concat(frames), FLOW_OPTIONAL)
    return inputs


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if len(frames) == 1:
        return frames[0]
    # Categories differ from file to file: concatenating them makes object columns, which is
    # what the rest wants anyway (these frames are a few recordings, not a million rows).
    return pd.concat(frames, ignore_index=True)


def _with_columns(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    for name in names:
        if name not in frame:
            frame[name] = ""
    return frame


def _text(column: pd.Series) -> pd.Series:
    """A text column as plain strings ('' for missing), from object or categorical."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    return column.fillna("").astype(str)


# ---------------------------------------------------------------------------------------
# The device under study


def find_device(inputs: Inputs, device_ip: str | None = None, device_mac: str | None = None,
                device_name: str | None = None, signature: pd.DataFrame | None = None) -> Device:
    device = Device(name=device_name or "device")
    if signature is not None and len(signature):
        device.name = device_name or str(signature["device_name"].iloc[0]) or "device"
    if device_ip:
        device.ip, device.how = device_ip, "--device-ip"
    elif signature is not None and len(signature) and signature["device_ip"].iloc[0]:
        device.ip, device.how = str(signature["device_ip"].iloc[0]), "the signature"
    elif inputs.flows is not None and (_text(inputs.flows["device_side"]) != "").any():
        f = inputs.flows
        side = _text(f["device_side"])
        addresses = pd.concat([_text(f["orig_h"])[side == "orig"], _text(f["resp_h"])[side == "resp"]])
        device.ip, device.how = addresses.mode().iloc[0], "the flows' device_side column"
    elif inputs.packets is not None and (_text(inputs.packets["direction"]) == "sent").any():
        p = inputs.packets
        sent = _text(p["direction"]) == "sent"
        device.ip, device.how = _text(p["ip_src"])[sent].mode().iloc[0], \
            "the packets' direction column"
    if device_mac:
        device.mac = device_mac.lower()
    elif device.ip and inputs.packets is not None:
        p = inputs.packets
        macs = _text(p["eth_src"])[_text(p["ip_src"]) == device.ip]
        device.mac = macs[macs != ""].mode().iloc[0].lower() if (macs != "").any() else ""
    elif device.ip and inputs.flows is not None:
        f = inputs.flows
        macs = _text(f["orig_mac"])[_text(f["orig_h"]) == device.ip]
        device.mac = macs[macs != ""].mode().iloc[0].lower() if (macs != "").any() else ""
    if not device.ip and not device.mac:
        raise ToolError("cannot tell which device is under study: give --device-ip (the CSVs "
                        "were made without one, and no --signature names it)")
    return device


# ---------------------------------------------------------------------------------------
# Inventory


def inventory(packets: pd.DataFrame, device: Device,
              gateway_addresses: set[str] | None = None) -> pd.DataFrame:
    """One row per MAC seen: vendor, addresses, DHCP host name, traffic, first/last seen."""
    if packets is None or packets.empty:
        return csvio.empty_frame(INVENTORY)
    src = _text(packets["eth_src"]).str.lower()
    dst = _text(packets["eth_dst"]).str.lower()
    ts = packets["ts"].to_numpy(dtype=float)
    size = packets["frame_len"].fillna(0).to_numpy(dtype=float)
    capture = _text(packets["capture"])
    sides = pd.DataFrame({
        "mac": pd.concat([src, dst], ignore_index=True),
        "sent": np.r_[np.ones(len(src)), np.zeros(len(dst))],
        "size": np.r_[size, size], "ts": np.r_[ts, ts],
        "capture": pd.concat([capture, capture], ignore_index=True),
        "vendor": pd.concat([_text(packets["eth_src_vendor"]), _text(packets["eth_dst_vendor"])],
                            ignore_index=True)})
    sides = sides[sides["mac"] != ""]
    sides["sent_size"] = sides["size"] * sides["sent"]
    grouped = sides.groupby("mac", sort=False)
    table = pd.DataFrame({
        "pkts_sent": grouped["sent"].sum(), "bytes_sent": grouped["sent_size"].sum(),
        "frames": grouped.size(), "bytes": grouped["size"].sum(),
        "first_ts": grouped["ts"].min(), "last_ts": grouped["ts"].max(),
        "captures": grouped["capture"].nunique()})
    table["pkts_received"] = table["frames"] - table["pkts_sent"]
    table["bytes_received"] = table["bytes"] - table["bytes_sent"]
    vendors = sides.loc[sides["vendor"] != "", ["mac", "vendor"]].drop_duplicates("mac")
    table["vendor"] = vendors.set_index("mac")["vendor"].reindex(table.index).fillna("")

    # Addresses each MAC sent from (distinct pairs first: a handful, whatever the capture size).
    pairs = pd.DataFrame({"mac": src, "ip": _text(packets["ip_src"])}).drop_duplicates()
    pairs = pairs[(pairs["mac"] != "") & (pairs["ip"] != "")]
    kinds = {ip: _address_kind(ip) for ip in pairs["ip"].unique()}
    pairs["version"] = pairs["ip"].map(lambda ip: kinds[ip][0])
    # bool even when empty: an empty object column would index columns, not rows
    pairs["global"] = pairs["ip"].map(lambda ip: kinds[ip][1]).astype(bool)
    pairs["net"] = pairs["ip"].map(lambda ip: kinds[ip][2])
    pairs = pairs[pairs["version"] > 0]
    routers = _routers(pairs, gateway_addresses or set())
    host_v6_nets = set(pairs.loc[~pairs["mac"].isin(routers) & pairs["global"]
                                 & (pairs["version"] == 6), "net"])
    relayed = pairs["mac"].isin(routers) & pairs["global"] & ~pairs["net"].isin(host_v6_nets)
    table["relayed_addrs"] = pairs[relayed].groupby("mac").size().reindex(table.index).fillna(0)
    own = pairs[~relayed]
    for version in (4, 6):
        chosen = own[own["version"] == version]
        joined = chosen.groupby("mac")["ip"].agg(lambda a: ";".join(_sort_addresses(a)))
        table[f"ipv{version}"] = joined.reindex(table.index).fillna("")
    names = pd.DataFrame({"mac": src, "name": _text(packets["dhcp_hostname"])}).drop_duplicates()
    names = names[names["name"] != ""]
    table["dhcp_hostname"] = names.groupby("mac")["name"].agg(
        lambda a: ";".join(sorted(set(a)))).reindex(table.index).fillna("")

    device_macs = {device.mac} if device.mac else set()
    if device.ip and not device_macs:
        device_macs = set(own.loc[own["ip"] == device.ip, "mac"])
    table["is_device"] = table.index.isin(device_macs)
    first_octet = pd.Series(table.index.str[:2], index=table.index).map(_hex_or_zero)
    table["role"] = np.select(
        [table["is_device"], table.index == "ff:ff:ff:ff:ff:ff", (first_octet & 1) == 1,
         table.index.isin(routers)],
        ["device", "broadcast", "multicast", "gateway"], "host")
    table["first_time_utc"] = _utc(table["first_ts"])
    table["last_time_utc"] = _utc(table["last_ts"])
    table = table.reset_index(names="mac")
    table["order"] = table["role"].map({"device": 0, "gateway": 1}).fillna(2)
    table = table.sort_values(["order", "bytes", "mac"], ascending=[True, False, True])
    return table.reindex(columns=INVENTORY.names).reset_index(drop=True)


def _address_kind(text: str) -> tuple[int, bool, str]:
    """(IP version or 0, is it a global address, its network: /32 or /64)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return 0, False, ""
    if ip.is_unspecified:
        return 0, False, ""
    net = str(ipaddress.ip_network(f"{ip}/{64 if ip.version == 6 else 32}", strict=False))
    return ip.version, bool(ip.is_global and not ip.is_multicast), net


def _routers(pairs: pd.DataFrame, gateway_addresses: set[str]) -> set[str]:
    """MACs that forward traffic: a LAN host does not send from both a private and a public
    IPv4 address, nor from several public IPv4 addresses or IPv6 /64 networks; the
    gateway address the flows name is a router's too."""
    v4 = pairs[pairs["version"] == 4]
    public = v4[v4["global"]].groupby("mac").size()
    private = v4[~v4["global"]].groupby("mac").size()
    nets6 = pairs[(pairs["version"] == 6) & pairs["global"]].groupby("mac")["net"].nunique()
    routers = set(public.index[public >= 3]) | set(public.index.intersection(private.index))
    routers |= set(nets6.index[nets6 >= 3])
    routers |= set(pairs.loc[pairs["ip"].isin(gateway_addresses), "mac"])
    return routers


def _sort_addresses(addresses) -> list[str]:
    def key(text):
        try:
            ip = ipaddress.ip_address(text)
            return (ip.version, not ip.is_link_local, int(ip))
        except ValueError:
            return (9, True, 0)
    return sorted(set(addresses), key=key)


def _hex_or_zero(text: str) -> int:
    try:
        return int(text, 16)
    except (TypeError, ValueError):
        return 0


def _utc(seconds: pd.Series) -> pd.Series:
    """As the packets CSV's time_utc: ISO 8601 UTC to the microsecond."""
    values = seconds.to_numpy(dtype=float)
    text = np.full(len(values), "", dtype=object)
    known = ~np.isnan(values)
    micros = np.round(values[known] * 1e6).astype("int64").astype("datetime64[us]")
    text[known] = np.char.add(np.datetime_as_string(micros, unit="us"), "Z")
    return pd.Series(text, index=seconds.index)


# ---------------------------------------------------------------------------------------
# The device's flows and its remote parties


def device_flows(flows: pd.DataFrame | None, device: Device) -> pd.DataFrame:
    """The flows the device is a side of, with the remote party and a protocol label."""
    extra = ["side", "remote_addr", "remote", "klass", "label", "bytes", "pkts"]
    if flows is None or flows.empty:
        return pd.DataFrame(columns=[*(flows.columns if flows is not None else []), *extra])
    orig_h, resp_h = _text(flows["orig_h"]), _text(flows["resp_h"])
    me = {a for a in (device.ip, device.mac) if a}   # non-IP flows are keyed by MAC
    orig = orig_h.str.lower().isin(me)
    resp = resp_h.str.lower().isin(me) & ~orig
    mine = flows[orig | resp].copy()
    side = np.where(orig[orig | resp], "orig", "resp")
    mine["side"] = side
    remote_h = np.where(side == "orig", _text(mine["resp_h"]), _text(mine["orig_h"]))
    # remote_name/remote_class describe the CSV's remote_h: trust them when it is the party
    # seen from this device, else classify the address alone.
    described = _text(mine["remote_h"]).to_numpy() == remote_h
    name = np.where(described, _text(mine["remote_name"]), "").astype(object)
    klass = np.where(described, _text(mine["remote_class"]), "").astype(object)
    missing = klass == ""
    if missing.any():
        from .flows import address_class
        codes, uniques = pd.factorize(pd.Series(remote_h[missing]))
        klass[missing] = np.array([address_class(u) for u in uniques] + [""], dtype=object)[codes]
    mine["remote_addr"] = remote_h
    mine["remote"] = np.where(name != "", name, remote_h)
    mine["klass"] = klass
    mine["label"] = _protocol_labels(mine)
    mine["bytes"] = (pd.to_numeric(mine["orig_frame_bytes"], errors="coerce").fillna(0)
                     + pd.to_numeric(mine["resp_frame_bytes"], errors="coerce").fillna(0))
    mine["pkts"] = (pd.to_numeric(mine["orig_pkts"], errors="coerce").fillna(0)
                    + pd.to_numeric(mine["resp_pkts"], errors="coerce").fillna(0))
    return mine


def _protocol_labels(f: pd.DataFrame) -> np.ndarray:
    """tcp/443 tls, udp/53 dns, arp, icmp: protocol, the fixed (server) port, the service."""
    orig_p = pd.to_numeric(f["orig_p"], errors="coerce")
    resp_p = pd.to_numeric(f["resp_p"], errors="coerce")
    orig_serves = ((orig_p < resp_p) & (resp_p >= 1024)).fillna(False).to_numpy()
    port = np.where(orig_serves, orig_p, resp_p)
    known = ~np.isnan(port)
    port_text = np.full(len(port), "", dtype=object)
    port_text[known] = np.char.add("/", port[known].astype(np.int64).astype(str)).astype(object)
    service = _text(f["service"]).to_numpy().astype(object)
    proto = _text(f["proto"]).to_numpy().astype(object)
    service_text = np.where((service != "") & (service != proto), " " + service, "")
    return (proto.astype(object) + port_text + service_text).astype(object)


def endpoints(mine: pd.DataFrame) -> pd.DataFrame:
    """One row per remote party the device talked to (domain name where known, else the
    address): class, addresses, protocols (by bytes), flows, packets, bytes."""
    columns = ["remote", "remote_class", "addresses", "protocols", "flows", "pkts", "bytes",
               "first_ts"]
    if mine.empty:
        return pd.DataFrame(columns=columns)
    grouped = mine.groupby("remote", sort=False)
    table = pd.DataFrame({"flows": grouped.size(), "pkts": grouped["pkts"].sum(),
                          "bytes": grouped["bytes"].sum(), "first_ts": grouped["ts"].min()})
    by_class = mine.groupby(["remote", "klass"], sort=False)["bytes"].sum().reset_index()
    by_class = by_class.sort_values("bytes", ascending=False).drop_duplicates("remote")
    table["remote_class"] = by_class.set_index("remote")["klass"].reindex(table.index).fillna("")
    addresses = mine[["remote", "remote_addr"]].drop_duplicates()
    table["addresses"] = addresses.groupby("remote")["remote_addr"].agg(
        lambda a: ";".join(_sort_addresses(a))).reindex(table.index).fillna("")
    labels = mine.groupby(["remote", "label"], sort=False)["bytes"].sum().reset_index()
    labels = labels.sort_values(["remote", "bytes"], ascending=[True, False])
    table["protocols"] = labels.groupby("remote")["label"].agg(", ".join).reindex(table.index)
    table = table.reset_index(names="remote")
    table["rank"] = table["remote_class"].map({c: i for i, c in enumerate(CLASS_ORDER)}).fillna(9)
    table = table.sort_values(["rank", "bytes", "remote"], ascending=[True, False, True])
    return table.reindex(columns=columns).reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Signature patterns in the recordings


def match_patterns(mine: pd.DataFrame, patterns: pd.DataFrame | None) -> pd.DataFrame:
    """Which of the device's flows belong to which signature pattern: the flows'
    fingerprints recomputed (iotsig.signature.fingerprints) and compared column by column;
    a generalised pattern (remote by class) matches on the class."""
    columns = ["capture", "pattern", "order", "role", "start", "end"]
    if patterns is None or patterns.empty or mine.empty:
        return pd.DataFrame(columns=columns)
    from . import signature as sig
    needed = ["orig_h", "resp_h", "orig_p", "resp_p", "remote_name", "remote_class",
              *sig.FINGERPRINT_FIELDS]
    f = mine[[c for c in mine.columns if c in set(needed) | {"capture", "ts", "duration",
                                                               "proto", "remote_h"}]].copy()
    for name in needed:
        if name not in f:
            f[name] = ""
    f["device_side"] = mine["side"].to_numpy()
    # The remote party as device_flows worked it out (name and class checked against the
    # address seen from this device).
    f["remote_h"] = mine["remote_addr"].to_numpy()
    f["remote_name"] = np.where(mine["remote"] != mine["remote_addr"], mine["remote"], "")
    f["remote_class"] = mine["klass"].to_numpy()
    for name in ["remote_name", "remote_class", "http_request_uri", *sig.FINGERPRINT_FIELDS]:
        f[name] = _text(f[name])
    f = sig.fingerprints(f)
    if "remote_general" not in f:
        f["remote_general"] = f["remote"]
    # Every fingerprint column but the remote party, which is compared below.
    keys = [c for c in sig.FINGERPRINT if c != "remote" and c in patterns and c in f]
    p = patterns.copy()
    p["server_port"] = pd.to_numeric(p["server_port"], errors="coerce").fillna(-1).astype(int)
    for name in keys:
        if name != "server_port":
            p[name] = _text(p[name])
            f[name] = _text(f[name])
    f["_row"] = np.arange(len(f))
    merged = f[keys + ["_row", "remote", "remote_general"]].merge(
        p[keys + ["remote", "pattern", "order", "role"]].rename(columns={"remote": "p_remote"}),
        on=keys, how="inner")
    hit = (merged["p_remote"] == merged["remote"]) | (merged["p_remote"] == merged["remote_general"])
    merged = merged[hit]
    rows = merged["_row"].to_numpy()
    start = mine["ts"].to_numpy(dtype=float)[rows]
    duration = np.nan_to_num(pd.to_numeric(mine["duration"], errors="coerce").to_numpy()[rows])
    return pd.DataFrame({"capture": _text(mine["capture"]).to_numpy()[rows],
                         "pattern": merged["pattern"].to_numpy(),
                         "order": merged["order"].to_numpy(), "role": merged["role"].to_numpy(),
                         "start": start, "end": start + duration})


# ---------------------------------------------------------------------------------------
# Activity per time bin


def bin_width(longest: float, at_least: int = 20, at_most: int = 3000) -> float:
    """1 s when that gives at least `at_least` bars; finer for short recordings (the public
    event captures have fake 1 ms packet spacing: a whole recording lasts a fraction of a
    second), coarser for long ones (at most `at_most` bars)."""
    if longest > at_most:
        for width in (10.0, 60.0, 600.0, 3600.0):
            if longest / width <= at_most:
                return width
        return 86400.0
    for width in (1.0, 0.1, 0.01):
        if longest / width >= at_least:
            return width
    return 0.001


def recording_starts(inputs: Inputs) -> pd.Series:
    """Start of each recording (capture): its first packet, else its first flow."""
    starts = []
    if inputs.packets is not None and len(inputs.packets):
        starts.append(inputs.packets.groupby(_text(inputs.packets["capture"]).to_numpy())["ts"].min())
    if inputs.flows is not None and len(inputs.flows):
        starts.append(inputs.flows.groupby(_text(inputs.flows["capture"]).to_numpy())["ts"].min())
    if not starts:
        return pd.Series(dtype=float)
    return pd.concat(starts).groupby(level=0, sort=False).min()


def recording_ends(inputs: Inputs) -> pd.Series:
    ends = []
    if inputs.packets is not None and len(inputs.packets):
        ends.append(inputs.packets.groupby(_text(inputs.packets["capture"]).to_numpy())["ts"].max())
    if inputs.flows is not None and len(inputs.flows):
        f = inputs.flows
        end = f["ts"] + pd.to_numeric(f["duration"], errors="coerce").fillna(0)
        ends.append(end.groupby(_text(f["capture"]).to_numpy()).max())
    if not ends:
        return pd.Series(dtype=float)
    return pd.concat(ends).groupby(level=0, sort=False).max()


def activity(inputs: Inputs, device: Device, starts: pd.Series, width: float,
             mine: pd.DataFrame | None = None) -> pd.DataFrame:
    """Bytes sent and received by the device per time bin of each recording: columns
    capture, bin, sent, received. From the packets where given, else spread evenly over
    each flow's duration."""
    parts = []
    from_packets = set()
    if inputs.packets is not None and len(inputs.packets):
        p = inputs.packets
        capture = _text(p["capture"])
        from_packets = set(capture.unique())
        sent = pd.Series(False, index=p.index)
        received = pd.Series(False, index=p.index)
        if device.ip:
            sent |= _text(p["ip_src"]) == device.ip
            received |= _text(p["ip_dst"]) == device.ip
        if device.mac:
            sent |= _text(p["eth_src"]).str.lower() == device.mac
            received |= _text(p["eth_dst"]).str.lower() == device.mac
        received &= ~sent
        keep = (sent | received).to_numpy()
        offset = p["ts"].to_numpy(dtype=float) - capture.map(starts).to_numpy(dtype=float)
        size = p["frame_len"].fillna(0).to_numpy(dtype=float)
        frame = pd.DataFrame({"capture": capture.to_numpy()[keep],
                              "bin": np.floor(offset[keep] / width).astype(np.int64),
                              "sent": np.where(sent.to_numpy(), size, 0)[keep],
                              "received": np.where(received.to_numpy(), size, 0)[keep]})
        parts.append(frame.groupby(["capture", "bin"], as_index=False)[["sent", "received"]].sum())
    if mine is not None and len(mine):
        f = mine[~_text(mine["capture"]).isin(from_packets)]
        if len(f):
            parts.append(_spread_flows(f, starts, width))
    if not parts:
        return pd.DataFrame(columns=["capture", "bin", "sent", "received"])
    return pd.concat(parts, ignore_index=True)


def _spread_flows(f: pd.DataFrame, starts: pd.Series, width: float) -> pd.DataFrame:
    """Each flow's bytes spread evenly over the bins it covers (a difference array per
    recording: no loop over flows)."""
    capture = _text(f["capture"]).to_numpy()
    offset = f["ts"].to_numpy(dtype=float) - pd.Series(capture).map(starts).to_numpy(dtype=float)
    duration = np.nan_to_num(pd.to_numeric(f["duration"], errors="coerce").to_numpy(dtype=float))
    first = np.floor(offset / width).astype(np.int64)
    last = np.maximum(np.floor((offset + duration) / width).astype(np.int64), first)
    count = last - first + 1
    device_orig = (f["side"] == "orig").to_numpy()
    orig_b = pd.to_numeric(f["orig_frame_bytes"], errors="coerce").fillna(0).to_numpy()
    resp_b = pd.to_numeric(f["resp_frame_bytes"], errors="coerce").fillna(0).to_numpy()
    sent = np.where(device_orig, orig_b, resp_b) / count
    received = np.where(device_orig, resp_b, orig_b) / count
    codes, names = pd.factorize(capture)
    span = int(last.max()) + 2
    key_start = codes.astype(np.int64) * span + first
    key_end = codes.astype(np.int64) * span + last + 1
    out = []
    for values in (sent, received):
        diff = np.zeros(len(names) * span)
        np.add.at(diff, key_start, values)
        np.add.at(diff, key_end, -values)
        out.append(np.cumsum(diff.reshape(len(names), span), axis=1).ravel())
    total = out[0] + out[1]
    nonzero = np.flatnonzero(np.abs(total) > 1e-9)
    return pd.DataFrame({"capture": np.asarray(names, dtype=object)[nonzero // span], "bin": nonzero % span,
                         "sent": out[0][nonzero], "received": out[1][nonzero]})


# ---------------------------------------------------------------------------------------
# Pictures


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ToolError("matplotlib is not installed: pip install -r requirements.txt") from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)   # the Agg canvas, whatever backend pyplot would pick
    return figure


def _save(figure, kind: str, dpi: int = 100, bbox=None) -> bytes:
    import matplotlib
    buffer = io.BytesIO()
    options = {"bbox_inches": bbox} if bbox is not None else {}
    # SVG text stays text (searchable, a tenth of the size); fonts are the viewer's.
    with warnings.catch_warnings(), matplotlib.rc_context({"svg.fonttype": "none"}):
        warnings.simplefilter("ignore")   # e.g. a glyph a name uses that the font lacks
        figure.savefig(buffer, format=kind, dpi=dpi, metadata=_metadata(kind), **options)
    return buffer.getvalue()


def _tight_box(figure, pad: float = 0.15):
    """The box around everything drawn, in inches: computed once for both formats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        box = figure.get_tightbbox(figure.canvas.get_renderer())
    return box.padded(pad)


def _metadata(kind: str) -> dict:
    # No creation date: the same input gives the same file.
    if kind == "svg":
        return {"Date": None, "Creator": f"iotsig {__version__} traffic-report"}
    return {"Software": f"iotsig {__version__} traffic-report"}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]+")


def picture_text(text: str, limit: int = LABEL_CHARS) -> str:
    """A name from packets made safe to draw: no control or direction characters, and
    shortened in the middle (the two ends of a domain name say the most)."""
    text = _CONTROL.sub(" ", str(text)).strip()
    if len(text) > limit:
        keep = limit - 1
        text = text[: keep - keep // 3] + "…" + text[len(text) - keep // 3:]
    return text


def human_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def draw_endpoint_map(ends: pd.DataFrame, device: Device) -> tuple[bytes, bytes]:
    """The endpoint map as PNG and SVG."""
    figure = endpoint_map_figure(ends, device)
    # Should a label still run past the square, the picture grows rather than cut it.
    box = _tight_box(figure)
    return _save(figure, "png", bbox=box), _save(figure, "svg", bbox=box)


def endpoint_map_figure(ends: pd.DataFrame, device: Device):
    """The device in the middle, its remote parties on a ring around it (grouped by class,
    largest first), one edge each, as wide as its bytes. Few parties: horizontal two-line
    labels; many: one radial line each, which cannot run into its neighbours. Labels carry
    the label "endpoint-label" (tests measure them)."""
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    ends = _fold_small(ends, MAX_MAP_NODES)
    n = len(ends)
    radial = n > 8
    # Radial labels need the room all round; horizontal ones only left and right.
    width, height, title_room = (13.0, 13.0, 0.6) if radial else (11.0, 7.8, 0.6)
    figure = _figure(width, height + title_room)
    axes = figure.add_axes([0, 0, 1, height / (height + title_room)])
    half = 2.6
    axes.set_xlim(-half, half)
    axes.set_ylim(-half * height / width, half * height / width)
    axes.set_aspect("equal")
    axes.axis("off")
    title = (f"Endpoints of {picture_text(device.name, 30)} "
             f"({device.ip or device.mac}): {n} remote part{'y' if n == 1 else 'ies'}; "
             "edge width: bytes exchanged")
    figure.text(0.5, 1 - 0.25 / (height + title_room), title, ha="center", va="center",
                fontsize=13, parse_math=False)

    if n:
        step = 2 * math.pi / n
        angles = math.pi / 2 - step * (np.arange(n) + (0.5 if radial else 0.0))
        x, y = np.cos(angles), np.sin(angles)
        weights = np.log1p(ends["bytes"].to_numpy(dtype=float))
        top = weights.max() if weights.max() > 0 else 1.0
        widths = 0.7 + 7.3 * weights / top
        colours = [CLASS_COLOURS.get(c, CLASS_COLOURS[""]) for c in ends["remote_class"]]
        segments = [[(0, 0), (a, b)] for a, b in zip(x, y)]
        axes.add_collection(LineCollection(segments, linewidths=widths, colors=colours,
                                           alpha=0.45, zorder=1, capstyle="round"))
        axes.scatter(x, y, s=70 if radial else 160, c=colours, zorder=3, edgecolors="white",
                     linewidths=1.2)
        # A radial label has the ring's radius again to run in (about 65 characters at
        # these sizes): names and protocol lists are shortened to fit, the tables have them.
        font = 8 if n <= 40 else 7 if n <= 60 else 6.5
        for i, row in enumerate(ends.itertuples()):
            name = picture_text(row.remote, 34 if radial else LABEL_CHARS)
            protocols = picture_text(_first_protocols(row.protocols, 1 if radial else 2),
                                     24 if radial else LABEL_CHARS)
            detail = f"{protocols} · {human_bytes(row.bytes)}"
            if radial:
                degrees = math.degrees(angles[i])
                left = x[i] < -1e-9
                axes.text(1.07 * x[i], 1.07 * y[i], f"{name}  {detail}",
                          rotation=degrees + 180 if left else degrees,
                          rotation_mode="anchor", ha="right" if left else "left",
                          va="center", fontsize=font, parse_math=False, zorder=4,
                          label="endpoint-label")
            else:
                ha = "left" if x[i] > 0.3 else "right" if x[i] < -0.3 else "center"
                va = "bottom" if y[i] > 0.3 else "top" if y[i] < -0.3 else "center"
                axes.text(1.1 * x[i], 1.1 * y[i], f"{name}\n{detail}", ha=ha, va=va,
                          fontsize=10, parse_math=False, zorder=4, linespacing=1.3,
                          label="endpoint-label",
                          multialignment="left" if ha == "left" else
                          "right" if ha == "right" else "center")
    else:
        axes.text(0, -0.5, "the device talked to no one in these flows", ha="center",
                  fontsize=12, color="#666666")
    axes.scatter([0], [0], s=900, c=DEVICE_COLOUR, zorder=5)
    axes.text(0, -0.16, f"{picture_text(device.name, 30)}\n{device.ip or device.mac}",
              ha="center", va="top", fontsize=11, fontweight="bold", zorder=6,
              parse_math=False, bbox={"boxstyle": "round,pad=0.3", "fc": "white",
                                      "ec": "#bbbbbb", "alpha": 0.9})
    present = [c for c in CLASS_ORDER if c in set(ends["remote_class"])]
    handles = [Line2D([], [], marker="o", linestyle="", markersize=9,
                      markerfacecolor=CLASS_COLOURS[c], markeredgecolor="white",
                      label=f"{c or 'unknown'} ({int((ends['remote_class'] == c).sum())})")
               for c in present]
    handles.append(Line2D([], [], marker="o", linestyle="", markersize=11,
                          markerfacecolor=DEVICE_COLOUR, label="device under study"))
    axes.legend(handles=handles, loc="lower left", fontsize=10, frameon=False,
                bbox_to_anchor=(0.0, 0.0))
    return figure


def _first_protocols(protocols: str, keep: int = 2) -> str:
    items = [p for p in str(protocols).split(", ") if p]
    extra = len(items) - keep
    return ", ".join(items[:keep]) + (f" +{extra}" if extra > 0 else "")


def _fold_small(ends: pd.DataFrame, limit: int) -> pd.DataFrame:
    if len(ends) <= limit:
        return ends
    keep = ends.nlargest(limit - 1, "bytes")
    rest = ends.drop(keep.index)
    other = pd.DataFrame([{"remote": f"{len(rest)} more parties (see the table)",
                           "remote_class": "", "addresses": "", "protocols": "various",
                           "flows": rest["flows"].sum(), "pkts": rest["pkts"].sum(),
                           "bytes": rest["bytes"].sum(), "first_ts": rest["first_ts"].min()}])
    kept = ends.loc[ends.index.isin(keep.index)]   # keep the class grouping order
    return pd.concat([kept, other], ignore_index=True)


PATTERN_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                   "#17becf", "#bcbd22", "#ff7f0e", "#393b79", "#637939", "#843c39"]


def draw_timeline(bins: pd.DataFrame, width: float, captures: list[str], starts: pd.Series,
                  ends: pd.Series, matched: pd.DataFrame, patterns: pd.DataFrame | None,
                  device: Device, source: str) -> bytes:
    """One panel per recording, on a shared time axis from each recording's start: bytes the
    device sent (up) and received (down) per bin, and above them a strip with one row per
    signature pattern, marking the flows that matched it."""
    shown = _timeline_patterns(patterns, matched)
    rows = len(shown)
    n = max(len(captures), 1)
    strip = 0.16 * rows + 0.1 if rows else 0.0
    panel = 1.25 if n <= 6 else 0.95
    gap = 0.55
    legend_lines = math.ceil(rows / 2) if rows else 0
    header = 0.75 + 0.2 * legend_lines
    footer = 0.5
    height = header + n * (strip + panel + gap) - gap + footer
    figure = _figure(12.5, height)
    longest = float(max((ends - starts).reindex(captures).max(), width)) if captures else width
    x_max = longest * 1.02
    colours = {name: PATTERN_COLOURS[i % len(PATTERN_COLOURS)] if role == "event" else "#9a9a9a"
               for i, (name, role) in enumerate(zip(shown["pattern"], shown["role"]))}
    unit = _width_text(width)
    figure.text(0.06, 1 - 0.3 / height,
                f"Activity of {picture_text(device.name, 30)} ({device.ip or device.mac}): "
                f"bytes sent (up) and received (down) per {unit}",
                fontsize=12, va="center", parse_math=False)
    figure.text(0.985, 1 - 0.3 / height, f"from the {source}", fontsize=8.5, ha="right",
                va="center", color="#555555")
    if rows:
        for i, row in enumerate(shown.itertuples()):
            column, line = divmod(i, legend_lines)
            role = "" if row.role == "event" else f" ({row.role})"
            figure.text(0.06 + 0.46 * column, 1 - (0.62 + 0.2 * line) / height,
                        f"■ {row.number}  {picture_text(row.pattern, 56)}{role}",
                        color=colours[row.pattern], fontsize=9, va="center", parse_math=False)
    left, right = 0.09, 0.985
    y = height - header
    first_axes = None
    by_capture = dict(tuple(bins.groupby("capture"))) if len(bins) else {}
    marks = dict(tuple(matched.groupby("capture"))) if len(matched) else {}
    for capture in captures or ["(no recording)"]:
        if rows:
            y -= strip
            band = figure.add_axes([left, y / height, right - left, strip / height],
                                   sharex=first_axes)
            first_axes = first_axes or band
            _draw_marks(band, marks.get(capture), shown, colours, x_max)
        y -= panel
        axes = figure.add_axes([left, y / height, right - left, panel / height],
                               sharex=first_axes)
        first_axes = first_axes or axes
        data = by_capture.get(capture)
        start = starts.get(capture, np.nan)
        when = "" if start != start else \
            dt.datetime.fromtimestamp(start, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        title_axes = band if rows else axes
        title_axes.set_title(f"{picture_text(capture, 60)}   (started {when})", loc="left",
                             fontsize=9.5, pad=3, parse_math=False)
        if data is not None and len(data):
            # One filled step outline per direction (thousands of bars are one patch each).
            grouped = data.groupby("bin")[["sent", "received"]].sum()
            first, last = int(grouped.index.min()), int(grouped.index.max())
            dense = grouped.reindex(range(first, last + 1), fill_value=0.0)
            edges = np.arange(first, last + 2, dtype=float) * width
            axes.stairs(dense["sent"].to_numpy(), edges, fill=True, color="#1f6fb4",
                        linewidth=0, label="sent")
            axes.stairs(-dense["received"].to_numpy(), edges, fill=True, color="#e6850e",
                        linewidth=0, label="received")
            top = max(dense["sent"].max(), dense["received"].max(), 1.0)
            axes.set_ylim(-top * 1.1, top * 1.1)
            axes.yaxis.set_major_formatter(_bytes_formatter())
        else:
            axes.text(0.5, 0.5, "no traffic of the device", transform=axes.transAxes,
                      ha="center", va="center", color="#777777")
            axes.set_yticks([])
        event_starts = marks.get(capture)
        if event_starts is not None:
            event_starts = event_starts[event_starts["role"] == "event"]
        if event_starts is not None and len(event_starts):
            first = event_starts["start"].min() - start
            axes.axvline(first, color="#d62728", linewidth=0.9, linestyle="--", zorder=0)
        axes.axhline(0, color="#444444", linewidth=0.6)
        axes.tick_params(labelsize=8, labelbottom=True)   # times under every panel
        axes.set_ylabel(f"bytes/{unit}", fontsize=8)
        axes.grid(axis="x", color="#e5e5e5", linewidth=0.6)
        axes.set_axisbelow(True)
        y -= gap
    axes.set_xlabel("seconds since the recording's first packet"
                    + ("   (dashed: the first event-pattern flow)" if rows else ""), fontsize=9)
    first_axes.set_xlim(-x_max * 0.01, x_max)
    return _save(figure, "png")


def _timeline_patterns(patterns: pd.DataFrame | None, matched: pd.DataFrame) -> pd.DataFrame:
    if patterns is None or patterns.empty:
        return pd.DataFrame(columns=["pattern", "role", "number"])
    shown = patterns[["pattern", "role", "order"]].copy()
    shown["event"] = shown["role"] == "event"
    shown = shown.sort_values(["event", "order"], ascending=[False, True])
    shown["number"] = np.arange(1, len(shown) + 1)
    return shown.reset_index(drop=True)


def _draw_marks(band, marks: pd.DataFrame | None, shown: pd.DataFrame, colours: dict,
                x_max: float) -> None:
    rows = len(shown)
    band.set_ylim(rows - 0.5, -0.5)
    band.set_yticks(range(rows))
    band.set_yticklabels([str(n) for n in shown["number"]], fontsize=6.5)
    band.tick_params(axis="y", length=0, pad=2)
    band.tick_params(axis="x", labelbottom=False, length=0)
    for spine in band.spines.values():
        spine.set_visible(False)
    band.set_facecolor("#f6f6f6")
    if marks is None or marks.empty:
        return
    position = dict(zip(shown["pattern"], range(rows)))
    minimum = x_max * 0.004            # an instant flow still shows
    for pattern, group in marks.groupby("pattern"):
        if pattern not in position:
            continue
        start = group["rel_start"].to_numpy()
        spans = np.maximum(group["rel_end"].to_numpy() - start, minimum)
        band.broken_barh(list(zip(start, spans)), (position[pattern] - 0.38, 0.76),
                         facecolors=colours[pattern], linewidth=0)


def _width_text(width: float) -> str:
    if width >= 3600:
        return f"{width / 3600:g} h"
    if width >= 60:
        return f"{width / 60:g} min"
    if width >= 1:
        return f"{width:g} s" if width != 1 else "s"
    return f"{width * 1000:g} ms"


def _bytes_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda v, _: human_bytes(abs(v)).replace(" B", "") if v else "0")


# ---------------------------------------------------------------------------------------
# report.html


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1300px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.device td{background:#fff4d6;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.82em;border:1px solid #e5e5e5}
.note{color:#555;font-size:.9em}.swatch{display:inline-block;width:.8em;height:.8em;
border-radius:50%;margin-right:.3em;vertical-align:middle}
td.wrap{max-width:28em;overflow-wrap:anywhere}td.t{white-space:nowrap}
"""

HTML_TIMES = {"first_time_utc", "last_time_utc"}
INVENTORY_SHOWN = [("mac", "MAC"), ("vendor", "vendor"), ("role", "role"), ("ipv4", "IPv4"),
                   ("ipv6", "IPv6"), ("dhcp_hostname", "DHCP host name"),
                   ("pkts_sent", "packets sent"), ("bytes_sent", "bytes sent"),
                   ("pkts_received", "packets received"), ("bytes_received", "bytes received"),
                   ("first_time_utc", "first seen (UTC)"), ("last_time_utc", "last seen (UTC)")]


def _e(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return html.escape(str(value), quote=True)


def _cell(value, numeric: bool = False, wrap: bool = False) -> str:
    if numeric:
        try:
            return f'<td class="n">{int(round(float(value))):,}</td>'
        except (TypeError, ValueError):
            return "<td></td>"
    text = _e(value).replace(";", "; ")
    return f'<td class="wrap">{text}</td>' if wrap else f"<td>{text}</td>"


def _short_time(text) -> str:
    """2024-08-19T09:32:20.552033Z -> 2024-08-19 09:32:20.552 (the CSV keeps it whole)."""
    text = str(text or "")
    return text.replace("T", " ").rstrip("Z")[:23]


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def render_html(device: Device, inputs: Inputs, inventory_table: pd.DataFrame | None,
                ends: pd.DataFrame, pictures: dict[str, bytes], pattern_text: str | None,
                csv_links: list[tuple[str, str]], matched: pd.DataFrame,
                notes: list[str], other_links: list[tuple[str, str]] = ()) -> str:
    title = f"Traffic report: {device.name} ({device.ip or device.mac})"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             # Nothing is fetched from anywhere: pictures are data URIs, styles inline.
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             "img-src data:; style-src 'unsafe-inline'\">",
             f"<title>{_e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
             f"<h1>{_e(title)}</h1>"]
    captures = set()
    for frame in (inputs.packets, inputs.flows):
        if frame is not None:
            captures |= set(_text(frame["capture"]).unique())
    parts.append(f'<p class="note">Made by iotsig {__version__} traffic-report from '
                 f"{len(inputs.packet_files)} packets CSV(s) and {len(inputs.flow_files)} flows "
                 f"CSV(s): {len(captures)} recording(s). Device under study: "
                 f"<b>{_e(device.ip)}</b>{' / ' + _e(device.mac) if device.mac else ''}"
                 f"{' (address from ' + _e(device.how) + ')' if device.how else ''}. "
                 "Names shown come from the captured packets.</p>")
    for note in notes:
        parts.append(f'<p class="note">Note: {_e(note)}</p>')
    parts.append('<nav><a href="#inventory">Inventory</a> · <a href="#map">Endpoint map</a> · '
                 '<a href="#endpoints">Endpoints</a> · <a href="#timeline">Timeline</a> · '
                 '<a href="#signature">Signature</a> · <a href="#files">Files</a></nav>')

    parts.append('<h2 id="inventory">Device inventory</h2>')
    if inventory_table is None:
        parts.append('<p class="note">No packets CSV was given: the inventory (MACs, vendors, '
                     "DHCP host names) needs the packets.</p>")
    else:
        parts.append(f'<p class="note">Every MAC seen as a frame\'s source or destination '
                     f'({len(inventory_table)}); the device under study is highlighted. Also '
                     f'in <a href="{OUTPUT_NAMES["inventory"]}">{OUTPUT_NAMES["inventory"]}</a>.'
                     "</p>")
        numeric = {"pkts_sent", "bytes_sent", "pkts_received", "bytes_received"}
        parts.append("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for _, h in INVENTORY_SHOWN)
                     + "</tr></thead><tbody>")
        for row in inventory_table.to_dict("records"):
            cls = ' class="device"' if row["is_device"] else ""
            cells = "".join(
                f'<td class="t">{_e(_short_time(row[c]))}</td>' if c in HTML_TIMES else
                _cell(row[c], c in numeric, c in ("ipv6", "dhcp_hostname"))
                for c, _ in INVENTORY_SHOWN)
            parts.append(f"<tr{cls}>{cells}</tr>")
        parts.append("</tbody></table>")

    parts.append('<h2 id="map">Endpoint map</h2>')
    parts.append('<p class="note">The device in the middle, every remote party it talked to '
                 "around it (domain name where the capture shows one, else the address), "
                 "coloured by class; edge width grows with the bytes exchanged; labels give "
                 "the protocol/port and the bytes. Also as "
                 f'<a href="{OUTPUT_NAMES["map_png"]}">PNG</a> and '
                 f'<a href="{OUTPUT_NAMES["map_svg"]}">SVG</a>.</p>')
    parts.append(f'<img alt="endpoint map" src="{_data_uri(pictures["map_svg"], "image/svg+xml")}">')

    parts.append('<h2 id="endpoints">Remote parties</h2>')
    if ends.empty:
        parts.append("<p>None: the device is in none of the flows.</p>")
    else:
        parts.append("<table><thead><tr><th>remote party</th><th>class</th><th>addresses</th>"
                     "<th>protocols (by bytes)</th><th>flows</th><th>packets</th><th>bytes</th>"
                     "</tr></thead><tbody>")
        for row in ends.to_dict("records"):
            colour = CLASS_COLOURS.get(row["remote_class"], CLASS_COLOURS[""])
            parts.append(f'<tr><td class="wrap">{_e(row["remote"])}</td><td><span class="swatch" '
                         f'style="background:{colour}"></span>{_e(row["remote_class"])}</td>'
                         f'{_cell(row["addresses"], wrap=True)}{_cell(row["protocols"], wrap=True)}'
                         f'{_cell(row["flows"], True)}{_cell(row["pkts"], True)}'
                         f'{_cell(row["bytes"], True)}</tr>')
        parts.append("</tbody></table>")

    parts.append('<h2 id="timeline">Activity timeline</h2>')
    parts.append('<p class="note">One panel per recording, time from its first packet. Bars: '
                 "bytes the device sent (up) and received (down). Above each panel, one row per "
                 "signature pattern marks the flows that matched it "
                 f"({len(matched)} flow(s) matched). Also as "
                 f'<a href="{OUTPUT_NAMES["timeline"]}">PNG</a>.</p>')
    parts.append(f'<img alt="activity timeline" src="{_data_uri(pictures["timeline"], "image/png")}">')

    parts.append('<h2 id="signature">Signature (pattern.txt)</h2>')
    if pattern_text is None:
        parts.append('<p class="note">No signature given (--signature): no patterns to show.</p>')
    else:
        parts.append(f"<pre>{_e(pattern_text)}</pre>")

    parts.append('<h2 id="files">Files</h2><p class="note">Every CSV in this directory '
                 "(open them in a spreadsheet to see why):</p><ul>")
    for href, label in csv_links:
        parts.append(f'<li><a href="{_e(href)}">{_e(label)}</a></li>')
    parts.append("</ul>")
    if other_links:
        parts.append('<p class="note">Also: ' + ", ".join(
            f'<a href="{_e(href)}">{_e(label)}</a>' for href, label in other_links) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


OTHER_FILES = ["pattern.txt", "profile.yaml", OUTPUT_NAMES["map_png"], OUTPUT_NAMES["map_svg"],
               OUTPUT_NAMES["timeline"]]


def csv_links(output_dir: Path) -> list[tuple[str, str]]:
    """Relative links to every CSV in the output directory (and its subdirectories)."""
    output_dir = Path(output_dir)
    found = sorted(p for p in output_dir.rglob("*.csv") if p.is_file())
    links = []
    for path in found:
        relative = path.relative_to(output_dir).as_posix()
        links.append(("/".join(quote(part) for part in relative.split("/")), relative))
    return links


# ---------------------------------------------------------------------------------------
# Everything


def write_bytes(path: Path, data: bytes) -> None:
    with csvio.atomic_path(path) as tmp:
        try:
            Path(tmp).write_bytes(data)
        except OSError as e:
            raise OutputError(path, f"cannot write ({e.strerror})") from None


def build_report(inputs: Inputs, output_dir: Path, device_ip: str | None = None,
                 device_mac: str | None = None, device_name: str | None = None,
                 signature_path: Path | None = None, pattern_path: Path | None = None,
                 step=lambda name: None) -> Report:
    """Write inventory.csv, endpoint-map.png/.svg, timeline.png and report.html."""
    output_dir = Path(output_dir)
    notes = []
    patterns = None
    if signature_path is not None:
        from .signature import read_signature_csv
        patterns = read_signature_csv(signature_path)
        if pattern_path is None and (Path(signature_path).parent / "pattern.txt").is_file():
            pattern_path = Path(signature_path).parent / "pattern.txt"
    pattern_text = None
    if pattern_path is not None:
        try:
            pattern_text = Path(pattern_path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise InputError(pattern_path, "no such file") from None
        except OSError as e:
            raise InputError(pattern_path, f"cannot read ({e.strerror})") from None
    device = find_device(inputs, device_ip, device_mac, device_name, patterns)
    if inputs.flows is None and inputs.packets is not None:
        inputs.flows = _flows_from_packets(inputs.packets, device)
        notes.append("no flows CSV given: flows were rebuilt from the packets with "
                     "stream-identifier's default timeouts")
    step("inventory")
    paths = {key: output_dir / name for key, name in OUTPUT_NAMES.items()}
    mine = device_flows(inputs.flows, device)
    gateways = set(mine.loc[mine["klass"] == "gateway", "remote_addr"]) if len(mine) else set()
    inventory_table = None
    if inputs.packets is not None:
        inventory_table = inventory(inputs.packets, device, gateways)
        csvio.write_table(inventory_table, INVENTORY, paths["inventory"])
    else:
        paths.pop("inventory")
    step("endpoint map")
    ends = endpoints(mine)
    pictures = {}
    pictures["map_png"], pictures["map_svg"] = draw_endpoint_map(ends, device)
    write_bytes(paths["map_png"], pictures["map_png"])
    write_bytes(paths["map_svg"], pictures["map_svg"])
    step("timeline")
    starts, ends_at = recording_starts(inputs), recording_ends(inputs)
    captures = list(starts.index)
    width = bin_width(float((ends_at - starts).max()) if len(starts) else 1.0)
    matched = match_patterns(mine, patterns)
    if patterns is not None and len(patterns) and matched.empty:
        notes.append("no flow of these recordings matches a pattern of the signature")
    if len(matched):
        matched["rel_start"] = matched["start"] - matched["capture"].map(starts).to_numpy(dtype=float)
        matched["rel_end"] = matched["end"] - matched["capture"].map(starts).to_numpy(dtype=float)
    source = "packets" if inputs.packets is not None else \
        "flows: each flow's bytes spread evenly over its duration"
    bins = activity(inputs, device, starts, width, mine)
    pictures["timeline"] = draw_timeline(bins, width, captures, starts, ends_at, matched,
                                         patterns, device, source)
    write_bytes(paths["timeline"], pictures["timeline"])
    step("report")
    others = [(name, name) for name in OTHER_FILES if (output_dir / name).is_file()]
    page = render_html(device, inputs, inventory_table, ends, pictures, pattern_text,
                       csv_links(output_dir), matched, notes, others)
    csvio.write_text(paths["report"], page)
    return Report(paths, inventory_table, ends, matched, device, notes)


def _flows_from_packets(packets: pd.DataFrame, device: Device) -> pd.DataFrame:
    from . import flows as flow_builder
    missing = [c for c in flow_builder.REQUIRED if c not in packets]
    if missing:
        raise ToolError("the endpoint map and timeline need flows: give the flows CSVs too "
                        f"(the packets CSVs lack {', '.join(missing[:4])} to rebuild them)")
    options = flow_builder.FlowOptions(device_ips=(device.ip,) if device.ip else ())
    return _with_columns(flow_builder.build_flows(packets, options), FLOW_OPTIONAL)
