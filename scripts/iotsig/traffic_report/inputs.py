"""The report's inputs: packets and flows CSVs (told apart by their header), and the device
under study."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import csvio
from .. import flows as flow_builder
from ..errors import InputError, ToolError
from ..fields import FLOW_FIELDS
from ..inputs import file_kind
from ..schema import FLOWS, PACKETS
from .packet_summary import PacketSummary, read_summary, summary_of

PACKET_COLUMNS = ["capture", "ts", "frame_len", "eth_src", "eth_dst", "ip_src", "ip_dst"]
PACKET_OPTIONAL = [
    "eth_src_vendor",
    "eth_dst_vendor",
    "ip_version",
    "l4_proto",
    "dhcp_hostname",
    "dhcp_msg_type",  # (a server's messages echo the client's host name: not the server's)
    "direction",
]
FLOW_COLUMNS = [
    "capture",
    "ts",
    "duration",
    "proto",
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "orig_pkts",
    "resp_pkts",
    "orig_frame_bytes",
    "resp_frame_bytes",
]
GEO = ["remote_country", "remote_org"]  # where the remote addresses are (endpoints)
FLOW_OPTIONAL = [
    "uid",
    "service",
    "device_side",
    "orig_mac",
    "resp_mac",
    "remote_h",
    "remote_name",
    "remote_class",
    "first_payload_sizes",
    "orig_size_min",  # (a message cut in two segments: signature.message_matrix)
    "resp_size_min",
    *FLOW_FIELDS,  # the application fields (fields.py)
]


@dataclass
class Device:
    ip: str = ""
    mac: str = ""
    name: str = "device"
    how: str = ""  # where the address came from, said in the report


@dataclass
class Inputs:
    packet_files: list[Path] = field(default_factory=list)
    flow_files: list[Path] = field(default_factory=list)
    packets: pd.DataFrame | None = None  # whole: only where the flows are rebuilt from them
    flows: pd.DataFrame | None = None
    summary: PacketSummary | None = None  # of the packets, whenever packets CSVs are given


def csv_kind(path: Path) -> str:
    """'packets' or 'flows' (or 'signature', 'capture'): inputs.file_kind, the one rule."""
    return file_kind(path, ("packets", "flows"))


def read_inputs(paths: list[Path]) -> Inputs:
    inputs = Inputs()
    for path in paths:
        kind = csv_kind(path)
        if kind == "signature":
            raise InputError(path, "is a signature CSV: give it with --signature")
        if kind == "capture":
            raise InputError(
                path,
                "is a capture: give its packets or flows CSVs (main.py "
                "or packet-translator.py writes them)",
            )
        (inputs.packet_files if kind == "packets" else inputs.flow_files).append(Path(path))
    if inputs.packet_files and inputs.flow_files:  # in chunks: small aggregates only
        inputs.summary = read_summary(inputs.packet_files)
    elif inputs.packet_files:  # whole: the flows are rebuilt from them
        inputs.packets = _read_packets(inputs.packet_files)
        inputs.summary = summary_of(inputs.packets)
    if inputs.flow_files:
        frames = [
            csvio.read_table(
                p, FLOWS, required=FLOW_COLUMNS, columns=FLOW_COLUMNS + FLOW_OPTIONAL + GEO
            )
            for p in inputs.flow_files
        ]
        inputs.flows = with_columns(_concat(frames), FLOW_OPTIONAL)
        if not all(c in f for f in frames for c in GEO):  # a CSV made before these columns:
            inputs.flows = inputs.flows.drop(columns=GEO, errors="ignore")  # looked up instead
    return inputs


def _read_packets(paths: list[Path]) -> pd.DataFrame:
    """The packets whole, with what rebuilding the flows needs."""
    wanted = list(
        dict.fromkeys(
            PACKET_COLUMNS + PACKET_OPTIONAL + flow_builder.REQUIRED + flow_builder.OPTIONAL
        )
    )
    frames = [
        csvio.read_table(p, PACKETS, required=PACKET_COLUMNS, columns=wanted, compact=True)
        for p in paths
    ]
    return with_columns(_concat(frames), PACKET_OPTIONAL)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if len(frames) == 1:
        return frames[0]
    # Categories differ from file to file: concatenating them makes object columns, which is
    # what the rest wants anyway (these frames are a few recordings, not a million rows).
    return pd.concat(frames, ignore_index=True)


def with_columns(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    for name in names:
        if name not in frame:
            frame[name] = ""
    return frame


def text(column: pd.Series) -> pd.Series:
    """A text column as plain strings ('' for missing), from object or categorical."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    return column.fillna("").astype(str)


