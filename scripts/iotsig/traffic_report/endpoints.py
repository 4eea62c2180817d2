"""The device's flows, each with its remote party (parties.remote_party) and a protocol
label, and one row per remote party."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import geo
from .. import signature as sig
from ..parties import remote_party, server_ports
from .inputs import Device, text
from .inventory import sort_addresses

CLASS_ORDER = ["gateway", "local", "multicast", "broadcast", "external", ""]
ENDPOINT_COLUMNS = [
    "remote",
    "remote_class",
    "country",
    "org",
    "addresses",
    "protocols",
    "flows",
    "pkts",
    "bytes",
    "first_ts",
]


def device_flows(flows: pd.DataFrame | None, device: Device) -> pd.DataFrame:
    """The flows the device is a side of, with the remote party and a protocol label."""
    extra = ["side", "remote_addr", "remote", "klass", "country", "org", "label", "bytes", "pkts"]
    if flows is None or flows.empty:
        return pd.DataFrame(columns=[*(flows.columns if flows is not None else []), *extra])
    # The one rule the signatures are learned with (signature.device_flows); non-IP flows
    # (ARP) are keyed by MAC.
    macs = {"orig_mac", "resp_mac"} <= set(flows.columns)
    keys = ["orig_h", "resp_h", *(["orig_mac", "resp_mac"] if macs else [])]
    keyed = flows.assign(**{c: text(flows[c]).str.lower() for c in keys})
    mac = (device.mac or "").lower() if macs else None
    chosen = sig.device_flows(sig.Recording("", keyed), device.ip or device.mac.lower(), mac)
    mine = flows.loc[chosen.index].copy()
    device_is_orig = (chosen["device_side"] == "orig").to_numpy()
    mine["side"] = np.where(device_is_orig, "orig", "resp")
    remote_h, name, klass = remote_party(
        text(mine["orig_h"]).to_numpy(),
        text(mine["resp_h"]).to_numpy(),
        device_is_orig,
        text(mine["remote_h"]).to_numpy(),
        text(mine["remote_name"]).to_numpy(),
        text(mine["remote_class"]).to_numpy(),
    )
    mine["remote_addr"] = remote_h
    mine["remote"] = np.where(name != "", name, remote_h)
    mine["klass"] = klass
    mine["country"], mine["org"] = _located(mine, remote_h)
    mine["label"] = protocol_labels(mine)
    mine["bytes"] = _sum(mine, "orig_frame_bytes", "resp_frame_bytes")
    mine["pkts"] = _sum(mine, "orig_pkts", "resp_pkts")
    return mine


def _located(mine: pd.DataFrame, remote_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Country and organisation of each flow's remote address: the flows CSV's, where its
    remote_h is that address; looked up in the same offline data where it is not (the
    CSV was made without knowing the device, or before it had these columns)."""
    if "remote_country" not in mine or "remote_org" not in mine:
        found = geo.columns_for(remote_h)
        return found["remote_country"], found["remote_org"]
    described = text(mine["remote_h"]).to_numpy() == remote_h
    country = text(mine["remote_country"]).to_numpy().astype(object)
    org = text(mine["remote_org"]).to_numpy().astype(object)
    if not described.all():
        found = geo.columns_for(remote_h[~described])
        country[~described] = found["remote_country"]
        org[~described] = found["remote_org"]
    return country, org


def _sum(frame: pd.DataFrame, a: str, b: str) -> pd.Series:
    return pd.to_numeric(frame[a], errors="coerce").fillna(0) + pd.to_numeric(
        frame[b], errors="coerce"
    ).fillna(0)


# UDP between two ports this high (the dynamic range of Linux, 32768-60999, and of IANA,
# 49152-65535) has no fixed port to speak of: one label, not one per port picked.
DYNAMIC_PORTS_FROM = 32768


