"""The flows CSV of a packets CSV too big to hold at once, built partition by partition.

Pass 1 reads the packets CSV in chunks (csvio.read_table_chunks: read_table's column rules
and repairs), sends each packet to one of K partitions by its conversation
(flows.conversation_hash: a partition holds whole conversations, so its flows are built
alone) and keeps what names and classes a flow beyond its own packets (flows.evidence: the
DNS answers and who acts as gateway; small). Pass 2 builds each partition's flows with
the vectorised builder (flows.flows_of) and all that evidence, each partition sorted as
the CSV is (first packet's time, then its row). The flows CSV is then written a batch at a
time, in the order of the whole, by merging the sorted partitions: the same bytes as
building all the flows at once (flows.build_flows).

Memory: one chunk, one partition's build and one batch, plus ~40 bytes per flow for the
merge and one row per distinct (MAC, IP) sender and DNS answer address. A partition holds
whole conversations, so the biggest conversation (one 5-tuple all through the capture)
bounds it from below. Partitions are Arrow IPC files (no text to parse again) in a hidden
folder beside the flows CSV that is removed however the run ends (csvio.temporary_folder).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvio, flows
from .errors import OutputError
from .schema import BURSTS, FLOWS, PACKETS

# Packets CSV text per partition: ~260,000 packet rows, whose build takes ~150 MB.
PARTITION_BYTES = 64 << 20
# A file of up to ONE_PASS_BYTES is built in one pass: that takes about twice the file's
# size, no more than translating a capture in chunks held before it (two tsharks and
# their workers: ~1 GB), and partitions cost a third more time (2.7-2.9 s against
# 2.1-2.2 s for 1M packets, 263 MB, measured). Past it, partitions keep memory flat.
ONE_PASS_BYTES = 512 << 20
# The packets of a capture whose packets CSV is likely built in one pass (~260 bytes a row
# on the shared captures): a capture translated in chunks hands them its cells
# (csvio.CellsFile) up to that many, which partitions do not use.
ONE_PASS_PACKETS = ONE_PASS_BYTES // 260
ROW = "_row"  # the packet's row in the packets CSV, carried in the partition files


def partitions_for(packets_csv: Path) -> int:
    """How many partitions a packets CSV is built in (1: in one pass)."""
    try:
        size = os.stat(packets_csv).st_size
    except OSError:
        return 1  # the one-pass reader names the problem
    return 1 if size <= ONE_PASS_BYTES else math.ceil(size / PARTITION_BYTES)


@dataclass
class Written:
    packets: int
    flows: int
    blank: dict[str, tuple[int, int]] = field(default_factory=dict)  # column: (rows, first)
    chunks: int = 0  # read
    filled: int = 0  # partitions that got packets
    bursts: int = 0


def write_flows(
    packets_csv: Path,
    output: Path,
    options: flows.FlowOptions,
    partitions: int,
    chunk_bytes: int = csvio.CHUNK_BYTES,
) -> Written:
    """The flows CSV of packets_csv written to output, built in `partitions` partitions,
    and its bursts CSV beside it (held whole: the bursts of all the partitions are put in
    one order and their keep-alives marked across them). Raises csvio.NeedsWholeFile
    (nothing written) when the file must be read whole."""
    with csvio.temporary_folder(output) as folder:
        try:
            routed = route(Path(packets_csv), folder, options, partitions, chunk_bytes)
            shared = flows.cross_flow(routed.evidence, options)
            built = [
                _build(folder, k, options, shared) for k in range(partitions) if routed.rows[k]
            ]
        except OSError as e:  # the partition files (pyarrow's errors are OSErrors)
            raise OutputError(folder, f"cannot write ({e.strerror or e})") from None
        count = sum(len(b.ts) for b in built)
        csvio.write_table_pieces(_merged(built), FLOWS, output)
        bursts = _bursts_in_order(built)
        csvio.write_table(bursts, BURSTS, flows.bursts_beside(output))
    return Written(routed.packets, count, routed.blank, routed.chunks, len(built), len(bursts))


def _bursts_in_order(built: list[_Built]) -> pd.DataFrame:
    """The bursts of every partition, each naming its flow by the flow's place in the
    flows CSV (the merge's order), finished as one table."""
    if not built:
        return flows.finished_bursts(pd.DataFrame(), 0)
    ts = np.concatenate([b.ts for b in built])
    order = np.lexsort((np.concatenate([b.first_row for b in built]), ts))
    place = np.empty_like(order)
    place[order] = np.arange(len(order))
    offsets = np.cumsum([0] + [len(b.ts) for b in built])
    pieces = []
    for offset, b in zip(offsets, built):
        piece = pd.read_pickle(b.bursts_path)
        os.unlink(b.bursts_path)
        piece["flow"] = place[offset + piece["flow"].to_numpy()]
        pieces.append(piece)
    return flows.finished_bursts(pd.concat(pieces, ignore_index=True), 0)


@dataclass
class _Routed:
    packets: int
    rows: np.ndarray  # per partition
    evidence: list[flows.Evidence]
    blank: dict[str, tuple[int, int]]
    chunks: int


def route(
    packets_csv: Path,
    folder: Path,
    options: flows.FlowOptions,
    partitions: int,
    chunk_bytes,
    required: list[str] = flows.REQUIRED,
    columns: list[str] = flows.REQUIRED + flows.OPTIONAL,
) -> _Routed:
    """Pass 1: each chunk's packets appended to their partition's file, and its evidence.
    (features.py routes fewer columns: a partition's memory is its columns'.)"""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    writers: dict[int, ipc.RecordBatchStreamWriter] = {}
    rows = np.zeros(partitions, np.int64)
    evidence, blank, schema, packets, chunks = [], {}, None, 0, 0
    try:  # (an OSError: write_flows says it)
        for frame in csvio.read_table_chunks(
            packets_csv,
            PACKETS,
            required=required,
            columns=columns,
            chunk_bytes=chunk_bytes,
        ):
            if not len(frame):  # (a block of blank lines)
                continue
            first = int(frame.index[0])
            frame.index = pd.RangeIndex(len(frame))
            _count_blanks(frame, first, blank)
            p = flows.prepare(frame, np.arange(first, first + len(frame)))
            evidence = [flows.combined([*evidence, flows.evidence(p, options)])]
            partition = (flows.conversation_hash(p) % np.uint64(partitions)).astype(np.intp)
            frame[ROW] = p.rows
            schema = schema or _schema(frame)
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False, nthreads=1)
            counts = np.bincount(partition, minlength=partitions)
            table = table.take(np.argsort(partition, kind="stable"))
            start = 0
            for k in np.flatnonzero(counts):
                if k not in writers:
                    writers[k] = ipc.new_stream(_packets_file(folder, k), schema)
                writers[k].write_table(table.slice(start, counts[k]))
                start += counts[k]
            rows += counts
            packets += len(frame)
            chunks += 1
    finally:
        for writer in writers.values():
            writer.close()
    if not evidence:  # a header without rows
        p = flows.prepare(pd.DataFrame({name: [] for name in flows.REQUIRED}))
        evidence.append(flows.evidence(p, options))
    return _Routed(packets, rows, evidence, blank, chunks)


