"""Watch a live source (a network interface, a named pipe, standard input) and report each
detection as soon as it is complete: event-detector.py --live.

Micro-batches, so that the detections are the offline run's on the same packets: tshark's
live fields export is read in batches (BATCH_PACKETS lines, or BATCH_SECONDS of wall
time), turned into packet rows as packet-translator turns them (packets.build_rows, the
cells its CSV would hold), and after each batch the flows and bursts of the packets held
are built again by stream-identifier's builder (flows.build_of) and searched by the
detector (detector.candidates). The packets of finished flows are let go (a flow idle past
the idle timeout, or whose max_duration chunk is over, and every flow before it): the
uids count on from the flows let go, a long conversation's next chunk is cut where a
whole capture's is (flows.RESUMES), and the devices' finished flows and bursts are kept as
long as an occurrence may still need them. An occurrence is reported once nothing can
change it: its window is over, every flow of its device that starts before its end is
finished, and so are the overlapping occurrences of the device's other signatures (one
may explain it).

Time is the packets' time, so a replay at any pace gives the same detections. When the
link is quiet the clock moves on with the wall clock from the last packet (less LATE), so
that an event is reported without waiting for the next packet.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import math
import queue
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from . import csvio, detector, flows, packets, tshark
from . import signature as sig
from .coded import read_fields
from .errors import InputError, OutputError, Terminated
from .parties import UNSPECIFIED_ADDRESSES, unspecified_device_sides
from .pipeline import FLOW_COLUMNS
from .schema import BURSTS, DETECTIONS, FLOWS, PACKETS

BATCH_PACKETS = 20_000  # lines of tshark's output read before the flows are built again
BATCH_SECONDS = 0.5  # ... or this much wall time, whichever comes first
LATE = 2.0  # seconds a packet may reach the watch after its own time (buffers, pipes)
# A stream faster than real time (a replay): its pace is measured once it has run for
# PACE_MIN_WALL seconds, taken PACE_SAFETY of it, and its quiet clock waits PACE_LATE
# wall seconds for a packet on its way (Pace).
PACE_MIN_WALL = 1.0
PACE_SAFETY = 0.9
PACE_LATE = 0.5
DNS_MEMORY = 86_400.0  # seconds of all DNS answers and TLS server names kept (then the last)
BURST_MEMORY = 86_400.0  # seconds of the devices' bursts kept to tell keep-alives (a day)
# How far an occurrence reaches past its window: its last bursts may be joined with the
# next ones of their flow (detector.JOIN_MAX, each within detector.JOIN_HORIZON).
JOIN_REACH = detector.JOIN_MAX * detector.JOIN_HORIZON
HOOK_SECONDS = 60.0  # an --on-detect command still running after this is stopped
DROPS_EVERY = 60.0  # a growing drop count is said at most this often (seconds)
TRIM_SECONDS = 10.0  # how often the heap's free pages are given back (_trim_heap)


class Watch:
    """The state of a watch over one stream of packets (packets CSV rows in capture order,
    as csvio.read_table(compact=True) reads them): feed() them, then advance(clock) gives
    the occurrences complete by then, each once."""

    def __init__(
        self, signatures, flow_options, detect_options, capture: str,
        keepalive_wait: float = math.inf,
    ):  # fmt: skip
        self.signatures = list(signatures)
        self.keepalive_wait = keepalive_wait  # (seconds a look-alike's verdict may wait)
        self.flow_options = flow_options
        self.detect_options = detect_options
        self.capture = capture
        self.devices = {s.device_ip for s in self.signatures}
        self.windows = {id(s): s.window(detect_options.window) for s in self.signatures}
        self.numbers = {id(s): i for i, s in enumerate(self.signatures)}
        self.held: pd.DataFrame | None = None  # the packets of the flows not let go
        self.evicted = 0  # flows let go: the next flow's uid counts on from them
        self.evidence: flows.Evidence | None = None  # what names parties, from all packets
        self.done_flows = pd.DataFrame(columns=FLOWS.names)  # the devices', let go
        self.done_bursts = pd.DataFrame(columns=BURSTS.names)
        self.resumes: dict[int, tuple[float, float]] = {}  # conversation: (next chunk, end)
        self.reported: dict[tuple, float] = {}  # occurrence key: its start
        self.undecided: dict[str, float] = {}  # device: its first burst whose verdict waits
        self.dns_devices: set[str] = set()
        self.keep_from = -math.inf  # the devices' flows and bursts kept from this time
        self.last_ts = -math.inf
        self.packets = 0

    def feed(self, rows: pd.DataFrame) -> None:
        """Packets that follow those fed before."""
        if not len(rows):
            return
        rows = rows.reset_index(drop=True)
        found = flows.evidence(flows.prepare(rows), self.flow_options)
        self.evidence = flows.combined([self.evidence, found] if self.evidence else [found])
        self.held = rows if self.held is None else _concat([self.held, rows])
        self.last_ts = max(self.last_ts, float(np.nanmax(rows["ts"].to_numpy(float))))
        self.packets += len(rows)

    def advance(self, clock: float, hold_clock: float | None = None) -> list[detector.Occurrence]:
        """The occurrences complete at `clock` (packet time; math.inf once the stream has
        ended) and not reported before, in time order. What can no longer matter is let go.
        hold_clock: how far the stream has surely gone in packet time, for the keep-alive
        verdicts that wait for a neighbour (Pace; default: clock)."""
        self._build(clock)
        units = self._units(clock if hold_clock is None else max(clock, hold_clock))
        options = detector.DetectOptions(
            self.detect_options.min_score,
            self.detect_options.window,
            self.detect_options.strict_order,
            frozenset(self.dns_devices),
        )
        found = [o for of in detector.candidates(units, self.capture, self.signatures, options)
                 for o in of]  # fmt: skip
        settled = self._settled(clock)
        done = []
        for o in detector.chosen(found, options):
            key = (self.numbers[id(o.signature)], round(o.start, 6), o.first_frame)
            if key in self.reported:
                continue
            overlapping = [c for c in found if self._overlap(c, o)]
            if all(self._reach(c) < settled[c.signature.device_ip] for c in overlapping + [o]):
                self.reported[key] = o.start
                done.append(o)
        self._forget(found, settled, clock)
        return done

    # -- building ----------------------------------------------------------------------

    def _build(self, clock: float) -> None:
        """Build the flows and bursts of the packets held; let go of the finished ones at
        the head (their devices' rows kept in done_flows/done_bursts), and keep the
        devices' others in open_flows (finished or not: open_final) and open_bursts."""
        self.open_flows = self.done_flows.iloc[:0]
        self.open_bursts = self.done_bursts.iloc[:0]
        self.open_final = np.zeros(0, dtype=bool)
        if self.held is None or not len(self.held):
            return
        options = self.flow_options
        p = flows.prepare(self.held)
        self._credit_unspecified(p)
        conversation = flows.conversation_hash(p)
        self._resume(p, conversation, clock)
        built = flows.build_of(p, options, flows.cross_flow([self.evidence], options))
        ts = built.flows["ts"].to_numpy(float)
        ends = ts + built.flows["duration"].to_numpy(float)
        chunk_start = built.flows["chunk_start"].to_numpy(float)
        final = (clock - ends > options.idle_timeout) | (
            clock >= chunk_start + options.max_duration
        )
        flows_now = flows.with_uids(built.flows, self.evicted)
        bursts_now = flows.finished_bursts(built.bursts, self.evicted)
        mine = _of_devices(flows_now, self.devices)
        asked = mine & (flows_now["dns_qry_name"].astype(str) != "").to_numpy()
        self.dns_devices |= self.devices & (
            set(flows_now["orig_h"][asked]) | set(flows_now["resp_h"][asked])
        )
        # The longest run of finished flows at the head whose packets all come before the
        # next flow's first one: what is held after it is whole flows.
        limit = len(final) if final.all() else int(np.argmin(final))
        whole = np.r_[np.maximum.accumulate(ends)[:-1] < ts[1:], True][:limit]
        let_go = int(np.flatnonzero(whole)[-1]) + 1 if whole.any() else 0
        gone = np.zeros(len(bursts_now), dtype=bool)
        if let_go:
            rows = built.flows["first_row"].to_numpy()[:let_go]
            next_chunk = (chunk_start[:let_go] + options.max_duration).tolist()
            self.resumes.update(
                zip(conversation[rows].tolist(), zip(next_chunk, ends[:let_go].tolist()))
            )
            gone = bursts_now["flow_uid"].isin(set(flows_now["uid"][:let_go])).to_numpy()
            mine_bursts = _of_devices(bursts_now, self.devices)
            self.done_flows = _concat([self.done_flows, flows_now[:let_go][mine[:let_go]]])
            self.done_bursts = _concat([self.done_bursts, bursts_now[gone & mine_bursts]])
            self.evicted += let_go
            if let_go < len(ts):
                self.held = _compact(self.held[p["ts"] >= ts[let_go]].reset_index(drop=True))
            else:
                self.held = None
        kept = mine.copy()
        kept[:let_go] = False
        self.open_flows = flows_now[kept]
        self.open_bursts = bursts_now[~gone & _of_devices(bursts_now, self.devices)]
        self.open_final = final[kept]

    def _credit_unspecified(self, p: flows.Packets) -> None:
        """With one device (offline, event-detector then translates with its address), a
        packet from the unspecified address sent from a MAC the device has sent from is
        the device's (a DHCP DISCOVER before it has its address: flows credit it by the
        direction column), whichever batch showed that MAC."""
        if len(self.devices) != 1 or self.evidence is None:
            return
        macs = {m.lower() for m, ip in self.evidence.mac_ips if ip in self.devices}
        macs -= {"", "ff:ff:ff:ff:ff:ff"}
        early = p["ip_src"].isin(UNSPECIFIED_ADDRESSES).to_numpy()
        early &= p["eth_src"].isin(macs).to_numpy()
        if macs and early.any():
            direction = p["direction"].astype(object).to_numpy(copy=True)
            direction[early] = "sent"
            p["direction"] = pd.Series(pd.Categorical(direction))

    def _resume(self, p: flows.Packets, conversation: np.ndarray, clock: float) -> None:
        """Mark the first packet held of each conversation whose last chunk was let go
        with where its next chunk starts (flows.RESUMES), when that packet is in the same
        segment (within the idle timeout, not a new SYN); forget idle conversations."""
        idle = self.flow_options.idle_timeout
        keys, first = np.unique(conversation, return_index=True)
        held = dict(zip(keys.tolist(), first.tolist()))
        marks = np.full(len(conversation), np.nan)
        for key, (boundary, end) in list(self.resumes.items()):
            row = held.get(key)
            if row is None:
                if clock - end > idle:
                    del self.resumes[key]
                continue
            at = p["ts"][row]
            if at - end > idle:
                del self.resumes[key]
            elif at >= boundary and not p["syn"][row]:
                marks[row] = boundary
        p[flows.RESUMES] = marks

    # -- detecting ---------------------------------------------------------------------

    def _units(self, clock: float) -> pd.DataFrame:
        """The devices' flows and bursts from keep_from on, as the detector reads a flows
        CSV's, keep-alives marked over the bursts of the last BURST_MEMORY seconds
        (_keepalives; the devices' undecided ones in self.undecided)."""
        bursts = _concat([self.done_bursts, self.open_bursts]).reset_index(drop=True)
        marks, waiting = self._keepalives(bursts, clock)
        bursts = bursts.assign(**marks)
        self.undecided = {}
        for device in self.devices:
            mine = waiting & _of_devices(bursts, {device})
            if mine.any():
                self.undecided[device] = float(bursts["ts"].to_numpy(float)[mine].min())
        bursts = bursts[bursts["ts"].to_numpy(float) >= self.keep_from]
        found = _concat([self.done_flows, self.open_flows])
        found = found[found["ts"].to_numpy(float) >= self.keep_from]
        return sig.with_bursts(_as_read(found, FLOWS), _as_read(bursts, BURSTS))

    def _keepalives(self, bursts: pd.DataFrame, clock: float) -> tuple[dict, np.ndarray]:
        """flows.keepalives' marks, as far as the bursts seen so far tell, and which
        bursts are still undecided. A series' period is its own over the bursts held (as
        offline, over the whole capture), but for a burst with the sizes of a burst
        pattern, the period its keep-alives had where it was learned (keepalive_period):
        a watch's first hours of a series then know its period as the offline run does
        from the later ones. A burst is a keep-alive once another of its series lies one
        or two periods before or after it; one that may fit the device's burst patterns
        (undecided_kind) waits for the one a period after it until that time (and the
        tolerance) has passed: only then is it not a keep-alive."""
        n = len(bursts)
        marks = {"keepalive": np.zeros(n, np.int8), "period": np.full(n, np.nan)}
        waiting = np.zeros(n, dtype=bool)
        if not n:
            return marks, waiting
        series = flows.keepalive_series(bursts)
        ts = bursts["ts"].to_numpy(float)
        order = np.lexsort((ts, series))
        series, ts = series[order], ts[order]
        period = flows.series_periods(series, ts)[series]
        prior, kind = self._priors(bursts)
        # (the prior first: a few hours of a series' own gaps, the events' among them, can
        # agree on another period, which the whole capture's would not)
        period = np.where(np.isnan(prior[order]), period, prior[order])
        keepalive = flows.near_period(series, ts, period, (1, 2, -1, -2))
        waits = np.minimum(
            period + flows.keepalive_tolerance(np.nan_to_num(period)), self.keepalive_wait
        )
        open_until = ts + waits
        waiting[order] = kind[order] & ~keepalive & (clock <= open_until)  # (NaN: False)
        marks["keepalive"][order] = keepalive
        marks["period"][order] = np.where(keepalive, np.round(period, 3), np.nan)
        return marks, waiting

    def _priors(self, bursts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per burst, the keepalive_period of a burst event pattern it may fit (NaN:
        none), and whether it may fit one at all: the device's, the pattern's protocol
        and server port, its largest frame each way within the pattern's range widened
        by the --tolerance it was read with (the detector's own test says more; this only says
        which bursts may have to wait)."""
        prior = np.full(len(bursts), np.nan)
        kind = np.zeros(len(bursts), dtype=bool)
        for signature in self.signatures:
            for p in signature.patterns:
                if p.unit != "burst" or p.role != "event" or len(p.size_max) != 2:
                    continue
                fits = _of_devices(bursts, {signature.device_ip}) & (
                    bursts["proto"].astype(str).to_numpy() == p.key[detector.PORT - 1]
                )
                port = detector.port_number(p.key[detector.PORT])
                fits &= (bursts["resp_p"].to_numpy(float) == port) | (
                    bursts["orig_p"].to_numpy(float) == port
                )
                for (low, high), side in zip(p.size_max, ("orig", "resp")):
                    if low == low and high == high:
                        size = bursts[f"{side}_size_max"].to_numpy(float)
                        fits &= (size >= low) & (size <= high)
                kind |= fits
                if p.keepalive_period == p.keepalive_period:
                    prior = np.where(fits & np.isnan(prior), p.keepalive_period, prior)
        return prior, kind

    def _settled(self, clock: float) -> dict[str, float]:
        """Per device, the time before which nothing that may still change can start: a
        flow not finished, or a burst its flow may still add to, of the kind (unit,
        sides, protocol, server port) of one of the device's patterns (its application
        fields may still come), a burst whose keep-alive verdict waits (_keepalives),
        and anything after the clock less LATE."""
        settled = dict.fromkeys(self.devices, clock - LATE)
        for device, start in self.undecided.items():
            settled[device] = min(settled[device], start)
        if not len(self.open_flows):
            return settled
        gap = self.flow_options.burst_gap + detector.JOIN_HORIZON
        unfinished = set(self.open_flows["uid"][~self.open_final])
        units = sig.with_bursts(
            _as_read(self.open_flows, FLOWS), _as_read(self.open_bursts, BURSTS)
        )
        for device in self.devices:
            kinds = {
                p.key[: detector.PORT + 2]
                for s in self.signatures
                if s.device_ip == device
                for p in s.patterns
            }
            view = detector.device_view(units, self.capture, device)
            if view.empty:
                continue
            keys = view[detector.KEY_COLUMNS[: detector.PORT + 2]].astype(object).to_numpy()
            kind = np.array(
                [(k[0], k[1], k[2], detector.port_number(k[3]), k[4]) in kinds for k in keys],
                dtype=bool,
            )
            flow = (view["unit"] == "flow").to_numpy()
            changing = np.where(
                flow,
                view["uid"].isin(unfinished).to_numpy(),
                clock - view["end"].to_numpy(float) <= gap,
            )
            starts = view["ts"].to_numpy(float)[kind & changing]
            if len(starts):
                settled[device] = min(settled[device], float(starts.min()))
        return settled

    def _window(self, o: detector.Occurrence) -> float:
        return self.windows[id(o.signature)]

    def _reach(self, o: detector.Occurrence) -> float:
        """The last time a flow or burst that changes the occurrence may start."""
        return max(o.start + self._window(o), o.end) + JOIN_REACH

    def _overlap(self, a: detector.Occurrence, b: detector.Occurrence) -> bool:
        """Whether two occurrences of a device may come to overlap (detector.resolve)."""
        if a.signature.device_ip != b.signature.device_ip:
            return False
        return a.start <= self._reach(b) and b.start <= self._reach(a)

    def _forget(self, found: list, settled: dict, clock: float) -> None:
        """Let go of the devices' flows and bursts that no occurrence can need: before
        every occurrence not settled, and not inside any signature's occurrence that may
        still grow (an occurrence's window counts from its first flow: kept whole)."""
        target = clock - max(self.windows.values(), default=0) - JOIN_REACH - LATE
        keep = target
        for signature in self.signatures:
            mine = sorted((o for o in found if o.signature is signature), key=lambda o: o.start)
            before = [o for o in mine if o.start <= target]
            if before and self._reach(before[-1]) >= target:
                keep = min(keep, before[-1].start)
        for o in found:
            if self._reach(o) >= settled[o.signature.device_ip]:
                keep = min(keep, o.start)
        self.keep_from = max(self.keep_from, keep)
        if len(self.done_flows):
            self.done_flows = self.done_flows[
                self.done_flows["ts"].to_numpy(float) >= self.keep_from
            ].reset_index(drop=True)
        if len(self.done_bursts):
            since = min(self.keep_from, clock - BURST_MEMORY)
            self.done_bursts = self.done_bursts[
                self.done_bursts["ts"].to_numpy(float) >= since
            ].reset_index(drop=True)
        self.reported = {k: s for k, s in self.reported.items() if s >= self.keep_from}
        if self.evidence is not None and math.isfinite(clock):
            # A device may keep using an address it resolved days ago (the whole capture's
            # answers name it offline): older than DNS_MEMORY, only the last answer of
            # each address and name stays (as many as there are pairs).
            for name in ("dns_answers", "server_names"):
                table = getattr(self.evidence, name)
                keep = table["ts"].to_numpy(float) >= clock - DNS_MEMORY
                if not keep.all():
                    pair = [c for c in table.columns if c != "ts"]
                    keep |= ~table.duplicated(subset=pair, keep="last").to_numpy()
                if not keep.all():
                    setattr(self.evidence, name, table[keep].reset_index(drop=True))


def _of_devices(frame: pd.DataFrame, devices: set) -> np.ndarray:
    """The rows with a device on either side, and (as the offline reading keeps them:
    detector.read_device_units) those of the unspecified address that stream-identifier
    credited to a device by its MAC (a DHCP DISCOVER from 0.0.0.0)."""
    mine = frame["orig_h"].isin(devices) | frame["resp_h"].isin(devices)
    orig, resp = unspecified_device_sides(frame)
    return (mine | orig | resp).to_numpy()


def _as_read(frame: pd.DataFrame, table) -> pd.DataFrame:
    """Built rows as the detector reads them from the CSV: numbers as float64, text ''."""
    frame = csvio.as_read(frame, table)
    for name in table.of_type("text"):
        if name in frame and frame[name].dtype == object:
            frame[name] = frame[name].fillna("")
    return frame


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of the same columns one after the other; categorical columns stay so."""
    frames = [f for f in frames if len(f)] or frames[:1]
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    columns = {}
    for name in frames[0].columns:
        parts = [f[name] for f in frames]
        if all(isinstance(s.dtype, pd.CategoricalDtype) for s in parts):
            columns[name] = union_categoricals(parts, ignore_order=True)
        else:
            columns[name] = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(columns)


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without the categories no row holds any more (memory stays flat)."""
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].cat.remove_unused_categories()
    return frame


# ---------------------------------------------------------------------------------------
# The source: tshark's live fields export, read in batches
# ---------------------------------------------------------------------------------------


def is_interface(source: str) -> bool:
    """An interface name, not a pipe, a file or standard input."""
    return not tshark.is_stdin(source) and not Path(source).exists() and "/" not in source


def capture_filter(signatures) -> str:
    """The default capture filter: the packets to or from the signatures' devices."""
    devices = sorted({s.device_ip for s in signatures})
    return " or ".join(f"host {d}" for d in devices)


class Source:
    """tshark reading the source live; its output's lines come in blocks through a
    thread (lines()), so that the watch can also wake on a quiet link."""

    def __init__(
        self,
        source: str,
        name: str,
        capture_filter: str | None,
        session: int = tshark.LIVE_SESSION_PACKETS,
    ):
        self.source, self.name = source, name
        # (closed with the watch: stop())
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.capture_stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.dumpcap = None
        if is_interface(source):
            self.dumpcap, self.tshark = tshark.popen_interface(
                source, capture_filter or "", packets.asked_fields(), self.stderr,
                self.capture_stderr, session,
            )  # fmt: skip
        else:
            path = tshark.STDIN if tshark.is_stdin(source) else Path(source)
            tshark.check_capture(path)  # (a terminal as standard input refused; a pipe passes)
            self.tshark = tshark.popen_fields(
                path, packets.asked_fields(), self.stderr, live=True, session=session
            )
        self.blocks: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.tshark.stdout
        try:
            while block := stream.read1(1 << 20):
                self.blocks.put(block)
        except (OSError, ValueError):
            pass
        finally:
            self.blocks.put(b"")

    def problem(self) -> str | None:
        """What dumpcap or tshark said went wrong, when nothing came through."""
        if self.dumpcap is not None:
            self.capture_stderr.seek(0)
            said = tshark.capture_problem(
                self.capture_stderr.read().decode("utf-8", "replace"), self.source
            )
            if said:
                return said
        self.stderr.seek(0)
        warnings, errors = tshark.stderr_problems(self.stderr.read().decode("utf-8", "replace"))
        return "; ".join(errors + warnings) or None

    def capture_said(self) -> str:
        """What dumpcap has said so far (its counts among it); '' without dumpcap."""
        if self.dumpcap is None:
            return ""
        self.capture_stderr.seek(0)
        return self.capture_stderr.read().decode("utf-8", "replace")

    def stop(self) -> None:
        """Stop capturing (dumpcap first: it says its counts) and tshark."""
        for process in filter(None, (self.dumpcap, self.tshark)):
            if process.poll() is None:
                process.terminate()
        for process in filter(None, (self.dumpcap, self.tshark)):
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Drops:
    """dumpcap's received and dropped counts, as it says them on its standard error
    (read(): all it said so far): a warning when the dropped count has grown since the
    last warning, at most every DROPS_EVERY seconds of the watch; check(final=True) at
    its end says any drop (the closing line has the counts)."""

    def __init__(self, read: Callable[[], str], warn: Callable[[str], None], source: str):
        self.read, self.warn, self.source = read, warn, source
        self.counts: tuple[int, int] | None = None
        self.said = 0  # the dropped count of the last warning
        self.when = -math.inf

    def check(self, now: float, final: bool = False) -> None:
        counts = tshark.drop_counts(self.read())
        if counts:
            self.counts = counts
        if not self.counts:
            return
        received, dropped = self.counts
        if final and dropped:
            self.warn(f"{self.source}: dumpcap dropped {dropped} of {received + dropped} packets")
        elif dropped > self.said and now - self.when >= DROPS_EVERY:
            self.warn(
                f"{self.source}: dumpcap has dropped {dropped} of {received + dropped} "
                "packets so far (the watch may miss events: a busy machine, or too small "
                "a capture buffer)"
            )
            self.said, self.when = dropped, now


class Rows:
    """tshark's lines -> packets CSV rows as the flows stage reads them (the same rows
    packet-translator writes: build_rows, IP fragments joined across batches)."""

    def __init__(self, name: str):
        self.name = name
        self.datagrams = packets.Datagrams()
        self.cut_lines: list[str] = []
        self.before = 0  # frames of tshark's sessions before its current one
        self.last = 0  # the last frame number it gave

    def of(self, text: bytes) -> pd.DataFrame:
        frames = []
        for raw in read_fields(
            io.BytesIO(text),
            packets.asked_fields(),
            packets.NUMBER_FIELDS,
            len(text) + 1,
            self.cut_lines,
        ):
            self._count_on(raw)
            frames.append(self.datagrams.feed(packets.build_rows(raw, self.name), raw))
        return self._table(frames)

    def _count_on(self, raw) -> None:
        """Frame numbers from the stream's first packet, across tshark's new sessions
        (tshark.LIVE_SESSION_PACKETS), each of which numbers its frames from 1 again."""
        numbers = raw["frame.number"]
        if not len(numbers):
            return
        previous = np.r_[self.last, numbers[:-1]]
        restarts = numbers < previous
        offsets = self.before + np.cumsum(np.where(restarts, previous, 0))
        self.before, self.last = int(offsets[-1]), int(numbers[-1])
        raw["frame.number"] = numbers + offsets

    def finish(self) -> pd.DataFrame:
        return self._table([self.datagrams.finish()])

    def _table(self, frames) -> pd.DataFrame:
        frames = [f for f in frames if len(f)]
        if not frames:
            return csvio.empty_frame(PACKETS)[[c for c in PACKETS.names if c in FLOW_COLUMNS]]
        parts = [csvio.cells_frame(csvio.frame_cells(f, PACKETS), PACKETS, FLOW_COLUMNS)
                 for f in frames]  # fmt: skip
        return _concat(parts)


# ---------------------------------------------------------------------------------------
# The watch, start to end
# ---------------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a watch did, for the closing line."""

    packets: int = 0
    detected: int = 0
    explained: int = 0
    received: int | None = None  # dumpcap's counts, on an interface
    dropped: int | None = None
    stopped: str = ""  # "" at the end of the input; else how it was stopped
    warnings: list[str] = field(default_factory=list)


def watch(
    source: str,
    signatures: list,
    flow_options: flows.FlowOptions,
    detect_options: detector.DetectOptions,
    output: Path,
    on_detection: Callable[[detector.Occurrence, dict], None],
    warn: Callable[[str], None],
    capture_filter_text: str | None = None,
    hook: str | None = None,
    batch_packets: int = BATCH_PACKETS,
    batch_seconds: float = BATCH_SECONDS,
    session_packets: int = tshark.LIVE_SESSION_PACKETS,
    keepalive_wait: float = math.inf,
) -> Summary:
    """Watch the source until its end (or Ctrl-C, SIGTERM): each detection, as it is
    complete, appended to `output` (a detections CSV, flushed row by row), given to
    on_detection(occurrence, row) and, with `hook`, to that command as JSON on its
    standard input. session_packets: tshark's new session every so many packets (-M;
    tests lower it to cross several). keepalive_wait: at most this many seconds (packet
    time) that a burst which may be a keep-alive waits for the next of its series
    (Watch._keepalives; the default waits its period, as the offline verdict)."""
    name = "stdin" if tshark.is_stdin(source) else Path(source).name
    summary = Summary()
    state = Watch(signatures, flow_options, detect_options, name, keepalive_wait)
    rows = Rows(name)
    hooks = Hooks(hook, warn)
    with _created(output) as sink:
        csvio.write_header(sink, DETECTIONS)
        sink.flush()

        def report(found: list) -> None:
            if not found:
                return
            # (the rows complete at once written at once: one CSV conversion, not one each)
            frame = detector.detections_frame(found)
            csvio.append_rows(sink, frame, DETECTIONS)
            sink.flush()
            for k, o in enumerate(found):
                row = _json_row(frame.iloc[[k]])
                if o.status == "detected":
                    summary.detected += 1
                else:
                    summary.explained += 1
                on_detection(o, row)
                hooks.run(row)

        stream = Source(source, name, capture_filter_text, session_packets)
        drops = Drops(stream.capture_said, warn, source)
        blocks, lines, rest = [], 0, b""  # (joined once a batch: no quadratic copying)
        ticked = arrived = trimmed = time.monotonic()
        pace = Pace()
        try:
            while True:
                # (a replay's clock moves fast when it is quiet: looked at twice as often)
                every = batch_seconds / 2 if pace.rate() > 1 else batch_seconds
                wait = max(0.0, every - (time.monotonic() - ticked))
                try:
                    block = stream.blocks.get(timeout=wait)
                except queue.Empty:
                    block = None
                if block == b"":
                    break
                if block:
                    blocks.append(block)
                    lines += block.count(b"\n")
                    arrived = time.monotonic()
                if lines < batch_packets and time.monotonic() - ticked < every:
                    continue
                text = rest + b"".join(blocks)
                cut = text.rfind(b"\n") + 1
                if cut:
                    state.feed(rows.of(text[:cut]))
                blocks, lines, rest = [], 0, text[cut:]
                if cut:
                    pace.add(arrived, state.last_ts)
                if state.last_ts > -math.inf:
                    quiet = time.monotonic() - arrived
                    clock = state.last_ts + max(0.0, quiet - LATE)
                    report(state.advance(clock, pace.clock(state.last_ts, quiet)))
                hooks.poll()
                if stream.dumpcap is not None:
                    drops.check(time.monotonic())
                if time.monotonic() - trimmed > TRIM_SECONDS:
                    _trim_heap()
                    trimmed = time.monotonic()
                ticked = time.monotonic()
        except (KeyboardInterrupt, Terminated) as e:
            summary.stopped = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        finally:
            stream.stop()
        text = rest + b"".join(blocks)
        if text.endswith(b"\n"):
            state.feed(rows.of(text))
        state.feed(rows.finish())
        if not state.packets and not summary.stopped:
            raise InputError(Path(source), stream.problem() or "nothing came through: no packet")
        report(state.advance(math.inf))  # the stream has ended: every occurrence is complete
        hooks.wait()
    summary.packets = state.packets
    drops.check(time.monotonic(), final=True)
    if drops.counts:
        summary.received, summary.dropped = drops.counts
    if rows.cut_lines:
        warn(f"{len(rows.cut_lines)} line(s) of tshark's output cut short: skipped")
    return summary


class Pace:
    """How fast packet time goes by in the stream: packet seconds per wall second since
    its first batch (1 on a live link, 1000 in a replay at 1000 times its pace), a tenth
    less to be safe. A quiet replay's keep-alive verdicts that wait for a neighbour
    (Watch._keepalives) are made at that pace rather than held until its next packet;
    flows are still let go by the wall clock (a flow cut too early would change)."""

    def __init__(self):
        self.first: tuple[float, float] | None = None  # (wall, last packet time)
        self.last: tuple[float, float] | None = None

    def add(self, wall: float, ts: float) -> None:
        if self.first is None:
            self.first = (wall, ts)  # (after the first batch: what was queued before it)
        self.last = (wall, ts)

    def rate(self) -> float:
        if self.first is None or self.last[0] - self.first[0] < PACE_MIN_WALL:
            return 1.0
        wall = self.last[0] - self.first[0]
        return max(1.0, PACE_SAFETY * (self.last[1] - self.first[1]) / wall)

    def clock(self, last_ts: float, quiet: float) -> float:
        """The packet time the stream has surely reached `quiet` wall seconds after its
        last packet came (PACE_LATE of them for it to come through tshark)."""
        return last_ts + self.rate() * max(0.0, quiet - PACE_LATE)


def _trim_heap() -> None:
    """Give the heap's free pages back to the kernel (glibc's malloc_trim): a watch runs for
    weeks, and a busy batch must not leave its peak resident for good."""
    with contextlib.suppress(OSError, AttributeError):  # (not glibc: nothing to do)
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def _created(path: Path):
    """A new file to write a row at a time, or the one-line error."""
    try:
        sink = open(path, "wb")  # noqa: SIM115 (closed below, its error said first)
    except OSError as e:
        raise OutputError(path, f"cannot write ({e.strerror})") from None
    with sink:
        yield sink


def _json_row(frame: pd.DataFrame) -> dict:
    """A detections CSV row as JSON values (NaN: null)."""
    row = frame.iloc[0].to_dict()
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else _plain(v)) for k, v in row.items()
    }


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