def protocol_labels(f: pd.DataFrame) -> np.ndarray:
    """tcp/443 tls, udp/53 dns, arp, icmp: protocol, the fixed (server) port, the service;
    UDP whose lower port is a dynamic one is udp/ephemeral."""
    port, _ = server_ports(f["orig_p"], f["resp_p"])
    known = ~np.isnan(port)
    port_text = np.full(len(port), "", dtype=object)
    port_text[known] = np.char.add("/", port[known].astype(np.int64).astype(str)).astype(object)
    service = text(f["service"]).to_numpy().astype(object)
    proto = text(f["proto"]).to_numpy().astype(object)
    lower = np.fmin(
        pd.to_numeric(pd.Series(f["orig_p"]), errors="coerce").to_numpy(dtype=float),
        pd.to_numeric(pd.Series(f["resp_p"]), errors="coerce").to_numpy(dtype=float),
    )
    with np.errstate(invalid="ignore"):
        ephemeral = (proto == "udp") & (lower >= DYNAMIC_PORTS_FROM)
    port_text[ephemeral] = "/ephemeral"
    service_text = np.where((service != "") & (service != proto), " " + service, "")
    return (proto.astype(object) + port_text + service_text).astype(object)


def endpoints(mine: pd.DataFrame) -> pd.DataFrame:
    """One row per remote party the device talked to (domain name where known, else the
    address): class, addresses, protocols (by bytes), flows, packets, bytes."""
    if mine.empty:
        return pd.DataFrame(columns=ENDPOINT_COLUMNS)
    grouped = mine.groupby("remote", sort=False)
    table = pd.DataFrame(
        {
            "flows": grouped.size(),
            "pkts": grouped["pkts"].sum(),
            "bytes": grouped["bytes"].sum(),
            "first_ts": grouped["ts"].min(),
        }
    )
    by_class = mine.groupby(["remote", "klass"], sort=False)["bytes"].sum().reset_index()
    by_class = by_class.sort_values("bytes", ascending=False).drop_duplicates("remote")
    table["remote_class"] = by_class.set_index("remote")["klass"].reindex(table.index).fillna("")
    addresses = mine[["remote", "remote_addr"]].drop_duplicates()
    table["addresses"] = (
        addresses.groupby("remote")["remote_addr"]
        .agg(lambda a: ";".join(sort_addresses(a)))
        .reindex(table.index)
        .fillna("")
    )
    for column in ("country", "org"):  # a name's addresses may be in several places
        table[column] = (
            mine.loc[mine[column] != "", ["remote", column]]
            .drop_duplicates()
            .groupby("remote")[column]
            .agg(lambda v: ";".join(sorted(v)))
            .reindex(table.index)
            .fillna("")
        )
    labels = mine.groupby(["remote", "label"], sort=False)["bytes"].sum().reset_index()
    labels = labels.sort_values(["remote", "bytes"], ascending=[True, False])
    table["protocols"] = labels.groupby("remote")["label"].agg(", ".join).reindex(table.index)
    table = table.reset_index(names="remote")
    table["rank"] = table["remote_class"].map({c: i for i, c in enumerate(CLASS_ORDER)}).fillna(9)
    table = table.sort_values(["rank", "bytes", "remote"], ascending=[True, False, True])
    return table.reindex(columns=ENDPOINT_COLUMNS).reset_index(drop=True)


def fold_small(ends: pd.DataFrame, limit: int) -> pd.DataFrame:
    """At most `limit` rows: the largest by bytes (in their order), the rest as one."""
    if len(ends) <= limit:
        return ends
    keep = ends.nlargest(limit - 1, "bytes")
    rest = ends.drop(keep.index)
    other = pd.DataFrame(
        [
            {
                "remote": f"{len(rest)} more parties (see the table)",
                "remote_class": "",
                "country": "",
                "org": "",
                "addresses": "",
                "protocols": "various",
                "flows": rest["flows"].sum(),
                "pkts": rest["pkts"].sum(),
                "bytes": rest["bytes"].sum(),
                "first_ts": rest["first_ts"].min(),
            }
        ]
    )
    kept = ends.loc[ends.index.isin(keep.index)]  # keep the class grouping order
    return pd.concat([kept, other], ignore_index=True)
