"""PCAP/PCAPNG -> packets CSV: one row per frame, streamed out of tshark's fields export."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import csvio, fields, tshark
from .coded import Coded, Frame, choose, read_fields, select
from .errors import InputError, OutputError, ToolError
from .fields import first
from .parallel import run_parallel, width
from .parties import UNSPECIFIED_ADDRESSES
from .schema import PACKETS
from .timefmt import utc_text_arrow

# The Wireshark fields exported, in tshark's output order: what the packet and transport
# columns need, then every application field of the registry.
FIELDS = list(
    dict.fromkeys(
        [
            "frame.number",
            "frame.time_epoch",
            "frame.len",
            "frame.protocols",
            "eth.src",
            "eth.dst",
            "eth.src.oui_resolved",
            "eth.dst.oui_resolved",
            "sll.src.eth",
            "wlan.sa",
            "wlan.da",
            "wlan.ta",
            "wlan.ra",
            "ip.src",
            "ip.dst",
            "ip.proto",
            "ip.ttl",
            "ipv6.src",
            "ipv6.dst",
            "ipv6.nxt",
            "ipv6.hlim",
            "ipv6.fraghdr.nxt",
            "ip.flags.mf",
            "ip.frag_offset",
            "ip.fragment",
            "ipv6.fraghdr.more",
            "ipv6.fraghdr.offset",
            "ipv6.fragment",
            "arp.opcode",
            "arp.src.hw_mac",
            "arp.src.proto_ipv4",
            "arp.dst.proto_ipv4",
            "tcp.srcport",
            "tcp.dstport",
            "tcp.flags",
            "tcp.len",
            "udp.srcport",
            "udp.dstport",
            "udp.length",
            "icmp.type",
            "icmpv6.type",
            *fields.TSHARK_FIELDS,
        ]
    )
)
# What tshark gives only by looking each MAC up in its OUI database (manuf): the same lookup
# is done here once per distinct MAC, when that database is found (8% of tshark's time).
VENDOR_FIELDS = ["eth.src.oui_resolved", "eth.dst.oui_resolved"]


def asked_fields() -> list[str]:
    """The fields tshark is asked for: FIELDS, but for what is computed here as tshark
    would (the columns are checked against the full FIELDS in the tests)."""
    if _manuf() is None:
        return FIELDS
    return [f for f in FIELDS if f not in VENDOR_FIELDS]


# tshark's output is read and written in blocks of CHUNK_BYTES of its text (about 11,000
# rows, at most CHUNK_ROWS): 2.6-2.8 us per frame in all, against 2.7-2.8 with 4 MB, 3.6
# with 8 MB and 4.0-4.4 with 1 MB (measured); the pipe keeps tshark going meanwhile. A
# line longer than a block (a field of megabytes) cannot be read.
CHUNK_BYTES = 2 << 20
CHUNK_ROWS = 50_000
# Frames an IP fragment waits for the frame that completes its datagram (the rows after it
# wait too, to keep capture order): bounds the memory whatever the capture holds.
FRAGMENT_WAIT_FRAMES = 100_000
# A capture file of more packets than MIN_CHUNK_PACKETS is translated in chunks, one tshark
# each, on as many cores as there are (and never more than CHUNK_PACKETS a chunk: tshark's
# memory grows with what it has read, a chunk's tshark with its chunk only). A tshark costs
# a fifth of a second to start: a chunk must be worth it. IOTSIG_CHUNK_PACKETS=N asks for
# chunks of N packets instead (a cluster's size is not known here).
CHUNK_PACKETS = 250_000  # main.py at 10M packets: 1.2 GB (1.4 GB with 500,000)
# Chunks are made a little larger rather than more numerous to fill whole rounds of the
# cores: each chunk reads OVERLAP_FRAMES again and starts a tshark.
MAX_CHUNK_PACKETS = CHUNK_PACKETS * 5 // 4
MIN_CHUNK_PACKETS = 100_000
MIN_CHUNKED_BYTES = 16 << 20  # smaller files are not even counted
# On one core (-j 1) a capture is cut only for memory: one tshark reads up to a million
# packets (600 MB at most), chunks one after the other cost 6% more time.
ONE_TSHARK_PACKETS = 1_000_000
# Frames a chunk's tshark reads before the chunk's own, to rebuild what tshark keeps from
# frame to frame (TCP segments and retransmissions, IP fragments, conversations): a chunk's
# rows are the whole capture's as long as no such state reaches back further (README).
OVERLAP_FRAMES = 10_000
# Frames read after a chunk's own, for its IP datagrams that end there; one still waiting
# after them has its chunk read again with the whole capture's FRAGMENT_WAIT_FRAMES.
CHUNK_TAIL_FRAMES = 1_000
# What a fragment's row takes from its datagram's row: the conversation, which flows are
# keyed on. The rest of the datagram (flags, payload length, application fields) stays in
# the row of the frame that completes it: counted once.
DATAGRAM_COLUMNS = [
    "ip_version",
    "ip_src",
    "ip_dst",
    "l4_proto",
    "src_port",
    "dst_port",
    "tunnel",
    "outer_ip_src",
    "outer_ip_dst",
]

IP_PROTOCOLS = {
    "1": "icmp",
    "2": "igmp",
    "4": "ipip",
    "6": "tcp",
    "17": "udp",
    "41": "ipv6",
    "47": "gre",
    "50": "esp",
    "51": "ah",
    "58": "icmpv6",
    "89": "ospf",
    "103": "pim",
    "112": "vrrp",
    "132": "sctp",
}
TCP_FLAG_LETTERS = [
    (0x02, "S"),
    (0x10, "A"),
    (0x01, "F"),
    (0x04, "R"),
    (0x08, "P"),
    (0x20, "U"),
    (0x40, "E"),
    (0x80, "C"),
]


@dataclass
class Translation:
    capture: Path
    output: Path | None = None
    packets: int = 0
    warnings: list[str] = field(default_factory=list)
    unwritable_times: int = 0  # packets whose time ISO 8601 cannot say (time_utc empty)
    first_unwritable_frame: str = ""
    incomplete_fragments: int = 0  # IP fragments whose datagram never completed
    first_incomplete_fragment: str = ""
    chunk: Chunk | None = None  # the chunk of the capture this is the translation of
    # Chunked with cells asked for: the CellsFile of each chunk, in order (csvio.read_cells);
    # they are in the chunks' folder, which the caller removes (remove_cells).
    cells: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Chunk:
    """Frames first..last (numbered in the capture from 1) of a capture, whose rows one
    tshark writes to `part`, a file of the folder `folder`."""

    index: int
    first: int
    last: int
    folder: Path
    tail: int  # frames read after the chunk, for datagrams that end there
    cells: tuple[str, ...] = ()  # columns whose cells go to a CellsFile too

    @property
    def part(self) -> Path:
        return self.folder / f"{self.index:05d}.csv"

    @property
    def cells_part(self) -> Path:
        return self.folder / f"{self.index:05d}.arrow"

    @property
    def read_frames(self) -> tuple[int, int]:
        """The frames tshark reads: the overlap before, the chunk, and the tail after, which
        may complete its datagrams (tshark dissects ahead of what is read: a tail as long as
        FRAGMENT_WAIT_FRAMES would cost as much again as a fifth of a chunk)."""
        return max(1, self.first - OVERLAP_FRAMES), self.last + self.tail

    def own_and_after(self, raw: Frame) -> Frame:
        """tshark's rows numbered as in the whole capture, without the overlap's."""
        offset = self.read_frames[0] - 1
        numbers = raw["frame.number"] + offset
        keep = numbers >= self.first
        raw = raw.take(keep)
        raw["frame.number"] = numbers[keep]
        renumber = lambda cell: ";".join(str(int(n) + offset) for n in cell.split(";"))  # noqa: E731
        for name in ("ip.fragment", "ipv6.fragment"):  # the frames a datagram was made of
            raw[name] = raw[name].map(lambda cell: renumber(cell) if cell else "")
        return raw

    def is_after(self, raw: Frame, position: int) -> bool:
        """Whether the row at `position` (renumbered) comes after the chunk's last frame."""
        return int(raw["frame.number"][position]) > self.last