def flows_from_packets(packets: pd.DataFrame, device: Device) -> pd.DataFrame:
    missing = [c for c in flow_builder.REQUIRED if c not in packets]
    if missing:
        raise ToolError(
            "the endpoint map and timeline need flows: give the flows CSVs too "
            f"(the packets CSVs lack {', '.join(missing[:4])} to rebuild them)"
        )
    options = flow_builder.FlowOptions(device_ips=(device.ip,) if device.ip else ())
    return with_columns(flow_builder.build_flows(packets, options), FLOW_OPTIONAL)


# ---------------------------------------------------------------------------------------
# The device under study


def find_device(
    inputs: Inputs,
    device_ip: str | None = None,
    device_mac: str | None = None,
    device_name: str | None = None,
    signature: pd.DataFrame | None = None,
) -> Device:
    """The device's name, address (and where it came from) and MAC."""
    named = signature is not None and len(signature)
    device = Device(name=device_name or "device")
    if named:
        device.name = device_name or str(signature["device_name"].iloc[0]) or "device"
    if device_ip:
        device.ip, device.how = device_ip, "--device-ip"
    elif named and signature["device_ip"].iloc[0]:
        device.ip, device.how = str(signature["device_ip"].iloc[0]), "the signature"
    else:
        device.ip, device.how = _address_from_columns(inputs)
    device.mac = device_mac.lower() if device_mac else _mac_of(inputs, device.ip)
    if not device.ip and not device.mac:
        raise ToolError(
            "cannot tell which device is under study: give --device-ip (the CSVs "
            "were made without one, and no --signature names it)"
        )
    return device


def _address_from_columns(inputs: Inputs) -> tuple[str, str]:
    """The address the flows' device_side, else the packets' direction, names most."""
    f, s = inputs.flows, inputs.summary
    if f is not None and (text(f["device_side"]) != "").any():
        side = text(f["device_side"])
        addresses = pd.concat(
            [text(f["orig_h"])[side == "orig"], text(f["resp_h"])[side == "resp"]]
        )
        return addresses.mode().iloc[0], "the flows' device_side column"
    if s is not None and (s.groups["direction"] == "sent").any():
        sent = s.groups[s.groups["direction"] == "sent"]
        return most_frequent(sent["ip_src"], sent["frames"]), "the packets' direction column"
    return "", ""


def _mac_of(inputs: Inputs, ip: str) -> str:
    """The MAC that sends most often from `ip` (packets, else the flows' orig_mac)."""
    if not ip:
        return ""
    if inputs.summary is not None:
        groups = inputs.summary.groups
        macs, frames = groups["eth_src"], groups["frames"]
        chosen = (groups["ip_src"] == ip) & (macs != "")
    elif inputs.flows is not None:
        macs = text(inputs.flows["orig_mac"])
        frames = pd.Series(1, index=macs.index)
        chosen = (text(inputs.flows["orig_h"]) == ip) & (macs != "")
    else:
        return ""
    return most_frequent(macs[chosen], frames[chosen]).lower() if chosen.any() else ""


def most_frequent(values: pd.Series, weights: pd.Series) -> str:
    """The value of the greatest total weight, the least of them on a tie: Series.mode of
    the values each repeated `weight` times."""
    totals = weights.groupby(values.to_numpy()).sum()  # (sorted by value)
    return str(totals.idxmax())
