"""Writing a pcap capture to a pipe at a pace (tests and benchmarks of event-detector --live):
each frame at its own time, divided by a speed-up, from the first frame's."""

from __future__ import annotations

import struct
import time
from pathlib import Path

MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


def records(capture: Path):
    """(header bytes, [(time, record bytes), ...]) of a pcap file (not pcapng)."""
    data = Path(capture).read_bytes()
    order, unit = MAGICS[data[:4]]
    found, at = [], 24
    while at + 16 <= len(data):
        seconds, fraction, length, _ = struct.unpack(order + "IIII", data[at : at + 16])
        end = at + 16 + length
        found.append((seconds + fraction * unit, data[at:end]))
        at = end
    return data[:24], found


def replay(capture: Path, sink, speed: float, written: list | None = None) -> None:
    """Write the capture to `sink` (a binary file object: a FIFO, a process's stdin), each
    frame when its time comes at `speed` times the real pace (0 or inf: at once); with
    `written`, the wall time (time.monotonic) each frame was written, in order."""
    header, frames = records(capture)
    sink.write(header)
    sink.flush()
    if not frames:
        return
    first, started = frames[0][0], time.monotonic()
    for at, record in frames:
        if speed and speed != float("inf"):
            delay = started + (at - first) / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sink.write(record)
        if speed and speed != float("inf"):
            sink.flush()
        if written is not None:
            written.append(time.monotonic())
    sink.flush()


def watch_through_fifo(command: list, capture: Path, fifo: Path, speed: float) -> list[float]:
    """Run `command` (an event-detector --live on `fifo`, a named pipe there is) while the
    capture is written into the FIFO at `speed` times its pace. Returns, for each
    detection line it printed, how long after the detection's last frame was written the
    line came (seconds of wall time). A failure is a RuntimeError with its stderr."""
    import re
    import subprocess
    import threading

    process = subprocess.Popen(
        [str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen, errors = [], []
    readers = [
        threading.Thread(
            target=lambda: seen.extend((time.monotonic(), line) for line in process.stdout)
        ),
        threading.Thread(target=lambda: errors.extend(process.stderr)),
    ]
    for reader in readers:
        reader.start()
    written: list[float] = []
    with open(fifo, "wb") as sink:
        replay(capture, sink, speed, written)
    status = process.wait()
    for reader in readers:
        reader.join()
    if status:
        raise RuntimeError("".join(errors)[-2000:])
    late = []
    for at, line in seen:
        frames = re.search(r"frames (\d+)-(\d+)", line)
        if frames:
            late.append(at - written[int(frames.group(2)) - 1])
    return late