def _schema(frame: pd.DataFrame):
    """Every chunk's columns as the first's: text as dictionaries, numbers as float64 (a
    chunk's categories are coded in as few bits as they need, which varies)."""
    import pyarrow as pa

    def kind(name):
        if name == ROW:
            return pa.int64()
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            return pa.dictionary(pa.int32(), pa.string())
        return pa.float64()

    return pa.schema([(name, kind(name)) for name in frame.columns])


def _count_blanks(frame: pd.DataFrame, first: int, blank: dict) -> None:
    """Rows without ts or frame_len (pipeline.blank_cell_warnings says them): how many, and
    the first one's row."""
    for name in ("ts", "frame_len"):
        empty = frame[name].isna().to_numpy()
        if empty.any():
            count, at = blank.get(name, (0, first + int(empty.argmax())))
            blank[name] = (count + int(empty.sum()), at)


def _packets_file(folder: Path, k: int) -> str:
    return str(folder / f"packets-{k}.arrow")


def _flows_file(folder: Path, k: int) -> str:
    return str(folder / f"flows-{k}.arrow")


@dataclass
class _Built:
    path: str
    ts: np.ndarray  # of each flow, in the partition's order (the CSV's)
    first_row: np.ndarray
    bursts_path: str = ""  # the partition's bursts (flows.build_of's), pickled


