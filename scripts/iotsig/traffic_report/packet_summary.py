"""What the report keeps of the packets: small aggregates, so that its memory does not grow
with the number of packets.

Pass 1 (read_summary) reads each packets CSV in chunks (csvio.read_table_chunks: the same
column rules and repairs as a whole read) and groups each chunk's packets by what the
inventory and the device detection look at (capture, both MACs and their vendors, the
source IP, the DHCP host name, the direction), with the group's frames, bytes, first and
last time and first row; the groups of all chunks are merged (sums, min, max), which gives
the same table as grouping all the packets at once. Its size grows with the distinct
(MAC, address) senders, not with the packets.

Pass 2 (PacketSummary.frames) reads the packets again, a chunk at a time and only the few
columns the timeline's byte bins need (activity.py): the bins depend on each recording's
first packet and on the longest recording, known only after pass 1.

A file read_table_chunks cannot give in chunks (a spreadsheet's copy, a bad cell) is read
whole, as before; such a file holds at most a spreadsheet's 1,048,576 rows, and its
columns for pass 2 are kept rather than read (and warned about) again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import csvio
from ..errors import InputError
from ..schema import PACKETS

# The columns a summary row is keyed by, those read for it, and those pass 2 reads.
KEYS = [
    "capture",
    "eth_src",
    "eth_dst",
    "eth_src_vendor",
    "eth_dst_vendor",
    "ip_src",
    "dhcp_hostname",
    "direction",
]
REQUIRED = ["capture", "ts", "frame_len", "eth_src", "eth_dst", "ip_src", "ip_dst"]
READ = [*KEYS, "ts", "frame_len", "dhcp_msg_type"]
# A DHCP server's messages echo the client's host name (option 12): the name is the
# client's, the MAC that sent it in one of its own messages, never the server's.
DHCP_SERVER_MESSAGES = ["offer", "ack", "nak"]
BIN_COLUMNS = ["capture", "ts", "frame_len", "eth_src", "eth_dst", "ip_src", "ip_dst"]
VALUES = {
    "frames": "sum",
    "bytes": "sum",
    "first_ts": "min",
    "last_ts": "max",
    "first_row": "min",
}
COLUMNS = [*KEYS, *VALUES]
# CSV text per chunk (tests set it small, so that a capture spans several chunks).
CHUNK_BYTES = csvio.CHUNK_BYTES
MERGE_ROWS = 200_000  # summary rows gathered from chunks before they are merged


@dataclass
class PacketSummary:
    """The packets' groups (COLUMNS: one row per distinct KEYS, in order of first row), and
    where pass 2 reads them again: a packets CSV's path, or the frame read whole."""

    groups: pd.DataFrame
    sources: list[Path | pd.DataFrame] = field(default_factory=list)
    chunk_bytes: int = CHUNK_BYTES

    def captures(self) -> list[str]:
        return list(self.groups["capture"].unique())

    def frames(self, columns: list[str] = BIN_COLUMNS) -> Iterator[pd.DataFrame]:
        """The packets again, `columns` only, a chunk at a time."""
        for source in self.sources:
            if isinstance(source, pd.DataFrame):
                yield source[columns]
                continue
            try:
                yield from csvio.read_table_chunks(
                    source,
                    PACKETS,
                    required=REQUIRED,
                    columns=columns,
                    chunk_bytes=self.chunk_bytes,
                )
            except csvio.NeedsWholeFile:  # (pass 1 read it in chunks, with more columns)
                raise InputError(source, "changed while the report read it") from None


def summarise(frame: pd.DataFrame, first_row: int = 0) -> pd.DataFrame:
    """One chunk's groups; first_row is the row number of the chunk's first packet in the
    whole of the inputs."""
    frame = frame.reset_index(drop=True)
    data = {key: frame.get(key, "") for key in KEYS}
    if "dhcp_msg_type" in frame and "dhcp_hostname" in frame:
        echoed = frame["dhcp_msg_type"].isin(DHCP_SERVER_MESSAGES).to_numpy()
        if echoed.any():
            names = frame["dhcp_hostname"].astype(object).to_numpy().copy()
            names[echoed] = ""
            data["dhcp_hostname"] = names
    values = pd.DataFrame(
        {
            **data,
            "bytes": frame["frame_len"].fillna(0).to_numpy(dtype=float),
            "ts": frame["ts"].to_numpy(dtype=float),
            "row": np.arange(first_row, first_row + len(frame), dtype=np.int64),
        }
    )
    grouped = values.groupby(KEYS, observed=True, sort=False, dropna=False)
    out = grouped.agg(
        frames=("row", "size"),
        bytes=("bytes", "sum"),
        first_ts=("ts", "min"),
        last_ts=("ts", "max"),
        first_row=("row", "min"),
    ).reset_index()
    for key in KEYS:  # plain strings, '' for missing: chunks' categories differ
        column = out[key]
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object)
        out[key] = column.fillna("").astype(str)
    return out


def merged(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Groups of several chunks as one: frames and bytes added, first/last time and first
    row the least/greatest; rows in order of their first packet."""
    if not parts:
        return pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in COLUMNS})
    whole = pd.concat(parts, ignore_index=True)
    out = whole.groupby(KEYS, sort=False, dropna=False).agg(VALUES).reset_index()
    return out.sort_values("first_row", kind="stable").reset_index(drop=True)[COLUMNS]


def _dtype(name: str) -> str:
    return {"frames": "int64", "first_row": "int64"}.get(
        name, "float64" if name in VALUES else "object"
    )


def summary_of(packets: pd.DataFrame) -> PacketSummary:
    """The summary of packets already read whole (to rebuild the flows from them)."""
    return PacketSummary(merged([summarise(packets)]), [packets])


def read_summary(paths: list[Path], chunk_bytes: int | None = None) -> PacketSummary:
    """Pass 1 over the packets CSVs, in chunks."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    everything, sources, offset = _Gathered(), [], 0
    for path in paths:
        try:
            this_file = _Gathered()  # (dropped if the file must be read whole after all)
            for frame in csvio.read_table_chunks(
                path, PACKETS, required=REQUIRED, columns=READ, chunk_bytes=chunk_bytes
            ):
                if len(frame):  # (a block of blank lines is empty)
                    this_file.add(summarise(frame, offset + int(frame.index[0])))
            rows = int(this_file.groups()["frames"].sum())
            sources.append(Path(path))
        except csvio.NeedsWholeFile:  # read whole, as read_table reads it, and kept
            frame = csvio.read_table(
                path, PACKETS, required=REQUIRED, columns=READ + BIN_COLUMNS, compact=True
            )
            this_file, rows = _Gathered(), len(frame)
            this_file.add(summarise(frame, offset))
            sources.append(frame[BIN_COLUMNS])
        everything.add(this_file.groups())
        offset += rows
    return PacketSummary(everything.groups(), sources, chunk_bytes)


class _Gathered:
    """Groups of chunks, merged whenever they hold twice the rows of the last merge: memory
    bounded by the groups, and each row merged a few times only."""

    def __init__(self):
        self.parts: list[pd.DataFrame] = []
        self.rows = 0
        self.merged_rows = 0

    def add(self, part: pd.DataFrame) -> None:
        self.parts.append(part)
        self.rows += len(part)
        if self.rows > max(MERGE_ROWS, 2 * self.merged_rows):
            self.parts = [merged(self.parts)]
            self.rows = self.merged_rows = len(self.parts[0])

    def groups(self) -> pd.DataFrame:
        self.parts = [merged(self.parts)]
        self.rows = self.merged_rows = len(self.parts[0])
        return self.parts[0]
