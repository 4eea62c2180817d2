"""Address and remote-party rules, written once for every stage: an address's class, one
spelling of an IP address, which side holds a flow's fixed (server) port, and the remote
party as seen from the device."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import numpy as np
import pandas as pd

# An ephemeral (client) port is at least this; a lower originator port facing one is the
# server's (e.g. the plug answering from 9999 to the phone's random port).
EPHEMERAL_FROM = 1024

# The source address of a host that has none yet: its DHCP DISCOVER or REQUEST (0.0.0.0),
# its IPv6 duplicate address check (::).
UNSPECIFIED_ADDRESSES = ("0.0.0.0", "::")
MAC_PATTERN = re.compile(r"^[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}$", re.I)


@lru_cache(maxsize=65536)
def canonical_ip(text: str) -> str:
    """An IP address as tshark and Python write it (IPv6 in lower case, zeros compressed);
    other text as it is."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text


def canonical_ips(cell: str) -> str:
    """A ';'-separated list of addresses, each in its one spelling."""
    return ";".join(canonical_ip(part) for part in cell.split(";"))


def unspecified_device_sides(
    flows: pd.DataFrame, device_ip: str | None = None
) -> tuple[pd.Series, pd.Series]:
    """(device is the originator, device is the responder) of the flows from or to the
    unspecified address (a DHCP DISCOVER/REQUEST from 0.0.0.0) that stream-identifier
    credited to the device by its packets' direction (its MAC), though no address of them
    is the device's IP: their device_side column, where the flows have one. With
    `device_ip`, only those whose MAC is one that address has in the other flows (flows
    built for several devices credit each its own)."""
    none = pd.Series(False, index=flows.index)
    if "device_side" not in flows:
        return none, none
    side = flows["device_side"].astype(object).fillna("")
    orig = (side == "orig") & flows["orig_h"].isin(UNSPECIFIED_ADDRESSES)
    resp = (side == "resp") & flows["resp_h"].isin(UNSPECIFIED_ADDRESSES)
    if device_ip is not None and (orig.any() or resp.any()):
        if "orig_mac" not in flows or "resp_mac" not in flows:
            return none, none
        macs = set(flows.loc[flows["orig_h"] == device_ip, "orig_mac"].astype(object))
        macs |= set(flows.loc[flows["resp_h"] == device_ip, "resp_mac"].astype(object))
        orig &= flows["orig_mac"].astype(object).isin(macs)
        resp &= flows["resp_mac"].astype(object).isin(macs)
    return orig, resp


def is_mac(address: str) -> bool:
    return (
        len(address) == 17
        and address.count(":") == 5
        and "." not in address
        and all(len(part) == 2 for part in address.split(":"))
    )


@lru_cache(maxsize=65536)
def address_class(address: str) -> str:
    """local, multicast, broadcast or external (gateway is decided per capture)."""
    if not address:
        return ""
    if is_mac(address):  # non-IP frames are keyed by MAC
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


def address_classes(addresses) -> np.ndarray:
    """address_class of each address, computed once per distinct address."""
    codes, uniques = pd.factorize(pd.Series(addresses, dtype=object))
    return np.array([address_class(u) for u in uniques] + [""], dtype=object)[codes]


def server_ports(orig_p, resp_p) -> tuple[np.ndarray, np.ndarray]:
    """(the fixed port of each flow, NaN where it has none; True where the originator holds
    it). The responder's port, unless the originator's is lower and the responder's looks
    ephemeral."""
    orig_p = pd.to_numeric(pd.Series(orig_p), errors="coerce").to_numpy(dtype=float)
    resp_p = pd.to_numeric(pd.Series(resp_p), errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        orig_serves = (orig_p < resp_p) & (resp_p >= EPHEMERAL_FROM)
    return np.where(orig_serves, orig_p, resp_p), orig_serves


def remote_party(
    orig_h, resp_h, device_is_orig, described_h=None, names=None, classes=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(address, name, class) of each flow's remote party seen from the device.

    A flows CSV's remote_name and remote_class describe its remote_h (`described_h`). Where
    that is not the party seen from the device (stream-identifier ran without knowing the
    device and described the responder, the device itself), the name is dropped and the
    class is the one the CSV gives that address elsewhere, else the address's own class."""
    orig_h = np.asarray(orig_h, dtype=object)
    resp_h = np.asarray(resp_h, dtype=object)
    remote_h = np.where(np.asarray(device_is_orig, dtype=bool), resp_h, orig_h).astype(object)
    n = len(remote_h)
    names = np.full(n, "", dtype=object) if names is None else np.asarray(names, dtype=object)
    classes = np.full(n, "", dtype=object) if classes is None else np.asarray(classes, dtype=object)
    described = (
        np.asarray(described_h, dtype=object).astype(str) == remote_h.astype(str)
        if described_h is not None
        else np.zeros(n, bool)
    )
    name = np.where(described, names, "").astype(object)
    klass = np.where(described, classes, "").astype(object)
    missing = klass == ""
    if missing.any():
        known = pd.Series(classes[described], index=remote_h[described])
        known = known[~known.index.duplicated() & (known != "")]
        guessed = pd.Series(remote_h[missing]).map(known).astype(object)
        unknown = guessed.isna().to_numpy()
        guessed[unknown] = address_classes(remote_h[missing][unknown])
        klass[missing] = guessed.to_numpy()
    return remote_h, name, klass


def describe_remote(row) -> str:
    """How pattern.txt names a pattern's remote party: its name and a few of its addresses,
    or an address and its class."""
    remote = str(row.remote)
    addresses = [a for a in str(row.remote_addrs).split(";") if a and a != remote]
    if row.remote_kind in ("domain", "class"):
        shown = ", ".join(addresses[:4]) + (" ..." if len(addresses) > 4 else "")
        return f"{remote} ({shown})" if shown else remote
    klass = row.remote_class if isinstance(row.remote_class, str) else address_class(remote)
    return f"{remote} ({klass})" if klass else remote
