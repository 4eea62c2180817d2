"""Packets CSV -> flows CSV: one row per flow, Zeek conn.log style, all in vectorised pandas.

A flow is the packets of one 5-tuple (both directions) of one capture. It ends after
`idle_timeout` seconds without a packet, at a new TCP SYN once the connection had other
packets (port reuse), and is cut every `max_duration` seconds counted from its first packet.
Non-IP frames are grouped by their addresses and protocol (ARP by sender/target IP).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from .schema import APP_FIELDS, FLOWS

DEFAULT_IDLE_TIMEOUT = 120.0   # NFStream's default idle timeout
DEFAULT_MAX_DURATION = 600.0
FIRST_SIZES = 10
PORT_SPAN = 65537              # endpoint key = address code * PORT_SPAN + port + 1

# Columns the flow builder reads from a packets CSV.
REQUIRED = ["capture", "frame_number", "ts", "frame_len", "eth_src", "eth_dst", "ip_src",
            "ip_dst", "l4_proto", "src_port", "dst_port", "tcp_flags", "l4_payload_len",
            "highest_layer", "dns_qry_name", "dns_qry_type", "dns_flags_response",
            "dns_answer_addrs", "http_request_method", "http_host", "http_request_uri",
            "tls_server_name", "dhcp_msg_type", "coap_type", "coap_code", "coap_uri"]
OPTIONAL = ["eth_src_vendor", "eth_dst_vendor", "icmp_type", "arp_opcode", "direction"]
FLOW_TEXT_FIELDS = APP_FIELDS + ["http_host", "icmp_type", "arp_opcode"]
GENERIC_LAYERS = {"", "eth", "sll", "ip", "ipv6", "tcp", "udp", "data", "icmp", "icmpv6",
                  "arp", "igmp", "ethertype", "llc", "vlan", "_ws.malformed", "_ws.short"}


@dataclass
class FlowOptions:
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_duration: float = DEFAULT_MAX_DURATION
    device_ips: tuple[str, ...] = ()


def build_flows(packets: pd.DataFrame, options: FlowOptions | None = None) -> pd.DataFrame:
    """Packets (as read by csvio.read_table) -> flows, ordered by first packet."""
    options = options or FlowOptions()
    if packets.empty:
        return pd.DataFrame(columns=FLOWS.names)
    p = _prepare(packets)
    _assign_flows(p, options)
    is_orig = _orient(p)
    flows = _aggregate(p, is_orig)
    _label_device(flows, p, is_orig, options)
    _name_remote(flows, p, options)
    return flows.reindex(columns=FLOWS.names)


def _text(packets: pd.DataFrame, name: str) -> pd.Series:
    if name not in packets:
        return pd.Series("", index=packets.index, dtype=object)
    column = packets[name]
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    return column.fillna("").astype(str)


def _prepare(packets: pd.DataFrame) -> pd.DataFrame:
    """A working frame with integer codes for addresses and endpoints."""
    p = pd.DataFrame(index=pd.RangeIndex(len(packets)))
    for name in ("capture", "l4_proto", "tcp_flags", "highest_layer", "eth_src", "eth_dst",
                 "ip_src", "ip_dst", "direction", "eth_src_vendor", "eth_dst_vendor"):
        p[name] = _text(packets, name).to_numpy()
    for name in ("ts", "frame_len", "frame_number", "src_port", "dst_port", "l4_payload_len"):
        p[name] = pd.to_numeric(packets[name], errors="coerce").to_numpy(dtype=float)
    p["ts"] = p["ts"].fillna(0.0)
    p["frame_len"] = p["frame_len"].fillna(0.0)
    p["l4_payload_len"] = p["l4_payload_len"].fillna(0.0)
    p["position"] = np.arange(len(p))
    # Address of each side: IP when there is one (ARP sender/target IP too), else MAC.
    src = np.where(p["ip_src"] != "", p["ip_src"], p["eth_src"])
    dst = np.where(p["ip_dst"] != "", p["ip_dst"], p["eth_dst"])
    codes, vocabulary = pd.factorize(np.concatenate([src, dst]))
    p["src_addr"], p["dst_addr"] = codes[:len(p)], codes[len(p):]
    p.attrs["addresses"] = np.asarray(vocabulary, dtype=object)
    src_port = np.nan_to_num(p["src_port"].to_numpy(), nan=-1).astype(np.int64)
    dst_port = np.nan_to_num(p["dst_port"].to_numpy(), nan=-1).astype(np.int64)
    p["src_key"] = p["src_addr"].to_numpy(np.int64) * PORT_SPAN + src_port + 1
    p["dst_key"] = p["dst_addr"].to_numpy(np.int64) * PORT_SPAN + dst_port + 1
    for name in FLOW_TEXT_FIELDS + ["dns_flags_response", "dns_answer_addrs"]:
        p[name] = _text(packets, name).to_numpy()
    return p


def _assign_flows(p: pd.DataFrame, options: FlowOptions) -> None:
    """Give each packet a flow number, flows numbered by their first packet."""
    low = np.minimum(p["src_key"], p["dst_key"])
    high = np.maximum(p["src_key"], p["dst_key"])
    conversation = pd.DataFrame({"c": p["capture"], "l": p["l4_proto"], "lo": low, "hi": high}
                                ).groupby(["c", "l", "lo", "hi"], sort=False).ngroup().to_numpy()
    order = np.lexsort((p["position"].to_numpy(), p["ts"].to_numpy(), conversation))
    conversation = conversation[order]
    ts = p["ts"].to_numpy()[order]
    pure_syn = (p["tcp_flags"].to_numpy() == "S")[order]
    same = np.r_[False, conversation[1:] == conversation[:-1]]
    gap = np.r_[np.inf, np.diff(ts)]
    previous_syn = np.r_[False, pure_syn[:-1]]
    new_flow = ~same | (gap > options.idle_timeout) | (pure_syn & ~previous_syn)
    segment = np.cumsum(new_flow)
    segment_start = ts[np.flatnonzero(new_flow)][segment - 1]
    if options.max_duration and options.max_duration > 0:
        chunk = np.floor((ts - segment_start) / options.max_duration).astype(np.int64)
    else:
        chunk = np.zeros(len(ts), np.int64)
    raw_flow = pd.factorize(segment.astype(np.int64) * (chunk.max() + 1) + chunk)[0]
    flow_sorted = np.empty(len(p), np.int64)
    flow_sorted[order] = raw_flow
    # Renumber flows by (first timestamp, first frame) so the CSV reads in time order.
    first = pd.DataFrame({"f": flow_sorted, "ts": p["ts"], "pos": p["position"]}
                         ).groupby("f").agg(ts=("ts", "min"), pos=("pos", "min"))
    rank = np.empty(len(first), np.int64)
    rank[first.sort_values(["ts", "pos"]).index.to_numpy()] = np.arange(len(first))
    p["flow"] = rank[flow_sorted]
    p.sort_values(["flow", "ts", "position"], inplace=True, kind="stable")
    p.reset_index(drop=True, inplace=True)


def _orient(p: pd.DataFrame) -> np.ndarray:
    """orig = sender of the TCP SYN, else receiver of the SYN-ACK, else the first packet's
    sender; a first packet from a well-known port to a high one is taken for a reply."""
    flow = p["flow"].to_numpy()
    starts = np.flatnonzero(np.r_[True, flow[1:] != flow[:-1]])
    orig_key = p["src_key"].to_numpy()[starts].copy()
    first_src_port = p["src_port"].to_numpy()[starts]
    first_dst_port = p["dst_port"].to_numpy()[starts]
    looks_reply = (first_src_port < 1024) & (first_dst_port >= 1024)
    orig_key[looks_reply] = p["dst_key"].to_numpy()[starts][looks_reply]
    flags = p["tcp_flags"].to_numpy()
    for flag, key in (("SA", "dst_key"), ("S", "src_key")):  # SYN wins over SYN-ACK
        rows = np.flatnonzero(flags == flag)
        if len(rows):
            first_rows = pd.Series(rows).groupby(flow[rows]).first()
            orig_key[first_rows.index.to_numpy()] = p[key].to_numpy()[first_rows.to_numpy()]
    return p["src_key"].to_numpy() == orig_key[flow]


def _aggregate(p: pd.DataFrame, is_orig: np.ndarray) -> pd.DataFrame:
    addresses = p.attrs["addresses"]
    flow = p["flow"].to_numpy()
    starts = np.flatnonzero(np.r_[True, flow[1:] != flow[:-1]])
    n = len(starts)
    work = pd.DataFrame({"flow": flow, "orig": is_orig, "ts": p["ts"],
                         "frame_len": p["frame_len"], "payload": p["l4_payload_len"],
                         "frame_number": p["frame_number"]})
    grouped = work.groupby("flow", sort=True)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    out["capture"] = p["capture"].to_numpy()[starts]
    out["uid"] = out["capture"] + "#" + pd.Series(np.arange(1, n + 1)).astype(str)
    first_ts, last_ts = grouped["ts"].min().to_numpy(), grouped["ts"].max().to_numpy()
    out["ts"] = first_ts
    out["duration"] = last_ts - first_ts
    out["proto"] = p["l4_proto"].to_numpy()[starts]

    # Endpoints: from the first packet, swapped where it was sent by the responder.
    first_is_orig = is_orig[starts]
    src_addr, dst_addr = p["src_addr"].to_numpy()[starts], p["dst_addr"].to_numpy()[starts]
    src_port, dst_port = p["src_port"].to_numpy()[starts], p["dst_port"].to_numpy()[starts]
    out["orig_h"] = addresses[np.where(first_is_orig, src_addr, dst_addr)]
    out["resp_h"] = addresses[np.where(first_is_orig, dst_addr, src_addr)]
    out["orig_p"] = np.where(first_is_orig, src_port, dst_port)
    out["resp_p"] = np.where(first_is_orig, dst_port, src_port)

    for side, mask in (("orig", is_orig), ("resp", ~is_orig)):
        part = work[mask].groupby("flow")
        out[f"{side}_pkts"] = part.size().reindex(range(n), fill_value=0).to_numpy()
        out[f"{side}_bytes"] = part["payload"].sum().reindex(range(n), fill_value=0).to_numpy()
        out[f"{side}_frame_bytes"] = part["frame_len"].sum().reindex(range(n), fill_value=0).to_numpy()
        sizes = part["frame_len"].agg(["min", "max", "mean"]).reindex(range(n))
        sizes["std"] = part["frame_len"].std(ddof=0).reindex(range(n))
        for stat in ("min", "max", "mean", "std"):
            out[f"{side}_size_{stat}"] = sizes[stat].to_numpy()
        iat = work.loc[mask, ["flow", "ts"]].copy()
        iat["gap"] = iat.groupby("flow")["ts"].diff()
        gaps = iat.dropna(subset=["gap"]).groupby("flow")["gap"]
        stats = gaps.agg(["min", "max", "mean"]).reindex(range(n))
        stats["std"] = gaps.std(ddof=0).reindex(range(n))
        for stat in ("min", "max", "mean", "std"):
            out[f"{side}_iat_{stat}"] = stats[stat].round(6).to_numpy()
        macs = pd.DataFrame({"flow": flow[mask], "mac": p["eth_src"].to_numpy()[mask],
                             "vendor": p["eth_src_vendor"].to_numpy()[mask]}).groupby("flow").first()
        out[f"{side}_mac"] = macs["mac"].reindex(range(n)).fillna("").to_numpy()
        out[f"{side}_vendor"] = macs["vendor"].reindex(range(n)).fillna("").to_numpy()
    # A responder that never sent: its MAC is the destination of the originator's packets.
    silent = out["resp_mac"] == ""
    dst_mac = pd.Series(p["eth_dst"].to_numpy()[starts])
    dst_vendor = pd.Series(p["eth_dst_vendor"].to_numpy()[starts])
    out.loc[silent, "resp_mac"] = dst_mac[silent]
    out.loc[silent, "resp_vendor"] = dst_vendor[silent]

    out["first_frame"] = grouped["frame_number"].min().to_numpy()
    out["last_frame"] = grouped["frame_number"].max().to_numpy()
    out["service"] = _distinct_per_flow(flow, p["highest_layer"].to_numpy(), n,
                                        skip=GENERIC_LAYERS)
    for name in FLOW_TEXT_FIELDS:
        out[name] = _distinct_per_flow(flow, p[name].to_numpy(), n)
    out["first_sizes"] = _first_sizes(flow, p["frame_len"].to_numpy(), is_orig, n)
    return out


def _distinct_per_flow(flow: np.ndarray, values: np.ndarray, n: int,
                       skip: set | None = None) -> np.ndarray:
    """Distinct non-empty values of each flow, ';'-joined in first-seen order."""
    keep = values != ""
    if skip:
        keep &= ~pd.Series(values).isin(skip).to_numpy()
    result = np.full(n, "", dtype=object)
    if not keep.any():
        return result
    pairs = pd.DataFrame({"flow": flow[keep], "value": values[keep]})
    pairs = pairs.assign(value=pairs["value"].str.split(";")).explode("value")
    pairs = pairs[pairs["value"] != ""].drop_duplicates()
    joined = pairs.groupby("flow", sort=False)["value"].agg(";".join)
    result[joined.index.to_numpy()] = joined.to_numpy()
    return result


def _first_sizes(flow: np.ndarray, sizes: np.ndarray, is_orig: np.ndarray, n: int) -> np.ndarray:
    position = pd.Series(flow).groupby(flow).cumcount().to_numpy()
    head = position < FIRST_SIZES
    signed = np.where(is_orig, sizes, -sizes)[head].astype(np.int64).astype(str)
    joined = pd.Series(signed).groupby(flow[head], sort=True).agg(" ".join)
    result = np.full(n, "", dtype=object)
    result[joined.index.to_numpy()] = joined.to_numpy()
    return result


def _label_device(flows: pd.DataFrame, p: pd.DataFrame, is_orig: np.ndarray,
                  options: FlowOptions) -> None:
    if options.device_ips:
        orig = flows["orig_h"].isin(options.device_ips).to_numpy()
        resp = flows["resp_h"].isin(options.device_ips).to_numpy()
    else:  # from the packets' direction column, when the translator was told the device
        direction = p["direction"].to_numpy()
        device_sent_as = pd.Series(np.where(direction == "sent", is_orig, ~is_orig))
        known = (direction == "sent") | (direction == "received")
        votes = device_sent_as[known].groupby(p["flow"].to_numpy()[known]).mean()
        share = votes.reindex(range(len(flows))).to_numpy()
        orig, resp = share > 0.5, share < 0.5
    flows["device_side"] = np.select([orig, resp], ["orig", "resp"], "")
    flows["remote_h"] = np.where(flows["device_side"] == "resp", flows["orig_h"], flows["resp_h"])


def _name_remote(flows: pd.DataFrame, p: pd.DataFrame, options: FlowOptions) -> None:
    names = _dns_names_for_flows(flows, p, options)
    tls = flows["tls_server_name"].str.split(";").str[0].fillna("")
    host = flows["http_host"].str.split(";").str[0].str.replace(r":\d+$", "", regex=True).fillna("")
    remote_is_orig = (flows["device_side"] == "resp").to_numpy()
    # The TLS/HTTP names belong to the server: only use them when the remote is the server.
    tls = tls.where(~remote_is_orig, "")
    host = host.where(~remote_is_orig, "")
    flows["remote_name"] = np.where(names != "", names, np.where(tls != "", tls, host))
    flows["remote_class"] = _classify(flows["remote_h"].to_numpy(), _gateways(p, options))


def _dns_names_for_flows(flows: pd.DataFrame, p: pd.DataFrame, options: FlowOptions) -> np.ndarray:
    """The query name whose DNS answer gave the flow's remote address, latest answer at or
    before the flow's start, in the same capture (and to the device, when it is known)."""
    answers = (p["dns_flags_response"] == "1") & (p["dns_answer_addrs"] != "")
    if options.device_ips:
        answers &= p["ip_dst"].isin(options.device_ips)
    elif (p["direction"] != "").any():
        answers &= p["direction"] == "received"
    result = np.full(len(flows), "", dtype=object)
    if not answers.any():
        return result
    table = p.loc[answers, ["capture", "ts", "dns_qry_name", "dns_answer_addrs"]].copy()
    table["name"] = table["dns_qry_name"].str.split(";").str[0]
    table["addr"] = table["dns_answer_addrs"].str.split(";")
    table = table.explode("addr")[["capture", "ts", "addr", "name"]]
    table = table[table["addr"] != ""].sort_values("ts", kind="stable")
    lookup = pd.DataFrame({"capture": flows["capture"].to_numpy(), "ts": flows["ts"].to_numpy(),
                           "addr": flows["remote_h"].to_numpy(), "row": np.arange(len(flows))}
                          ).sort_values("ts", kind="stable")
    matched = pd.merge_asof(lookup, table, on="ts", by=["capture", "addr"], direction="backward")
    result[matched["row"].to_numpy()] = matched["name"].fillna("").to_numpy()
    return result


