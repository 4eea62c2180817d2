"""The command-line base every script shares (as csvkit's CSVKitUtility): the same flags,
the same one-line `PROG: error: FILE: problem` style, exit codes, progress and summary."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from . import __version__, event_times, packets, pipeline, traffic_report
from .errors import IotsigWarning, OutputError, Terminated, ToolError
from .flows import DEFAULT_BURST_GAP, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_DURATION
from .parallel import Workers
from .parties import MAC_PATTERN
from .signature import LearnOptions
from .tshark import STDIN, is_stdin
from .windows import DEFAULT_DURATION, DEFAULT_TOLERANCE, WindowOptions

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def ipv4_or_ipv6(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 or IPv6 address{_hint(text)}"
        ) from None


def _hint(text: str) -> str:
    """What the text looks like instead: the usual mix-ups of a device's IP argument."""
    if MAC_PATTERN.match(text.strip()):
        return " but a MAC address: give the device's IP here, its MAC with --device-mac"
    if looks_like_capture(text):
        return " but a file: the device's address comes before the files"
    return ""


def device_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the device name is empty")
    if looks_like_capture(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a file, not a device name: the device's name and address come "
            "before the captures"
        )
    return text


def looks_like_capture(text: str) -> bool:
    """A capture (or CSV) file, given where a name or an address goes."""
    return text.endswith((".pcap", ".pcapng", ".cap", ".csv")) or Path(text).is_file()


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def ipv4(text: str) -> str:
    address = ipv4_or_ipv6(text)
    if ":" in address:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address")
    return address


