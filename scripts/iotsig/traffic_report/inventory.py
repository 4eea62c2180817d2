"""inventory.csv: one row per MAC seen, with its vendor, addresses, DHCP host name, traffic
and role (device, gateway, host, multicast, broadcast)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd

from .. import csvio
from ..schema import INVENTORY
from ..timefmt import utc_text
from .inputs import Device


def inventory(
    groups: pd.DataFrame, device: Device, gateway_addresses: set[str] | None = None
) -> pd.DataFrame:
    """One row per MAC seen: vendor, addresses, DHCP host name, traffic, first/last seen.
    groups: the packets' summary (packet_summary.py: one row per capture, MACs, vendors,
    source IP, DHCP host name and direction, with frames, bytes, first/last time)."""
    if groups is None or groups.empty:
        return csvio.empty_frame(INVENTORY)
    src = groups["eth_src"].str.lower()
    table = _traffic(groups, src)
    pairs = _sender_addresses(groups, src)
    routers = _routers(pairs, gateway_addresses or set())
    own = _add_addresses(table, pairs, routers)
    names = pd.DataFrame({"mac": src, "name": groups["dhcp_hostname"]}).drop_duplicates()
    names = names[names["name"] != ""]
    table["dhcp_hostname"] = (
        names.groupby("mac")["name"]
        .agg(lambda a: ";".join(sorted(set(a))))
        .reindex(table.index)
        .fillna("")
    )
    _add_roles(table, device, own, routers)
    table["first_time_utc"] = utc_text(table["first_ts"])
    table["last_time_utc"] = utc_text(table["last_ts"])
    table = table.reset_index(names="mac")
    table["order"] = table["role"].map({"device": 0, "gateway": 1}).fillna(2)
    table = table.sort_values(["order", "bytes", "mac"], ascending=[True, False, True])
    return table.reindex(columns=INVENTORY.names).reset_index(drop=True)


def _traffic(groups: pd.DataFrame, src: pd.Series) -> pd.DataFrame:
    """Per MAC: frames and bytes sent and received, first/last seen, captures, vendor (that
    of its first frame that names one, as source before as destination)."""
    dst = groups["eth_dst"].str.lower()
    frames = groups["frames"].to_numpy()
    size = groups["bytes"].to_numpy(dtype=float)
    first, last = groups["first_ts"].to_numpy(dtype=float), groups["last_ts"].to_numpy(dtype=float)
    row = groups["first_row"].to_numpy()
    sides = pd.DataFrame(
        {
            "mac": pd.concat([src, dst], ignore_index=True),
            "frames": np.r_[frames, frames],
            "sent": np.r_[frames.astype(float), np.zeros(len(dst))],
            "size": np.r_[size, size],
            "sent_size": np.r_[size, np.zeros(len(dst))],
            "first_ts": np.r_[first, first],
            "last_ts": np.r_[last, last],
            "capture": pd.concat([groups["capture"], groups["capture"]], ignore_index=True),
            "vendor": pd.concat(
                [groups["eth_src_vendor"], groups["eth_dst_vendor"]], ignore_index=True
            ),
            "side": np.r_[np.zeros(len(src), int), np.ones(len(dst), int)],
            "row": np.r_[row, row],
        }
    )
    sides = sides[sides["mac"] != ""].sort_values(["side", "row"], kind="stable")
    grouped = sides.groupby("mac", sort=False)
    table = pd.DataFrame(
        {
            "pkts_sent": grouped["sent"].sum(),
            "bytes_sent": grouped["sent_size"].sum(),
            "frames": grouped["frames"].sum(),
            "bytes": grouped["size"].sum(),
            "first_ts": grouped["first_ts"].min(),
            "last_ts": grouped["last_ts"].max(),
            "captures": grouped["capture"].nunique(),
        }
    )
    table["pkts_received"] = table["frames"] - table["pkts_sent"]
    table["bytes_received"] = table["bytes"] - table["bytes_sent"]
    vendors = sides.loc[sides["vendor"] != "", ["mac", "vendor"]].drop_duplicates("mac")
    table["vendor"] = vendors.set_index("mac")["vendor"].reindex(table.index).fillna("")
    return table


def _sender_addresses(groups: pd.DataFrame, src: pd.Series) -> pd.DataFrame:
    """The distinct (MAC, IP it sent from) pairs, with the IP's version, whether it is global
    and its network: a handful, whatever the capture size."""
    pairs = pd.DataFrame({"mac": src, "ip": groups["ip_src"]}).drop_duplicates()
    pairs = pairs[(pairs["mac"] != "") & (pairs["ip"] != "")]
    kinds = {ip: _address_kind(ip) for ip in pairs["ip"].unique()}
    pairs["version"] = pairs["ip"].map(lambda ip: kinds[ip][0])
    # bool even when empty: an empty object column would index columns, not rows
    pairs["global"] = pairs["ip"].map(lambda ip: kinds[ip][1]).astype(bool)
    pairs["net"] = pairs["ip"].map(lambda ip: kinds[ip][2])
    return pairs[pairs["version"] > 0]


def _add_addresses(table: pd.DataFrame, pairs: pd.DataFrame, routers: set[str]) -> pd.DataFrame:
    """The ipv4/ipv6 columns (a router's own addresses only; the outside ones it forwards
    are counted in relayed_addrs). Returns the own (MAC, IP) pairs."""
    host_v6_nets = set(
        pairs.loc[~pairs["mac"].isin(routers) & pairs["global"] & (pairs["version"] == 6), "net"]
    )
    relayed = pairs["mac"].isin(routers) & pairs["global"] & ~pairs["net"].isin(host_v6_nets)
    table["relayed_addrs"] = pairs[relayed].groupby("mac").size().reindex(table.index).fillna(0)
    own = pairs[~relayed]
    for version in (4, 6):
        chosen = own[own["version"] == version]
        joined = chosen.groupby("mac")["ip"].agg(lambda a: ";".join(sort_addresses(a)))
        table[f"ipv{version}"] = joined.reindex(table.index).fillna("")
    return own


def _add_roles(table: pd.DataFrame, device: Device, own: pd.DataFrame, routers: set[str]) -> None:
    device_macs = {device.mac} if device.mac else set()
    if device.ip and not device_macs:
        device_macs = set(own.loc[own["ip"] == device.ip, "mac"])
    table["is_device"] = table.index.isin(device_macs)
    first_octet = pd.Series(table.index.str[:2], index=table.index).map(_hex_or_zero)
    table["role"] = np.select(
        [
            table["is_device"],
            table.index == "ff:ff:ff:ff:ff:ff",
            (first_octet & 1) == 1,
            table.index.isin(routers),
        ],
        ["device", "broadcast", "multicast", "gateway"],
        "host",
    )


def _address_kind(address: str) -> tuple[int, bool, str]:
    """(IP version or 0, is it a global address, its network: /32 or /64)."""
    try:
        ip = ipaddress.ip_address(address)
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


def sort_addresses(addresses) -> list[str]:
    """IPv4 before IPv6, link-local first within a version, then by value."""

    def key(address):
        try:
            ip = ipaddress.ip_address(address)
            return (ip.version, not ip.is_link_local, int(ip))
        except ValueError:
            return (9, True, 0)

    return sorted(set(addresses), key=key)


def _hex_or_zero(value: str) -> int:
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        return 0