def _gateways(p: pd.DataFrame, options: FlowOptions) -> set[str]:
    """Local addresses acting as the device's DNS server, DHCP server or router."""
    is_local = _is_local_vector
    dns_servers = set(p.loc[(p["dst_port"] == 53) & (p["l4_proto"] != "icmp"), "ip_dst"])
    dns_servers |= set(p.loc[(p["src_port"] == 53) & (p["l4_proto"] != "icmp"), "ip_src"])
    dhcp_servers = set(p.loc[p["dhcp_msg_type"].isin(["offer", "ack"]), "ip_src"])
    # The router: the MAC that packets to external addresses go to; its local IPs.
    external_dst = ~is_local(p["ip_dst"].to_numpy()) & (p["ip_dst"] != "")
    router_macs = set(p.loc[external_dst, "eth_dst"]) - {""}
    router_ips = set(p.loc[p["eth_src"].isin(router_macs), "ip_src"])
    candidates = (dns_servers | dhcp_servers | router_ips) - {"", "0.0.0.0"}
    return {a for a in candidates if address_class(a) == "local"}


def _is_local_vector(addresses: np.ndarray) -> np.ndarray:
    codes, uniques = pd.factorize(addresses)
    local = np.array([address_class(u) != "external" for u in uniques] + [True])
    return local[codes]


@lru_cache(maxsize=65536)
def address_class(address: str) -> str:
    """local, multicast, broadcast or external (gateway is decided per capture)."""
    if not address:
        return ""
    if ":" in address and len(address) == 17 and address.count(":") == 5 and "." not in address \
            and all(len(part) == 2 for part in address.split(":")):  # a MAC (non-IP frames)
        if address.lower() == "ff:ff:ff:ff:ff:ff":
            return "broadcast"
        return "multicast" if int(address[:2], 16) & 1 else "local"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "external"
    if ip.version == 4 and (ip == ipaddress.IPv4Address("255.255.255.255")):
        return "broadcast"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or ip.is_link_local or ip.is_loopback or ip.is_unspecified:
        return "local"
    return "external"


def _classify(addresses: np.ndarray, gateways: set[str]) -> np.ndarray:
    codes, uniques = pd.factorize(addresses)
    classes = np.array(["gateway" if u in gateways else address_class(u) for u in uniques]
                       + [""], dtype=object)
    return classes[codes]