def mac_address(text: str) -> str:
    if not MAC_PATTERN.match(text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC address (like 50:c7:bf:ed:0a:54)")
    return text.strip().lower().replace("-", ":")


def positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def non_negative(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def fraction(text: str) -> float:
    """A share: more than 0, at most 1."""
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 1")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def capture_argument(text: str) -> Path:
    """A capture on the command line: '-' is standard input (tshark.STDIN, whose outputs are
    stdin.packets.csv...)."""
    return STDIN if is_stdin(text) else Path(text)


def jobs_for(captures, jobs):
    """Standard input is this process's: a worker process (or a Dask worker) has none, so a
    run that reads it translates in this process, one capture after the other."""
    return Workers(1) if any(is_stdin(c) for c in captures) else jobs


SCHEDULER_VARIABLE = "IOTSIG_SCHEDULER"


def add_jobs_argument(parser) -> None:
    """-j and --scheduler: where the captures are translated. Both set args.jobs, a
    parallel.Workers that the commands hand on as it is to the pipeline."""

    class SetWorkers(argparse.Action):
        def __call__(self, parser, namespace, value, option_string=None):
            if self.type is int:
                namespace.jobs = replace(namespace.jobs, jobs=value)
            else:  # '' or an address
                namespace.jobs = replace(namespace.jobs, scheduler=value or None)

    default = Workers(0, os.environ.get(SCHEDULER_VARIABLE) or None)
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        action=SetWorkers,
        default=default,
        metavar="N",
        help="captures translated at once on this machine (default: one per core)",
    )
    parser.add_argument(
        "--scheduler",
        action=SetWorkers,
        dest="jobs",
        metavar="ADDRESS",
        help="run each capture as a task on the Dask cluster whose scheduler is at ADDRESS "
        f"(tcp://HOST:8786; default: ${SCHEDULER_VARIABLE}, else processes on this machine; "
        "'' for those)",
    )


def add_device_ips_argument(parser, use: str) -> None:
    """--device-ip, repeatable (args.device_ip: a list)."""
    parser.add_argument(
        "--device-ip",
        type=ipv4_or_ipv6,
        action="append",
        default=[],
        metavar="IP",
        help=f"address of the device under study (repeatable): {use}",
    )


def add_flow_arguments(parser, learned: bool = False) -> None:
    """--idle-timeout, --max-duration and --burst-gap, for every command that builds flows
    (`learned`: event-detector's, whose default is the value the signatures record)."""
    for flag, default, text in (
        ("--idle-timeout", DEFAULT_IDLE_TIMEOUT, "a flow ends after S seconds without a packet"),
        ("--max-duration", DEFAULT_MAX_DURATION, "a flow is cut into chunks of at most S seconds"),
        (
            "--burst-gap",
            DEFAULT_BURST_GAP,
            "a burst (bursts CSV) ends after S seconds without a packet of its flow",
        ),
    ):
        parser.add_argument(
            flag,
            type=positive,
            default=None if learned else default,
            metavar="S",
            help=f"{text} (default: "
            + (
                f"the value the signatures were learned with, else {default:g})"
                if learned
                else "%(default)s)"
            ),
        )


def flow_settings(args) -> dict:
    """How the flows were built (the flow arguments given), for the signature to keep."""
    names = ("idle_timeout", "max_duration", "burst_gap")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def add_event_times_arguments(parser, detecting: bool = False, drawing: bool = False) -> None:
    """--events TIMES.csv and how to read it: main.py, signature-extractor.py (a long
    capture cut around each listed time), event-detector.py (its detections scored) and
    traffic-report.py (`drawing`: the times drawn, no windows cut)."""
    group = parser.add_argument_group(
        "long captures with a list of event times (see README: event-times CSV)"
    )
    group.add_argument(
        "--events",
        type=Path,
        metavar="TIMES_CSV",
        help="when the events happened (a time column; optional event and device columns): "
        + (
            "each detection is matched to a listed event, each listed event found or missed"
            if detecting
            else "each listed time is drawn on the timeline"
            if drawing
            else "the capture is cut into one recording per listed time of the event"
        ),
    )
    for role, example in (("time", "1"), ("event", "3"), ("device", "2")):
        group.add_argument(
            f"--{role}-column",
            metavar="NAME|N",
            help=f"the {role} column: its header name or number from 1 (e.g. {example}; "
            "default: found by its header name"
            + (", or the first column in a file without header)" if role == "time" else ")"),
        )
    group.add_argument(
        "--timezone",
        metavar="ZONE",
        help="zone of the times written without one: a UTC offset (UTC-5, or "
        "--timezone=-05:00) or a name (America/New_York)",
    )
    if drawing:
        return
    group.add_argument(
        "--time-tolerance",
        type=non_negative,
        default=DEFAULT_TOLERANCE,
        metavar="S",
        help="how far a listed time may be off the traffic, seconds (default: %(default)s)",
    )
    group.add_argument(
        "--event-duration",
        type=non_negative,
        default=DEFAULT_DURATION,
        metavar="S",
        help="how long the event's traffic lasts after it starts, seconds (default: %(default)s)",
    )


def read_event_times(args, device: str | None = None):
    """The times file of --events, read as its flags say: the lines of `device` where it
    names several devices."""
    spec = event_times.TimesFormat(
        args.time_column, args.event_column, args.device_column, args.timezone
    )
    times = event_times.read_event_times(args.events, spec)
    return event_times.for_device(times, args.events, device)


def event_to_learn(args, times) -> str | None:
    return event_times.choose_event(times, args.events, args.event)


def window_options(args):
    return WindowOptions(args.time_tolerance, args.event_duration)


def learn_options(args) -> LearnOptions:
    """signature-extractor's and main.py's learning options, as given."""
    windows = window_options(args) if getattr(args, "events", None) else WindowOptions()
    return LearnOptions(args.support, flow_settings=flow_settings(args), windows=windows)


def add_signature_arguments(parser, device_required: bool = True) -> None:
    """The signature options of signature-extractor.py and main.py."""
    if device_required:
        parser.add_argument(
            "--device-name",
            required=True,
            type=device_name,
            metavar="NAME",
            help="device name, as the firewall profile will call it",
        )
        parser.add_argument(
            "--device-ip",
            required=True,
            type=ipv4_or_ipv6,
            metavar="IP",
            help="the device's address in the recordings",
        )
    parser.add_argument(
        "--device-mac",
        type=mac_address,
        metavar="MAC",
        help="the device's MAC (default: the MAC that sends from --device-ip)",
    )
    parser.add_argument(
        "--support",
        type=fraction,
        default=1.0,
        metavar="FRACTION",
        help="share of the recordings a pattern must appear in (default: 1, all of them)",
    )
    parser.add_argument(
        "--event",
        metavar="NAME",
        help="event name for the profile's interaction (default: the one event the "
        "--events file names, else 'event'); with --events, the listed times of this event",
    )


def ensure_output_dir(path: Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(path, f"cannot create output directory ({e.strerror})") from None
    if not path.is_dir():
        raise OutputError(path, "is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(path, "output directory is not writable")
    return path


def check_distinct_names(inputs, output_dir: Path, kind: str, output_name=None) -> None:
    """Outputs are named after their input's file name: two inputs with one name (or one
    input given twice) would overwrite each other's output, and count as one recording."""
    by_name: dict[str, list[str]] = {}
    for item in inputs:
        name = output_name(item) if output_name else Path(item).name
        by_name.setdefault(name, []).append(str(item))
    for name, paths in by_name.items():
        if len(paths) > 1:
            raise ToolError(
                f"{len(paths)} {kind} share the name {name} ({', '.join(paths)}): "
                f"their outputs would overwrite each other in {output_dir}/; give "
                "each a file name of its own"
            )


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, its usage errors on one line as every other error (argparse writes the
    whole usage block first): `PROG: error: problem (see PROG --help)`."""

    def error(self, message):
        line = f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)"
        self.exit(EXIT_USAGE, line + "\n")


def _continuations(argv: list[str], actions) -> list[tuple]:
    """(action, text) for each argument that follows the value of one of `actions` (options
    taking one file each) in a row, up to the next option: `--idle a.pcap b.pcap`."""
    found, following = [], None
    for text in argv:
        if text == "--":
            break
        option = next(
            (
                a
                for a in actions
                if any(text == o or text.startswith(f"{o}=") for o in a.option_strings)
            ),
            None,
        )
        if option is not None:
            following = option
            if "=" not in text:
                following = (option, "value")  # its own value comes next
            continue
        if text.startswith("-") and text != "-":
            following = None
        elif isinstance(following, tuple):
            following = following[0]
        elif following is not None:
            found.append((following, text))
    return found


class Command:
    """Subclasses set `prog` and `description`, add their own arguments and `run`."""

    prog = "iotsig"
    description = ""
    epilog = ""
    default_output_dir = Path("output")

    def __init__(self):
        self.quiet = False
        self.warnings = 0
        self.file_options: list[argparse.Action] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError

    def check_arguments(self, parser: argparse.ArgumentParser, args) -> None:
        """Checks of several arguments together, after parsing (parser.error to refuse)."""

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        """parse_args, where an option of `self.file_options` (one file per use, as
        --idle) also takes the files that follow its own in a row once the positional
        arguments are complete (the README's `--idle PCAP ...`); before them, such a file
        is the positional argument it looks like."""
        parser = self.parser()
        argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
        args, extras = parser.parse_known_args(argv)
        following = iter(_continuations(argv, self.file_options))
        unknown = []
        for text in extras:
            for action, candidate in following:
                if candidate == text:
                    try:
                        getattr(args, action.dest).append(action.type(text))
                    except argparse.ArgumentTypeError as e:
                        parser.error(f"argument {'/'.join(action.option_strings)}: {e}")
                    break
            else:
                unknown.append(text)
                following = iter(())
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        self.check_arguments(parser, args)
        return args

    def add_file_option(self, parser, *names, **options):
        """An option given once per file (--idle a.pcap --idle b.pcap), whose files may also
        follow it in a row after the positional arguments (--idle a.pcap b.pcap)."""
        action = parser.add_argument(*names, action="append", default=[], **options)
        self.file_options.append(action)
        return action

    def parser(self) -> argparse.ArgumentParser:
        self.file_options = []
        parser = ArgumentParser(
            prog=self.prog,
            description=self.description,
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.add_arguments(parser)
        parser.add_argument(
            "-o",
            "--output-dir",
            type=Path,
            default=self.default_output_dir,
            help="where to write the outputs (default: %(default)s/)",
        )
        parser.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="no progress bar and no summary; warnings and errors still show",
        )
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
        return parser

    # Messages: progress and warnings on stderr, the closing summary on stdout.
    def warn(self, message: str) -> None:
        self.warnings += 1
        print(f"{self.prog}: warning: {_one_line(message)}", file=sys.stderr, flush=True)

    def _show_warning(self, message, category, filename, lineno, file=None, line=None):
        """The library's warnings as the command's own lines; Python's others as Python
        shows them."""
        if issubclass(category, IotsigWarning):
            self.warn(str(message))
        else:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {_one_line(message)}", file=sys.stderr, flush=True)

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)

    def successes(self, results, failed: list):
        """The (input, result) pairs that worked, each result's warnings said; a failed
        input's error is said and the input kept in `failed` (the others go on)."""
        for item, result in results:
            if isinstance(result, ToolError):
                self.error(str(result))
                failed.append(item)
                continue
            for warning in result.warnings:
                self.warn(warning)
            yield item, result

    def translate_captures(
        self, captures, output_dir: Path, device_mac=None, device_ip=None, jobs=0
    ):
        """packet-translator's step: translate with a progress bar, warn and report per
        capture. Returns the Translations written and the captures that failed."""
        started = time.monotonic()
        written, failed = [], []
        with self.progress(
            unit=" packets", unit_scale=True, desc=f"translating {len(captures)} capture(s)"
        ) as bar:
            results = packets.translate_many(
                captures, output_dir, device_mac, device_ip, jobs, on_packets=bar.update
            )
            written += [result for _, result in self.successes(results, failed)]
        for line in pipeline.translated_lines(written, len(failed), time.monotonic() - started):
            self.say(line)
        return written, failed

    def traffic_report(
        self,
        csv_files,
        output_dir: Path,
        device_ip=None,
        device_mac=None,
        device_name=None,
        signature=None,
        pattern=None,
        events=None,
        detections=None,
    ):
        """traffic-report.py's step (main.py's last): read the CSVs, write the report files
        with a progress bar, and summarise. `events`: the listed event times (event_times'
        table); `detections`: event-detector's detections.csv."""
        started = time.monotonic()
        with self.progress(total=5, unit=" step", desc="traffic report") as bar:
            bar.set_postfix_str("reading")
            inputs = traffic_report.read_inputs(list(csv_files))
            bar.update()

            def step(name):
                bar.set_postfix_str(name)
                bar.update()

            result = traffic_report.build_report(
                inputs,
                output_dir,
                device_ip=device_ip,
                device_mac=device_mac,
                device_name=device_name,
                signature_path=signature,
                pattern_path=pattern,
                events=events,
                detections_path=detections,
                step=step,
            )
        for note in result.notes:
            self.warn(note)
        for key in ("inventory", "map_png", "map_svg", "timeline", "report"):
            if key in result.paths:
                self.say(f"wrote {result.paths[key]}")
        macs = (
            "no inventory (no packets CSV)"
            if result.inventory is None
            else f"{len(result.inventory)} MAC(s)"
        )
        parties = "party" if len(result.endpoints) == 1 else "parties"
        self.say(
            f"traffic-report: {macs}, {len(result.endpoints)} remote {parties} of "
            f"{result.device.ip or result.device.mac}, {len(result.matched)} flow(s) "
            f"matched to signature patterns, in {time.monotonic() - started:.1f} s; open "
            f"{result.paths['report']}"
        )
        return result

    def learn_and_write(self, flow_files, baseline_files, args, output_dir: Path):
        """signature-extractor's step (main.py's last): learn, write the three outputs,
        warn and summarise. With --events, flow_files are long captures' flows CSVs, cut
        first into one recording per listed time (OUTPUT_DIR/windows/)."""
        if args.events:
            learned = self.learn_in_windows(flow_files, baseline_files, args, output_dir)
        else:
            learned = pipeline.learn(
                flow_files,
                args.device_name,
                args.device_ip,
                args.device_mac,
                event=args.event or "event",
                baseline=baseline_files or None,
                options=learn_options(args),
            )
        for warning in learned.warnings:
            self.warn(warning)
        paths = pipeline.write_signature(learned, output_dir)
        empty = pipeline.empty_signature_warning(learned)
        if empty:
            self.warn(empty)
        for line in pipeline.signature_lines(learned, paths):
            self.say(line)
        return learned

    def learn_in_windows(self, flow_files, baseline_files, args, output_dir: Path):
        times = read_event_times(args, args.device_name)
        named = event_to_learn(args, times)
        if named is None:
            self.warn(
                f"{args.events}: no event name column: every line is taken as event "
                f"{args.event or 'event'!r}"
            )
        windows_dir = ensure_output_dir(Path(output_dir) / "windows")
        result = pipeline.learn_in_windows(
            flow_files,
            times,
            args.events,
            windows_dir,
            args.device_name,
            args.device_ip,
            args.device_mac,
            event=args.event or named or "event",
            baseline_files=baseline_files or None,
            options=learn_options(args),
        )
        self.say(
            f"wrote {len(result.events)} event, {len(result.others)} other-event and "
            f"{len(result.background)} background window(s) in {windows_dir}/ (index: "
            f"{result.index}); "
            f"{len(result.events) - len(result.left_out)} of {len(result.events)} listed "
            "time(s) learned"
        )
        return result.signature

    def progress(self, **options):
        # disable=None: a bar on a terminal, nothing in a pipe or a CI log.
        return tqdm(
            disable=True if self.quiet else None,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            **options,
        )

    @classmethod
    def script(cls) -> None:
        """Run as scripts/<command>.py: main() on sys.argv, then exit with its code."""
        entry_point(cls)

    def main(self, argv: list[str] | None = None) -> int:
        _tune_process()
        args = self.parse(argv)
        self.quiet = args.quiet
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", IotsigWarning)
                warnings.showwarning = self._show_warning
                return self.run(args) or EXIT_OK
        except ToolError as e:
            self.error(str(e))
            return EXIT_ERROR
        except KeyboardInterrupt:
            self.error("interrupted; unfinished output files were removed")
            return EXIT_INTERRUPTED
        except Terminated:
            self.error("terminated; unfinished output files were removed")
            return 128 + signal.SIGTERM
        except BrokenPipeError:
            return EXIT_ERROR
        except MemoryError:
            self.error("out of memory")
            return EXIT_ERROR
        except Exception as e:  # a bug: say it on one line; IOTSIG_DEBUG=1 shows the traceback
            if os.environ.get("IOTSIG_DEBUG"):
                raise
            self.error(
                f"internal error: {type(e).__name__}: {e} "
                "(run again with IOTSIG_DEBUG=1 for a traceback, and report it)"
            )
            return EXIT_ERROR
        finally:
            signal.signal(signal.SIGTERM, previous)


def _tune_process() -> None:
    """The commands' own process, not a library caller's: glibc keeps freed memory, and
    Arrow allocates from glibc rather than from its own mimalloc (a third less system time
    in page faults reading a million rows, a tenth less in a chunk's reading and writing of
    250,000 packets). Worker processes, forked, inherit both."""
    _keep_freed_memory()
    pa.set_memory_pool(pa.system_memory_pool())


def _keep_freed_memory() -> None:
    """glibc gives big arrays back to the kernel when they are freed, and the next one is
    faulted in again page by page: a second of system time in a million-row stage. Keep
    freed arrays up to 32 MB (glibc's largest threshold) in the heap instead."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: the defaults work, only slower
        pass


def give_back_freed_memory() -> None:
    """Undo _keep_freed_memory, for a command that runs for weeks (event-detector
    --live): glibc's defaults, so that freed arrays go back to the kernel and the
    resident memory follows what is held, not the largest batch ever seen."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD: glibc's default
        libc.mallopt(-1, 128 << 10)  # M_TRIM_THRESHOLD: glibc's default
    except (OSError, AttributeError):  # not glibc
        pass


def _raise_terminated(signum, frame):
    raise Terminated()


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def entry_point(command_class):
    code = command_class().main()
    # Every output is written and closed: leave without the interpreter's teardown, which
    # frees a million-row table object by object (a quarter of a second for nothing).
    for stream in (sys.stdout, sys.stderr):
        # (a closed pipe: nothing more can be said anyway)
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