class Hooks:
    """--on-detect: a command run per detection, the detection as JSON on its standard
    input; it runs beside the watch, and its failure is a warning."""

    def __init__(self, command: str | None, warn: Callable[[str], None]):
        self.argv = shlex.split(command) if command else None
        self.warn = warn
        self.running: list[tuple[subprocess.Popen, float]] = []

    def run(self, row: dict) -> None:
        if not self.argv:
            return
        try:
            process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C is the watch's, not the hook's
            )
        except OSError as e:
            self.warn(f"--on-detect: cannot run {self.argv[0]} ({e.strerror or e})")
            return
        try:
            process.stdin.write((json.dumps(row) + "\n").encode())
            process.stdin.close()
        except OSError:  # it did not read it: said by its exit status
            pass
        self.running.append((process, time.monotonic()))

    def poll(self, final: bool = False) -> None:
        still = []
        for process, started in self.running:
            if process.poll() is None:
                if not final and time.monotonic() - started < HOOK_SECONDS:
                    still.append((process, started))
                    continue
                process.kill()
                process.wait()
                self.warn(f"--on-detect: {self.argv[0]} still running after "
                          f"{time.monotonic() - started:.0f} s: stopped")  # fmt: skip
                continue
            if process.returncode:
                said = " ".join(process.stderr.read().decode("utf-8", "replace").split())[:200]
                self.warn(f"--on-detect: {self.argv[0]} failed (exit status "
                          f"{process.returncode}){': ' + said if said else ''}")  # fmt: skip
            process.stderr.close()
        self.running = still

    def wait(self) -> None:
        deadline = time.monotonic() + HOOK_SECONDS
        for process, _ in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        self.poll(final=True)
