"""What an input file is, by its content: one rule for every command.

A capture by its first four bytes (pcap or pcapng magic); a CSV by the columns of its header
line: a signature CSV has signature_version and pattern, a flows CSV uid, orig_h and resp_h,
a packets CSV frame_number, frame_len and ip_src. Anything else is one InputError line
that says what the file is not (and, for a text file, which columns it has).
"""

from __future__ import annotations

from pathlib import Path

from .csvio import split_header
from .errors import InputError
from .tshark import CAPTURE_MAGICS, COMPRESSED_MAGICS, check_stdin, file_head, is_stdin

KINDS = ("capture", "signature", "flows", "packets")
# The columns that make a CSV of each kind (checked in this order).
CSV_COLUMNS = {
    "signature": ("signature_version", "pattern"),
    "flows": ("uid", "orig_h", "resp_h"),
    "packets": ("frame_number", "frame_len", "ip_src"),
}
HEADER_BYTES = 1 << 16  # a header line longer than this is no CSV of ours


def file_kind(path: Path, expected: tuple[str, ...] = KINDS) -> str:
    """'capture', 'signature', 'flows' or 'packets'. `expected` (the kinds the caller
    takes) only words the error for a file of none of them."""
    path = Path(path)
    if is_stdin(path):
        check_stdin(path)  # not a terminal (reading its head would wait for typing)
    if path.is_fifo():  # its bytes are tshark's to read: a pipe is a capture
        return "capture"
    head = file_head(path, HEADER_BYTES, "a capture or CSV file")
    if not head:
        raise InputError(path, f"empty file (0 bytes): not {_listing(expected, ' or ')}")
    if head[:4] in CAPTURE_MAGICS or any(head.startswith(m) for m in COMPRESSED_MAGICS):
        return "capture"
    columns = header_columns(head)
    for kind, needed in CSV_COLUMNS.items():
        if columns is not None and set(needed) <= set(columns):
            return kind
    raise InputError(path, _not_any(expected, head, columns))


def header_columns(head: bytes) -> list[str] | None:
    """The column names of a CSV's first line; None when it is not text."""
    first = head.split(b"\n", 1)[0]  # a later line in another character set: the reader's
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(first) - 3 or len(first) < len(head):  # not a character cut short
            return None
        text = first[: e.start].decode("utf-8")
    line = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    if not line.isprintable():
        return None
    return split_header(line)[0]  # ',' or a spreadsheet's ';' between the names


def _listing(kinds, joiner: str) -> str:
    names = {"capture": "a pcap/pcapng capture"}
    words = [names.get(k, f"a {k} CSV") for k in kinds]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + joiner + words[-1]


def _not_any(expected, head: bytes, columns: list[str] | None) -> str:
    csvs = [f"a {k} CSV ({', '.join(CSV_COLUMNS[k])}, ...)" for k in expected if k != "capture"]
    if "capture" in expected:
        text = f"not a pcap/pcapng capture (unknown file header {head[:4].hex()})"
        text += "".join(f", nor {c}" for c in csvs)
    else:
        text = "neither " + " nor ".join(csvs) if len(csvs) > 1 else f"not {csvs[0]}"
    if columns is None:
        return text + ": not text"
    shown = ", ".join(columns[:6]) + (", ..." if len(columns) > 6 else "")
    return text + f": its columns are {shown}"
