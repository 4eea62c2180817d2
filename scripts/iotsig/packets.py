"""PCAP/PCAPNG -> packets CSV: one row per frame, streamed out of tshark's fields export."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import queue
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvio, fields, tshark
from .errors import InputError, OutputError
from .fields import first, map_uniques
from .schema import PACKETS
from .timefmt import utc_text

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
            "ipv6.src",
            "ipv6.dst",
            "ipv6.nxt",
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
# Rows per chunk: fewer chunks cost less CPU; the 1 MB pipe keeps tshark going meanwhile.
CHUNK_ROWS = 20_000
# Frames an IP fragment waits for the frame that completes its datagram (the rows after it
# wait too, to keep capture order): bounds the memory whatever the capture holds.
FRAGMENT_WAIT_FRAMES = 100_000
# What a fragment's row takes from its datagram's row: the conversation, which flows are
# keyed on. The rest of the datagram (flags, payload length, application fields) stays in
# the row of the frame that completes it: counted once.
DATAGRAM_COLUMNS = ["ip_version", "ip_src", "ip_dst", "l4_proto", "src_port", "dst_port"]

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


def output_path(capture: Path, output_dir: Path) -> Path:
    return Path(output_dir) / f"{Path(capture).name}.packets.csv"


def translate(
    capture: Path,
    output: Path,
    device_mac: str | None = None,
    device_ip: str | None = None,
    on_packets: Callable[[int], None] | None = None,
) -> Translation:
    """Write the packets CSV of one capture to `output`, whole or not at all."""
    capture = Path(capture)
    tshark.check_capture(capture)
    result = Translation(capture, output)
    with (
        tempfile.TemporaryFile() as stderr,
        _output_errors(output),
        csvio.atomic_path(output) as tmp,
    ):
        process = tshark.popen_fields(capture, FIELDS, stderr)
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as sink:
                sink.write(",".join(PACKETS.names) + "\n")

                def write(rows: pd.DataFrame) -> None:
                    if not len(rows):
                        return
                    _note_unwritable_times(rows, result)
                    csvio.write_rows(sink, csvio.to_csv_text(rows, PACKETS), "%.6f")
                    result.packets += len(rows)
                    if on_packets:
                        on_packets(len(rows))

                datagrams = Datagrams()
                for raw in _read_chunks(process.stdout):
                    write(datagrams.feed(build_rows(raw, capture.name, device_mac, device_ip), raw))
                write(datagrams.finish())
                result.incomplete_fragments = datagrams.incomplete
                result.first_incomplete_fragment = datagrams.first_incomplete
        except BaseException:
            process.kill()
            raise
        finally:
            process.stdout.close()
            process.wait()
        stderr.seek(0)
        warnings, errors = tshark.stderr_problems(stderr.read().decode("utf-8", "replace"))
        if errors and not result.packets:
            raise InputError(capture, "tshark could not read it: " + "; ".join(errors))
        if not result.packets and not warnings:
            raise InputError(capture, "capture contains no packets")
        if not result.packets:
            raise InputError(capture, "no packet could be read: " + "; ".join(warnings))
        result.warnings = [
            f"{capture}: {w} (kept the {result.packets} packets read)" for w in warnings + errors
        ]
        if result.unwritable_times:
            result.warnings.append(
                f"{capture}: {result.unwritable_times} packet(s) with a time outside the years "
                f"0001-9999 (first: frame {result.first_unwritable_frame}): ts kept as read, "
                "time_utc left empty"
            )
        if result.incomplete_fragments:
            result.warnings.append(
                f"{capture}: {result.incomplete_fragments} IP fragment(s) whose datagram never "
                f"completed (first: frame {result.first_incomplete_fragment}): kept as tshark "
                "gives them, without ports"
            )
    return result


def _note_unwritable_times(rows: pd.DataFrame, result: Translation) -> None:
    odd = np.flatnonzero((rows["time_utc"] == "").to_numpy() & rows["ts"].notna().to_numpy())
    if len(odd) and not result.unwritable_times:
        result.first_unwritable_frame = rows["frame_number"].iat[odd[0]]
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


def _read_chunks(stream):
    """tshark's tab-separated lines as string frames. tshark escapes tabs and newlines
    inside values, so a line is a row. A thread drains the pipe so that tshark never waits
    for pandas: the two run on two cores."""
    reader = pd.read_csv(
        io.BufferedReader(PipeDrainer(stream), 1 << 20),
        sep="\t",
        header=None,
        names=FIELDS,
        dtype=str,
        quoting=csv.QUOTE_NONE,
        na_filter=False,
        keep_default_na=False,
        chunksize=CHUNK_ROWS,
        encoding="utf-8",
        encoding_errors="replace",
        engine="c",
    )
    try:
        yield from reader
    except pd.errors.EmptyDataError:
        return


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

    def __init__(self):
        self.held: pd.DataFrame | None = None  # rows read, waiting to be written
        self.incomplete = 0
        self.first_incomplete = ""

    def feed(self, rows: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        """The rows that can be written now (the chunk's, after those held back)."""
        waiting, parts = _fragment_marks(raw)
        if self.held is None and not waiting.any():
            return rows  # the usual case: no fragment, nothing held
        rows = rows.assign(_waiting=waiting, _parts=parts)
        if self.held is not None:
            rows = pd.concat([self.held, rows], ignore_index=True)
        self.held = None
        _join_fragments(rows)
        waiting = rows["_waiting"].to_numpy()
        overdue = waiting & (np.arange(len(rows)) < len(rows) - FRAGMENT_WAIT_FRAMES)
        self._count_incomplete(rows, overdue)
        waiting = waiting & ~overdue
        if waiting.any():
            cut = int(np.argmax(waiting))
            self.held, rows = rows.iloc[cut:].reset_index(drop=True), rows.iloc[:cut]
        return rows

    def finish(self) -> pd.DataFrame:
        """What is still held at the end of the capture: its fragments never completed."""
        rows, self.held = self.held, None
        if rows is None:
            return pd.DataFrame(columns=PACKETS.names)
        self._count_incomplete(rows, rows["_waiting"].to_numpy())
        return rows

    def _count_incomplete(self, rows: pd.DataFrame, mask: np.ndarray) -> None:
        if mask.any() and not self.incomplete:
            self.first_incomplete = rows["frame_number"].iat[int(np.argmax(mask))]
        self.incomplete += int(mask.sum())


def _fragment_marks(raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(the frame is a fragment still waiting for its datagram, the frames a reassembled
    datagram was made of: '2;3' in the frame that completes it, else '')."""
    parts = fields.joined(raw["ip.fragment"], raw["ipv6.fragment"]).to_numpy()
    fragment = (
        _any_value(raw["ip.flags.mf"], "1")
        | _any_value(raw["ip.frag_offset"], "0", negate=True)
        | _any_value(raw["ipv6.fraghdr.more"], "1")
        | _any_value(raw["ipv6.fraghdr.offset"], "0", negate=True)
    )
    return fragment & (parts == ""), parts


def _any_value(values: pd.Series, value: str, negate: bool = False) -> np.ndarray:
    """Whether any of a cell's values ('a;b') is `value` (negate: is another value)."""
    codes, uniques = pd.factorize(values, sort=False)

    def test(cell: str) -> bool:
        found = [v for v in cell.split(";") if v]
        return any((v != value) if negate else (v == value) for v in found)

    return np.array([test(u) for u in uniques] + [False], dtype=bool)[codes]


def _join_fragments(rows: pd.DataFrame) -> None:
    """Copy each reassembled datagram's conversation into its fragments' rows (in place)."""
    datagrams = np.flatnonzero(rows["_parts"].to_numpy() != "")
    if not len(datagrams):
        return
    lists = [p.split(";") for p in rows["_parts"].to_numpy()[datagrams]]
    frames = pd.to_numeric(pd.Series(np.concatenate(lists)), errors="coerce").to_numpy()
    source = np.repeat(datagrams, [len(p) for p in lists])
    numbers = pd.Index(pd.to_numeric(rows["frame_number"], errors="coerce"))
    if not numbers.is_unique:  # frame numbers are tshark's, unique; never guess otherwise
        return
    target = numbers.get_indexer(frames)
    keep = (target >= 0) & (target != source)
    target, source = target[keep], source[keep]
    for name in DATAGRAM_COLUMNS:
        column = rows[name].to_numpy(copy=True)
        column[target] = column[source]
        rows[name] = column
    waiting = rows["_waiting"].to_numpy(copy=True)
    waiting[target] = False
    rows["_waiting"] = waiting


def build_rows(
    raw: pd.DataFrame,
    capture_name: str,
    device_mac: str | None = None,
    device_ip: str | None = None,
) -> pd.DataFrame:
    """tshark's raw fields -> the packets CSV columns (vectorised)."""
    # Positional index: columns built from numpy arrays come back as Series indexed 0..n-1,
    # and a later chunk's index (20000...) would not line up with them.
    raw = raw.reset_index(drop=True)
    out = pd.DataFrame(index=raw.index)
    out["capture"] = capture_name
    out["frame_number"] = raw["frame.number"]
    ts = pd.to_numeric(raw["frame.time_epoch"], errors="coerce")
    out["ts"] = ts.round(6)
    out["time_utc"] = utc_text(ts)
    out["frame_len"] = raw["frame.len"]

    arp = raw["arp.opcode"] != ""
    # 802.11 frames carry their MACs as source/destination (and transmitter/receiver, for
    # frames without them); Wireshark gives their vendors only through name resolution,
    # which -n turns off: they come from its manuf file, the OUI database behind eth's.
    out["eth_src"] = _first_nonblank(
        raw["eth.src"], raw["sll.src.eth"], raw["wlan.sa"], raw["wlan.ta"], raw["arp.src.hw_mac"]
    )
    out["eth_dst"] = _first_nonblank(raw["eth.dst"], raw["wlan.da"], raw["wlan.ra"])
    for end in ("src", "dst"):
        vendor = first(raw[f"eth.{end}.oui_resolved"])
        wireless = (raw["eth.src"] == "") & (out[f"eth_{end}"] != "") & (vendor == "")
        if wireless.any():
            vendor = vendor.where(~wireless, map_uniques(out[f"eth_{end}"], oui_vendor))
        out[f"eth_{end}_vendor"] = vendor

    has_v4, has_v6 = raw["ip.src"] != "", raw["ipv6.src"] != ""
    out["ip_version"] = np.select([has_v4, has_v6], ["4", "6"], "")
    for end in ("src", "dst"):
        out[f"ip_{end}"] = first(
            np.select(
                [has_v4, has_v6, arp],
                [raw[f"ip.{end}"], raw[f"ipv6.{end}"], raw[f"arp.{end}.proto_ipv4"]],
                "",
            )
        )

    layers = raw["frame.protocols"]
    highest = map_uniques(layers, lambda s: s.rsplit(":", 1)[-1])
    out["highest_layer"] = highest
    icmp, icmp6 = raw["icmp.type"] != "", raw["icmpv6.type"] != ""
    tcp, udp = raw["tcp.srcport"] != "", raw["udp.srcport"] != ""
    # An IPv6 fragment's next header is 44 (the fragment header): take the one after it,
    # so that a later fragment says udp, as it does in IPv4, not ip-proto-44.
    v6_number = raw["ipv6.fraghdr.nxt"].where(raw["ipv6.fraghdr.nxt"] != "", raw["ipv6.nxt"])
    ip_number = first(np.where(has_v4, raw["ip.proto"], v6_number))
    by_number = map_uniques(ip_number, lambda n: IP_PROTOCOLS.get(n, f"ip-proto-{n}" if n else ""))
    non_ip = ~(has_v4 | has_v6)
    link_proto = map_uniques(layers, _link_protocol)
    # ICMP first: an ICMP error quotes the TCP/UDP header of the packet it answers.
    out["l4_proto"] = np.select(
        [icmp, icmp6, tcp, udp, non_ip], ["icmp", "icmpv6", "tcp", "udp", link_proto], by_number
    )
    transport = (tcp | udp) & ~(icmp | icmp6)
    for end in ("src", "dst"):
        port = first(np.where(tcp, raw[f"tcp.{end}port"], raw[f"udp.{end}port"]))
        out[f"{end}_port"] = np.where(transport, port, "")
    flags = map_uniques(first(raw["tcp.flags"]), _tcp_letters)
    out["tcp_flags"] = np.where(transport & tcp, flags, "")
    udp_payload = pd.to_numeric(first(raw["udp.length"]), errors="coerce") - 8
    out["l4_payload_len"] = np.select(
        [transport & tcp, transport & udp],
        [first(raw["tcp.len"]), udp_payload.astype("Int64").astype(str).replace("<NA>", "")],
        "",
    )
    for app in fields.REGISTRY:
        out[app.name] = app.spell(*(raw[t] for t in app.tshark))
    out["direction"] = packet_direction(out, device_mac, device_ip)
    return out


def packet_direction(rows: pd.DataFrame, device_mac: str | None, device_ip: str | None):
    if not device_mac and not device_ip:
        return ""
    sent = np.zeros(len(rows), bool)
    received = np.zeros(len(rows), bool)
    if device_mac:
        mac = device_mac.lower()
        sent |= (rows["eth_src"].str.lower() == mac).to_numpy()
        received |= (rows["eth_dst"].str.lower() == mac).to_numpy()
    if device_ip:
        sent |= (rows["ip_src"] == device_ip).to_numpy()
        received |= (rows["ip_dst"] == device_ip).to_numpy()
    return np.select([sent, received], ["sent", "received"], "other")


def _first_nonblank(*columns: pd.Series) -> pd.Series:
    result = first(columns[0])
    for column in columns[1:]:
        result = result.where(result != "", first(column))
    return result


MANUF = Path("/usr/share/wireshark/manuf")


@functools.lru_cache(maxsize=1)
def _manuf() -> dict[str, str]:
    """Wireshark's OUI database: the first three octets -> the vendor's full name (what
    eth.src.oui_resolved gives). Empty where the file is not there."""
    vendors = {}
    with contextlib.suppress(OSError):
        for line in MANUF.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and len(parts[0]) == 8 and not line.startswith("#"):
                vendors[parts[0].lower()] = parts[2].strip() if len(parts) > 2 else parts[1]
    return vendors


def oui_vendor(mac: str) -> str:
    if not mac or int(mac[:2], 16) & 2:  # locally administered: no vendor
        return ""
    return _manuf().get(mac[:8].lower(), "")


def _tcp_letters(value: str) -> str:
    if not value:
        return ""
    bits = int(value, 16)
    return "".join(letter for bit, letter in TCP_FLAG_LETTERS if bits & bit)


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
    jobs: int = 0,
    on_packets: Callable[[int], None] | None = None,
):
    """Translate several captures, one tshark per core. Yields (capture, Translation or
    ToolError) as each finishes; one bad capture does not stop the others."""
    from .parallel import run_parallel

    tasks = [(translate, (c, output_path(c, output_dir), device_mac, device_ip)) for c in captures]
    yield from run_parallel(tasks, jobs=jobs, on_progress=on_packets)