def read_partition(folder: Path, k: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One partition's packets (route's file, removed once read) and their rows in the
    packets CSV."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.OSFile(_packets_file(folder, k)) as source:  # (not mapped: RSS would count it)
        frame = ipc.open_stream(source).read_all().to_pandas()
    os.unlink(_packets_file(folder, k))
    return frame, frame.pop(ROW).to_numpy()


def _build(folder: Path, k: int, options: flows.FlowOptions, shared: flows.CrossFlow) -> _Built:
    """Pass 2: one partition's flows, sorted as the CSV is, written to its flows file."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    frame, rows = read_partition(folder, k)
    both = flows.build_of(flows.prepare(frame, rows), options, shared)
    del frame
    built = both.flows
    table = pa.Table.from_pandas(built, preserve_index=False, nthreads=1)
    path = _flows_file(folder, k)
    with ipc.new_file(path, table.schema) as writer:
        writer.write_table(table, max_chunksize=MERGE_PIECE_ROWS)
    bursts_path = os.path.join(folder, f"bursts-{k}.pickle")
    both.bursts.to_pickle(bursts_path)
    return _Built(path, built["ts"].to_numpy(), built["first_row"].to_numpy(), bursts_path)


MERGE_PIECE_ROWS = 8192  # flows read at a time from a partition's flows file


class _Sorted:
    """A partition's flows file, read from its start a number of flows at a time."""

    def __init__(self, path: str):
        import pyarrow as pa
        import pyarrow.ipc as ipc

        self.reader = ipc.open_file(pa.OSFile(path))
        self.next_piece = 0
        self.held = None  # read and not yet taken

    def take(self, count: int) -> pd.DataFrame:
        import pyarrow as pa

        pieces = []
        while count:
            if self.held is None or not self.held.num_rows:
                self.held = pa.Table.from_batches([self.reader.get_batch(self.next_piece)])
                self.next_piece += 1
            piece = self.held.slice(0, count)
            self.held = self.held.slice(piece.num_rows)
            count -= piece.num_rows
            pieces.append(piece)
        return pa.concat_tables(pieces).to_pandas()


def _merged(built: list[_Built]):
    """The flows of all partitions, in the CSV's order, a batch at a time, with their uids.
    Each partition is sorted by (ts, first_row) and first_row is unique: the order of the
    whole is a merge, and a batch takes a run of consecutive flows from each partition."""
    if not built:
        return
    ts = np.concatenate([b.ts for b in built])
    partition = np.repeat(np.arange(len(built)), [len(b.ts) for b in built])
    order = np.lexsort((np.concatenate([b.first_row for b in built]), ts))
    del ts
    sources = [_Sorted(b.path) for b in built]
    for start in range(0, len(order), csvio.WRITE_BATCH_ROWS):
        which = partition[order[start : start + csvio.WRITE_BATCH_ROWS]]
        counts = np.bincount(which, minlength=len(built))
        batch = pd.concat(
            [sources[k].take(counts[k]) for k in np.flatnonzero(counts)], ignore_index=True
        )
        # batch holds the flows partition by partition: put them in the CSV's order.
        by_partition = np.argsort(which, kind="stable")
        place = np.empty_like(by_partition)
        place[by_partition] = np.arange(len(by_partition))
        yield flows.with_uids(batch.iloc[place].reset_index(drop=True), start)