def plan_chunks(capture: Path, parallel: int) -> list[tuple[int, int]] | None:
    """The frame ranges a capture file is translated in, one tshark each; None: one tshark
    over the whole capture (a small file, a pipe, a compressed or damaged file)."""
    capture = Path(capture)
    try:
        if tshark.is_stdin(capture) or not capture.is_file():
            return None
        if capture.stat().st_size < MIN_CHUNKED_BYTES and not _chunk_packets_asked():
            return None
        with open(capture, "rb") as handle:
            if handle.read(4) not in tshark.CAPTURE_MAGICS:
                return None  # compressed: editcap would have to read it all for each chunk
    except OSError:
        return None  # translate() says what is wrong with it
    size = _chunk_packets_asked()
    count = tshark.packet_count(capture)
    if size:  # as asked: chunks of that many packets
        chunks = -(-count // size) if count else 0
    elif not count or count < (ONE_TSHARK_PACKETS if parallel <= 1 else 2 * MIN_CHUNK_PACKETS):
        return None
    else:
        parallel = max(parallel, 1)
        chunks = max(-(-count // CHUNK_PACKETS), min(parallel, count // MIN_CHUNK_PACKETS))
        if chunks > parallel:  # whole rounds: 3 chunks on 2 cores would leave one idle a third
            rounds = chunks // parallel  # fewer, larger chunks while they stay under the cap
            chunks = (rounds + (count > rounds * parallel * MAX_CHUNK_PACKETS)) * parallel
    if chunks < 2:
        return None
    bounds = np.linspace(0, count, chunks + 1).round().astype(int)
    return [(int(a) + 1, int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


CHUNK_VARIABLE = "IOTSIG_CHUNK_PACKETS"


def _chunk_packets_asked() -> int | None:
    """Packets per chunk as the environment asks (IOTSIG_CHUNK_PACKETS: for a cluster of
    many workers, whose size is not known here); None: the defaults."""
    value = os.environ.get(CHUNK_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ToolError(f"{CHUNK_VARIABLE}={value}: give a number of packets (1 or more)")
    return int(value)


def translate_chunk(
    capture: Path,
    output: Path,
    chunk: Chunk,
    device_mac: str | None = None,
    device_ip: str | None = None,
    on_packets: Callable[[int], None] | None = None,
) -> Translation:
    """One chunk's rows of the packets CSV `output`, to chunk.part (whole or not at all);
    join_chunks makes `output` of the parts."""
    result = Translation(Path(capture), output, chunk=chunk)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_output_errors(output))
        tmp = stack.enter_context(csvio.atomic_path(chunk.part))
        cells = None
        if chunk.cells:
            path = stack.enter_context(csvio.atomic_path(chunk.cells_part))
            cells = stack.enter_context(
                contextlib.closing(csvio.CellsFile(path, PACKETS, chunk.cells))
            )
        result = _translate_into(tmp, result, device_mac, device_ip, on_packets, chunk, cells)
        if cells is not None and cells.usable:
            result.cells = [chunk.cells_part]
    if result.incomplete_fragments and chunk.tail < FRAGMENT_WAIT_FRAMES:
        # A datagram may end further on (the rare case): the chunk again, with the whole
        # capture's wait; its packets were counted the first time.
        chunk = dataclasses.replace(chunk, tail=FRAGMENT_WAIT_FRAMES)
        return translate_chunk(capture, output, chunk, device_mac, device_ip)
    return result


def join_chunks(parts: list[Translation]) -> Translation:
    """The packets CSV made of its chunks' parts, in order (the first has the header), and
    the capture's Translation; the parts are gone."""
    parts = sorted(parts, key=lambda t: t.chunk.index)
    first = parts[0]
    whole = Translation(first.capture, first.output)
    with _output_errors(first.output), csvio.atomic_path(first.output) as tmp:
        os.replace(first.chunk.part, tmp)
        with open(tmp, "ab") as sink:
            for part in parts[1:]:
                with open(part.chunk.part, "rb") as source:
                    shutil.copyfileobj(source, sink, 1 << 20)
                os.unlink(part.chunk.part)
    if all(part.cells for part in parts):
        whole.cells = [part.cells[0] for part in parts]
    for part in parts:
        whole.packets += part.packets
        whole.warnings += [w for w in part.warnings if w not in whole.warnings]
        if part.unwritable_times and not whole.unwritable_times:
            whole.first_unwritable_frame = part.first_unwritable_frame
        whole.unwritable_times += part.unwritable_times
        if part.incomplete_fragments and not whole.incomplete_fragments:
            whole.first_incomplete_fragment = part.first_incomplete_fragment
        whole.incomplete_fragments += part.incomplete_fragments
    whole.warnings += _counted_warnings(whole)
    return whole


def output_path(capture: Path, output_dir: Path) -> Path:
    return Path(output_dir) / f"{Path(capture).name}.packets.csv"


def translate(
    capture: Path,
    output: Path,
    device_mac: str | None = None,
    device_ip: str | None = None,
    on_packets: Callable[[int], None] | None = None,
) -> Translation:
    """Write the packets CSV of one capture to `output`, whole or not at all: one tshark
    over the whole capture."""
    capture = Path(capture)
    tshark.check_capture(capture)
    with _output_errors(output), csvio.atomic_path(output) as tmp:
        return _translate_into(tmp, Translation(capture, output), device_mac, device_ip, on_packets)


def _translate_into(
    tmp: Path,
    result: Translation,
    device_mac: str | None,
    device_ip: str | None,
    on_packets: Callable[[int], None] | None,
    chunk: Chunk | None = None,
    cells: csvio.CellsFile | None = None,
) -> Translation:
    """The rows of result.capture (of its chunk's frames, for a chunk) written to tmp, with
    the header unless the chunk is not the first, and to `cells`; result filled in and
    returned."""
    capture = result.capture
    with tempfile.TemporaryFile() as stderr:
        if chunk is None:
            cutter, process = None, tshark.popen_fields(capture, asked_fields(), stderr)
        else:
            cutter, process = tshark.popen_range(
                capture, asked_fields(), stderr, *chunk.read_frames
            )
        stopped_early = False
        cut_lines: list[str] = []
        try:
            with open(tmp, "wb") as sink:
                if chunk is None or chunk.index == 0:
                    sink.write((",".join(PACKETS.names) + "\n").encode())

                def write(rows: Frame) -> None:
                    if not len(rows):
                        return
                    _note_unwritable_times(rows, result)
                    spelled = csvio.frame_cells(rows, PACKETS)
                    csvio.write_cells(sink, spelled)
                    if cells is not None:
                        cells.write(spelled)
                    result.packets += len(rows)
                    if on_packets:
                        on_packets(len(rows))

                stopped_early = _write_rows(
                    _read_chunks(process.stdout, cut_lines, capture),
                    write,
                    result,
                    device_mac,
                    device_ip,
                    chunk,
                )
        except BaseException:
            _end(cutter, process, kill=True)
            raise
        _end(cutter, process, kill=stopped_early)  # the rest of the range is not the chunk's
        stderr.seek(0)
        warnings, errors = tshark.stderr_problems(stderr.read().decode("utf-8", "replace"))
    if cut_lines:
        warnings.append(f"{len(cut_lines)} line(s) of tshark's output cut short: skipped")
    if stopped_early:
        warnings, errors = [], []  # about frames past the chunk, or the pipe closed on them
    if errors and not result.packets:
        raise InputError(capture, "tshark could not read it: " + "; ".join(errors))
    if not result.packets and not warnings:
        raise InputError(capture, "capture contains no packets")
    if not result.packets:
        raise InputError(capture, "no packet could be read: " + "; ".join(warnings))
    result.warnings = [
        f"{capture}: {w} (kept the {result.packets} packets read)" for w in warnings + errors
    ]
    if chunk is None:
        result.warnings += _counted_warnings(result)
    return result


def _end(*processes, kill: bool) -> None:
    for process in filter(None, processes):
        if kill:
            process.kill()
        if process.stdout:
            process.stdout.close()
        process.wait()


def _counted_warnings(result: Translation) -> list[str]:
    """The warnings of what was counted over the whole capture."""
    warnings = []
    if result.unwritable_times:
        warnings.append(
            f"{result.capture}: {result.unwritable_times} packet(s) with a time outside the "
            f"years 0001-9999 (first: frame {result.first_unwritable_frame}): ts kept as read, "
            "time_utc left empty"
        )
    if result.incomplete_fragments:
        warnings.append(
            f"{result.capture}: {result.incomplete_fragments} IP fragment(s) whose datagram "
            f"never completed (first: frame {result.first_incomplete_fragment}): kept as "
            "tshark gives them, without ports"
        )
    return warnings


def _write_rows(raw_chunks, write, result, device_mac, device_ip, chunk) -> bool:
    """Build and write the rows of tshark's output; for a chunk only its own frames (the
    frames before them were read to rebuild tshark's state, those after only to complete
    the IP datagrams of its fragments). True when it stopped before the end of the output."""
    datagrams = Datagrams(chunk.last if chunk else None)
    stopped_early = False
    for raw in raw_chunks:
        if chunk is not None:
            raw = chunk.own_and_after(raw)
            if not len(raw):
                continue
            if chunk.is_after(raw, 0) and not datagrams.holds_own():
                stopped_early = True
                break
        rows = datagrams.feed(build_rows(raw, result.capture.name, device_mac, device_ip), raw)
        write(datagrams.own(rows))
        if chunk is not None and chunk.is_after(raw, -1) and not datagrams.holds_own():
            stopped_early = True
            break
    write(datagrams.own(datagrams.finish()))
    result.incomplete_fragments = datagrams.incomplete
    result.first_incomplete_fragment = datagrams.first_incomplete
    return stopped_early


def _note_unwritable_times(rows: Frame, result: Translation) -> None:
    empty = pc.equal(rows["time_utc"], "").to_numpy(zero_copy_only=False)
    odd = np.flatnonzero(empty & ~np.isnan(rows["ts"]))
    if len(odd) and not result.unwritable_times:
        result.first_unwritable_frame = str(rows["frame_number"][odd[0]])
    result.unwritable_times += len(odd)


@contextlib.contextmanager
def _output_errors(output: Path):
    """Writing or renaming the CSV failed (disk full, a directory in the way...): that is
    this capture's one-line error, not an internal error that stops the other captures.
    atomic_path, inside, has already removed the temporary file."""
    try:
        yield
    except OSError as e:
        raise OutputError(output, f"cannot write ({e.strerror or e})") from None


# The fields read as numbers; tshark's other fields are read as text.
NUMBER_FIELDS = {"frame.number": pa.int64(), "frame.time_epoch": pa.float64()}


def _read_chunks(stream, cut_lines: list, capture: Path) -> Iterator[Frame]:
    """tshark's tab-separated lines as Frames of at most CHUNK_ROWS rows (a line cut
    short is skipped, and added to cut_lines). A thread drains the pipe so that tshark
    never waits for the reader: the two run on two cores."""
    source = io.BufferedReader(PipeDrainer(stream), 1 << 20)
    try:
        for frame in read_fields(source, asked_fields(), NUMBER_FIELDS, CHUNK_BYTES, cut_lines):
            for start in range(0, len(frame), CHUNK_ROWS):
                yield frame.take(np.arange(start, min(start + CHUNK_ROWS, len(frame))))
    except pa.ArrowInvalid as e:  # a line longer than CHUNK_BYTES
        raise InputError(capture, f"tshark's output could not be read ({e})") from None


class PipeDrainer(io.RawIOBase):
    """A readable stream over a pipe that a background thread empties as fast as the
    writer fills it (os.read releases the GIL)."""

    BLOCK = 1 << 20

    def __init__(self, pipe):
        self._blocks: queue.Queue = queue.Queue()
        self._pending = b""
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe):
        try:
            read = pipe.read1 if hasattr(pipe, "read1") else pipe.read
            while block := read(self.BLOCK):
                self._blocks.put(block)
        except (OSError, ValueError):  # pipe closed under us: the reader is gone
            pass
        finally:
            self._blocks.put(b"")

    def readable(self):
        return True

    def readinto(self, buffer) -> int:
        if not self._pending:
            self._pending = self._blocks.get()
            if not self._pending:
                self._blocks.put(b"")  # keep answering end-of-file
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class Datagrams:
    """Gives every IP fragment's row the conversation of its datagram, so that all its
    fragments fall in one flow. tshark reassembles a datagram in the frame that completes
    it and lists there the frames it was made of (ip.fragment, ipv6.fragment); the other
    fragments, read before it (perhaps in an earlier chunk), are bare 'data' with no ports.
    A fragment's row waits, with every row after it (capture order is kept), until the
    frame that completes its datagram is read, at most FRAGMENT_WAIT_FRAMES frames; a
    fragment whose datagram never completes is kept as tshark gives it, and counted."""

    def __init__(self, last_frame: int | None = None):
        self.held: Frame | None = None  # rows read, waiting to be written
        self.incomplete = 0
        self.first_incomplete = ""
        # A chunk's last frame: the rows after it only complete datagrams, and are not its.
        self.last_frame = last_frame

    def own(self, rows: Frame) -> Frame:
        """The rows up to the last frame (all of them, outside a chunk)."""
        if self.last_frame is None or not len(rows):
            return rows
        numbers = rows["frame_number"]
        if numbers[-1] <= self.last_frame:  # the usual batch
            return rows
        return rows.take(numbers <= self.last_frame)

    def holds_own(self) -> bool:
        """Whether rows up to the last frame are still waiting."""
        if self.held is None:
            return False
        return self.last_frame is None or self.held["frame_number"][0] <= self.last_frame

    def feed(self, rows: Frame, raw: Frame) -> Frame:
        """The rows that can be written now (the chunk's, after those held back)."""
        if self.held is None and not _has_fragments(raw):
            return rows  # the usual case: no fragment, nothing held
        rows["_waiting"], rows["_parts"] = _fragment_marks(raw)
        if self.held is not None:
            rows = Frame.concat([self.held, rows])
        self.held = None
        _join_fragments(rows)
        waiting = rows["_waiting"]
        overdue = waiting & (np.arange(len(rows)) < len(rows) - FRAGMENT_WAIT_FRAMES)
        self._count_incomplete(rows, overdue)
        waiting = waiting & ~overdue
        if waiting.any():
            cut = int(np.argmax(waiting))
            self.held = rows.take(np.arange(cut, len(rows)))
            rows = rows.take(np.arange(cut))
        return rows

    def finish(self) -> Frame:
        """What is still held at the end of the capture: its fragments never completed."""
        rows, self.held = self.held, None
        if rows is None:
            return Frame({}, 0)
        self._count_incomplete(rows, rows["_waiting"])
        return rows

    def _count_incomplete(self, rows: Frame, mask: np.ndarray) -> None:
        if self.last_frame is not None:
            mask = mask & (rows["frame_number"] <= self.last_frame)
        if mask.any() and not self.incomplete:
            self.first_incomplete = str(rows["frame_number"][int(np.argmax(mask))])
        self.incomplete += int(mask.sum())


def _has_fragments(raw: Frame) -> bool:
    """Whether any frame may be a fragment: a quick look (flags other than 0, a fragment
    header) that spares the usual chunk the full one."""
    for name in ("ip.flags.mf", "ip.frag_offset"):
        if raw[name].test(lambda v: v not in ("", "0")).any():
            return True
    return bool(raw["ipv6.fraghdr.more"].filled().any())


def _fragment_marks(raw: Frame) -> tuple[np.ndarray, Coded]:
    """(the frame is a fragment still waiting for its datagram, the frames a reassembled
    datagram was made of: '2;3' in the frame that completes it, else '')."""
    v4_parts = raw["ip.fragment"]
    parts = choose(v4_parts.filled(), v4_parts, raw["ipv6.fragment"])
    fragment = (
        _any_value(raw["ip.flags.mf"], "1")
        | _any_value(raw["ip.frag_offset"], "0", negate=True)
        | _any_value(raw["ipv6.fraghdr.more"], "1")
        | _any_value(raw["ipv6.fraghdr.offset"], "0", negate=True)
    )
    return fragment & ~parts.filled(), parts


def _any_value(values: Coded, value: str, negate: bool = False) -> np.ndarray:
    """Whether any of a cell's values ('a;b') is `value` (negate: is another value)."""

    def test(cell: str) -> bool:
        found = [v for v in cell.split(";") if v]
        return any((v != value) if negate else (v == value) for v in found)

    return values.test(test)


def _positions(frame_numbers: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Where the given frames are among the rows (-1: not there). tshark numbers frames
    1, 2, 3...: a row's place is its frame's distance from the first, checked."""
    if frame_numbers[-1] - frame_numbers[0] != len(frame_numbers) - 1:
        index = pd.Index(frame_numbers)
        return index.get_indexer(frames) if index.is_unique else np.full(len(frames), -1)
    found = frames - frame_numbers[0]
    found = np.where(np.isnan(found) | (found < 0) | (found >= len(frame_numbers)), -1, found)
    return found.astype(np.int64)


def _join_fragments(rows: Frame) -> None:
    """Copy each reassembled datagram's conversation into its fragments' rows (in place)."""
    parts = rows["_parts"]
    datagrams = np.flatnonzero(parts.filled())
    if not len(datagrams):
        return
    lists = [p.split(";") for p in parts.values()[datagrams]]
    frames = pd.to_numeric(pd.Series(np.concatenate(lists)), errors="coerce").to_numpy()
    source = np.repeat(datagrams, [len(p) for p in lists])
    target = _positions(rows["frame_number"], frames)
    keep = (target >= 0) & (target != source)
    target, source = target[keep], source[keep]
    for name in DATAGRAM_COLUMNS:
        column = rows[name]
        codes = column.codes.copy()
        codes[target] = codes[source]
        rows[name] = Coded(codes, column.words)
    waiting = rows["_waiting"].copy()
    waiting[target] = False
    rows["_waiting"] = waiting


def build_rows(
    raw: Frame,
    capture_name: str,
    device_mac: str | None = None,
    device_ip: str | None = None,
) -> Frame:
    """tshark's raw fields -> the packets CSV columns, each worked out once per distinct
    value (Coded) or as arrays."""
    rows = len(raw)
    out = Frame({}, rows)
    out["capture"] = Coded.constant(capture_name, rows)
    out["frame_number"] = raw["frame.number"]
    ts = raw["frame.time_epoch"]
    out["ts"] = ts  # written rounded to the microsecond
    out["time_utc"] = utc_text_arrow(ts)
    out["frame_len"] = raw["frame.len"]

    # 802.11 frames carry their MACs as source/destination (and transmitter/receiver, for
    # frames without them); Wireshark gives their vendors only through name resolution,
    # which -n turns off: they come from its manuf file, the OUI database behind eth's.
    conv = Conversations(raw["frame.protocols"])
    eth_src, eth_dst = nth(raw["eth.src"], conv.eth), nth(raw["eth.dst"], conv.eth)
    out["eth_src"] = _first_nonblank(
        eth_src, raw["sll.src.eth"], raw["wlan.sa"], raw["wlan.ta"], raw["arp.src.hw_mac"]
    )
    out["eth_dst"] = _first_nonblank(eth_dst, raw["wlan.da"], raw["wlan.ra"])
    # An inner Ethernet header's vendor is looked up in the same database: tshark lists
    # only the vendors it knows, so occurrences of oui_resolved do not line up with eth's.
    for end in ("src", "dst"):
        looked_up = out[f"eth_{end}"].map(oui_vendor)
        if f"eth.{end}.oui_resolved" not in raw:  # asked_fields: always looked up here
            out[f"eth_{end}_vendor"] = looked_up
            continue
        vendor = first(raw[f"eth.{end}.oui_resolved"])
        wireless = ~raw["eth.src"].filled() & out[f"eth_{end}"].filled() & ~vendor.filled()
        out[f"eth_{end}_vendor"] = choose(wireless | (conv.eth > 0), looked_up, vendor)

    # The conversation is the innermost IP (or ARP) header that is not quoted by an ICMP
    # message: every address, port, flag and length comes from that layer's occurrence of
    # the field (tshark lists a tunnelled packet's as 'outer;inner').
    has_v4 = conv.net.equals("ip") & raw["ip.src"].filled()
    has_v6 = conv.net.equals("ipv6") & raw["ipv6.src"].filled()
    arp = conv.net.equals("arp")
    out["ip_version"] = select([has_v4, has_v6], ["4", "6"], "")
    net_depth = np.where(has_v4, conv.ip, conv.ipv6)
    for end in ("src", "dst"):
        out[f"ip_{end}"] = nth(
            select(
                [has_v4, has_v6, arp],
                [raw[f"ip.{end}"], raw[f"ipv6.{end}"], raw[f"arp.{end}.proto_ipv4"]],
                "",
            ),
            net_depth,
        )
    # Like the addresses, the conversation's header's own: each fragment carries its own
    # (not its datagram's, as TTLs may differ), and an ICMP error's quoted one is not it.
    out["ip_ttl"] = nth(select([has_v4, has_v6], [raw["ip.ttl"], raw["ipv6.hlim"]], ""), net_depth)

    layers = raw["frame.protocols"]
    out["highest_layer"] = layers.map(lambda s: s.rsplit(":", 1)[-1])
    tcp, udp = conv.l4.equals("tcp"), conv.l4.equals("udp")
    # An IPv6 fragment's next header is 44 (the fragment header): take the one after it,
    # so that a later fragment says udp, as it does in IPv4, not ip-proto-44.
    v6_number = choose(raw["ipv6.fraghdr.nxt"].filled(), raw["ipv6.fraghdr.nxt"], raw["ipv6.nxt"])
    ip_number = nth(choose(has_v4, raw["ip.proto"], v6_number), net_depth)
    by_number = ip_number.map(lambda n: IP_PROTOCOLS.get(n, f"ip-proto-{n}" if n else ""))
    out["l4_proto"] = select(
        [conv.l4.equals("icmp"), conv.l4.equals("icmpv6"), tcp, udp, ~(has_v4 | has_v6)],
        ["icmp", "icmpv6", "tcp", "udp", layers.map(_link_protocol)],
        by_number,
    )
    transport = tcp | udp  # an ICMP error quotes the TCP/UDP header of another packet
    l4_depth = np.where(tcp, conv.tcp, conv.udp)
    for end in ("src", "dst"):
        port = nth(choose(tcp, raw[f"tcp.{end}port"], raw[f"udp.{end}port"]), l4_depth)
        out[f"{end}_port"] = choose(transport, port, "")
    out["tcp_flags"] = choose(tcp, nth(raw["tcp.flags"], conv.tcp).map(_tcp_letters), "")
    udp_payload = nth(raw["udp.length"], conv.udp).map(_udp_payload)
    out["l4_payload_len"] = select([tcp, udp], [nth(raw["tcp.len"], conv.tcp), udp_payload], "")
    _tunnel_columns(out, raw, conv)
    for app in fields.REGISTRY:
        out[app.name] = app.spell(*(raw[t] for t in app.tshark))
    out["direction"] = packet_direction(out, device_mac, device_ip)
    return out


# Layers that hold the conversation's addresses, and those inside which a header is quoted,
# not carried: an ICMP error quotes the IP and TCP/UDP headers of the packet it answers.
NETWORK_LAYERS = ("ip", "ipv6", "arp")
QUOTING_LAYERS = ("icmp", "icmpv6")
TRANSPORT_LAYERS = ("tcp", "udp", "icmp", "icmpv6")
# A tunnel with nothing between its two IP headers is named by their versions.
IP_IN_IP = {
    ("ip", "ip"): "ipip",
    ("ip", "ipv6"): "6in4",
    ("ipv6", "ip"): "4in6",
    ("ipv6", "ipv6"): "ip6ip6",
}
NOT_ENCAPSULATIONS = {"udp", "eth", "ethertype", "vlan", "ip", "ipv6"}


class Conversations:
    """Where each frame's conversation is among its layers (frame.protocols): `net` its
    network layer (ip, ipv6, arp or ''), `l4` the transport after it, `tunnel` the
    encapsulation around it and `outer` the kind of the outermost IP header ('' when the
    conversation is not tunnelled), as Coded; `ip`, `ipv6`, `tcp`, `udp`, `eth` the
    occurrence (0 = outermost) of those layers' fields that belong to it, per row."""

    NAMES = ("net", "l4", "ip", "ipv6", "tcp", "udp", "eth", "tunnel", "outer")

    def __init__(self, layers: Coded):
        parsed = [_conversation(u) for u in layers.words]
        for index, name in enumerate(self.NAMES):
            values = [p[index] for p in parsed]
            if isinstance(_conversation("")[index], int):
                setattr(self, name, np.array(values, dtype=np.int64)[layers.codes])
            else:
                setattr(self, name, Coded(layers.codes, values))


@functools.lru_cache(maxsize=4096)
def _conversation(layers: str) -> tuple:
    """One frame.protocols value -> Conversations' fields for it."""
    names = layers.split(":") if layers else []
    cut = next((i for i, n in enumerate(names) if n in QUOTING_LAYERS), len(names))
    net = next((i for i in range(cut - 1, -1, -1) if names[i] in NETWORK_LAYERS), None)
    if net is None:
        return ("", "", 0, 0, 0, 0, 0, "", "")
    after = next((i for i in range(net + 1, len(names)) if names[i] in TRANSPORT_LAYERS), None)
    l4 = names[after] if after is not None else ""
    before_l4 = names[: after if after is not None else net]
    outer = next(i for i in range(net + 1) if names[i] in NETWORK_LAYERS)
    tunnel = ""
    if outer < net and names[outer] != "arp":
        between = [n for n in names[outer + 1 : net] if n not in NOT_ENCAPSULATIONS]
        between = [n for n in between if not n.startswith("ipv6.")]
        pair = (names[outer], names[net])
        tunnel = between[0] if between else IP_IN_IP.get(pair, "-in-".join(reversed(pair)))
    return (
        names[net],
        l4,
        names[:net].count("ip"),
        names[:net].count("ipv6"),
        before_l4.count("tcp"),
        before_l4.count("udp"),
        max(names[:net].count("eth") - 1, 0),
        tunnel,
        names[outer] if tunnel else "",
    )


def nth(values: Coded, depth: np.ndarray) -> Coded:
    """The depth-th value of each aggregated cell ('a;b', 1 -> 'b'; '' where there is
    none). Depth is 0 in all but tunnelled frames: those alone cost a second look."""
    result = first(values)
    for level in np.unique(depth[depth > 0]):
        kth = values.map(lambda s, k=int(level): (s.split(";") + [""] * (k + 1))[k])
        result = choose(depth == level, kth, result)
    return result


def _tunnel_columns(out: Frame, raw: Frame, conv: Conversations) -> None:
    """The encapsulation and the outermost IP header's addresses of a tunnelled packet."""
    out["tunnel"] = conv.tunnel
    tunnelled = conv.tunnel.filled()
    for end in ("src", "dst"):
        if not tunnelled.any():
            out[f"outer_ip_{end}"] = Coded.constant("", len(raw))
            continue
        outer = select(
            [conv.outer.equals("ip"), conv.outer.equals("ipv6")],
            [raw[f"ip.{end}"], raw[f"ipv6.{end}"]],
            "",
        )
        out[f"outer_ip_{end}"] = first(outer)


def packet_direction(rows: Frame, device_mac: str | None, device_ip: str | None) -> Coded:
    if not device_mac and not device_ip:
        return Coded.constant("", len(rows))
    sent = np.zeros(len(rows), bool)
    received = np.zeros(len(rows), bool)
    if device_mac:
        mac = device_mac.lower()
        sent |= rows["eth_src"].test(lambda m: m.lower() == mac)
        received |= rows["eth_dst"].test(lambda m: m.lower() == mac)
    if device_ip:
        from_ip, to_ip = rows["ip_src"].equals(device_ip), rows["ip_dst"].equals(device_ip)
        sent |= from_ip
        received |= to_ip
        if not device_mac:
            # Before it has its address the device sends from the unspecified one, with
            # its MAC: the MAC(s) its address is sent from or to in these rows.
            macs = _words_at(rows["eth_src"], from_ip) | _words_at(rows["eth_dst"], to_ip)
            macs = {m.lower() for m in macs} - {"", "ff:ff:ff:ff:ff:ff"}
            if macs:
                unspecified = rows["ip_src"].test(lambda a: a in UNSPECIFIED_ADDRESSES)
                sent |= unspecified & rows["eth_src"].test(lambda m: m.lower() in macs)
    return select([sent, received], ["sent", "received"], "other")


def _words_at(column: Coded, rows: np.ndarray) -> set[str]:
    """The distinct values of a text column at some rows."""
    return set(column.words[np.unique(column.codes[rows])])


def _first_nonblank(*columns: Coded) -> Coded:
    result = first(columns[0])
    for column in columns[1:]:
        result = choose(result.filled(), result, first(column))
    return result


@functools.lru_cache(maxsize=1)
def _manuf() -> dict[str, str] | None:
    """Wireshark's OUI database as tshark reads it: the first three octets -> the vendor's
    full name (what eth.src.oui_resolved gives), from the manuf file of tshark's
    installation (PREFIX/share/wireshark). None when there is none (Wireshark 4.2 and later
    build it in), or when a personal manuf file may change tshark's answers: tshark is
    then asked."""
    try:
        prefix = Path(tshark.tshark_path()).resolve().parent.parent
    except tshark.ToolError:
        return None
    manuf = prefix / "share" / "wireshark" / "manuf"
    home = Path(os.environ.get("HOME") or "/nonexistent")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    personal = [config / "wireshark", home / ".wireshark"]
    if os.environ.get("WIRESHARK_CONFIG_DIR"):
        personal.append(Path(os.environ["WIRESHARK_CONFIG_DIR"]))
    if not manuf.is_file() or any((folder / "manuf").exists() for folder in personal):
        return None
    vendors = {}
    for line in manuf.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and len(parts[0]) == 8 and not line.startswith("#"):
            vendors[parts[0].lower()] = parts[2].strip() if len(parts) > 2 else parts[1]
    return vendors


def oui_vendor(mac: str) -> str:
    if not mac or int(mac[:2], 16) & 2:  # locally administered: no vendor
        return ""
    return (_manuf() or {}).get(mac[:8].lower(), "")


def _tcp_letters(value: str) -> str:
    if not value:
        return ""
    bits = int(value, 16)
    return "".join(letter for bit, letter in TCP_FLAG_LETTERS if bits & bit)


def _udp_payload(length: str) -> str:
    try:
        return str(int(length) - 8)
    except ValueError:
        return ""


def _link_protocol(layers: str) -> str:
    names = [
        p
        for p in layers.split(":")
        if p not in ("eth", "ethertype", "sll", "llc", "data", "vlan", "radiotap", "wlan_radio")
    ]
    return names[0] if names else (layers.rsplit(":", 1)[-1] if layers else "")


def translate_many(
    captures: list[Path],
    output_dir: Path,
    device_mac=None,
    device_ip=None,
    jobs=0,
    on_packets: Callable[[int], None] | None = None,
):
    """Translate several captures, one tshark per core (a big capture in chunks, on every
    core). Yields (capture, Translation or ToolError) as each finishes; one bad capture
    does not stop the others."""
    items = [(c, output_path(c, output_dir), device_mac, device_ip) for c in captures]
    yield from run_translations(items, jobs, on_packets)


def run_translations(items, jobs=0, on_progress=None, whole_task=None, cells=(), cells_up_to=0):
    """items: (capture, output, device_mac, device_ip) each. A capture file big enough is
    translated in chunks, each a task of its own; the others are one task each,
    whole_task(item) -> (function, arguments) (default: translate). Yields (capture,
    result or ToolError) as each finishes: a chunked capture's result is its Translation
    once its last chunk is done and the parts are joined. cells: columns whose cells the
    chunks of a capture of up to cells_up_to packets also write to CellsFiles
    (Translation.cells), whose folder the caller then removes (remove_cells)."""
    tasks, chunks, folders, kept = [], {}, [], set()
    whole_task = whole_task or (lambda item: (translate, tuple(item)))
    try:
        for item in items:
            capture, output = Path(item[0]), Path(item[1])
            ranges = None if capture in chunks else plan_chunks(capture, width(jobs))
            folder = _chunk_folder(output) if ranges else None
            if folder is None:  # the whole capture's task says what is wrong with the output
                tasks.append(whole_task(item))
                continue
            folders.append(folder)
            chunks[capture] = len(ranges)
            handed = tuple(cells) if ranges[-1][1] <= cells_up_to else ()
            for index, (first, last) in enumerate(ranges):
                chunk = Chunk(index, first, last, folders[-1], CHUNK_TAIL_FRAMES, handed)
                tasks.append((translate_chunk, (capture, output, chunk, *item[2:4])))
        done: dict[Path, list] = {capture: [] for capture in chunks}
        for capture, result in run_parallel(tasks, jobs, on_progress):
            if Path(capture) not in chunks:
                yield capture, result
                continue
            done[Path(capture)].append(result)
            if len(done[Path(capture)]) == chunks[Path(capture)]:
                joined = _joined(done.pop(Path(capture)))
                if isinstance(joined, Translation) and joined.cells:
                    kept.add(joined.cells[0].parent)
                yield capture, joined
    finally:
        for folder in folders:
            if folder not in kept:
                shutil.rmtree(folder, ignore_errors=True)


def remove_cells(translation: Translation) -> None:
    """The folder of a chunked translation's CellsFiles, gone."""
    if translation.cells:
        shutil.rmtree(translation.cells[0].parent, ignore_errors=True)


def _chunk_folder(output: Path) -> Path | None:
    """A hidden folder beside the output for its chunks' parts (on the shared filesystem,
    for the workers of a cluster); None when it cannot be made there."""
    try:
        return Path(
            tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".chunks", dir=output.parent)
        )
    except OSError:
        return None


def _joined(results: list) -> Translation | ToolError:
    """The capture's Translation from its chunks', or the first chunk's error."""
    errors = [r for r in results if isinstance(r, ToolError)]
    if errors:
        return errors[0]
    try:
        return join_chunks(results)
    except ToolError as e:
        return e
