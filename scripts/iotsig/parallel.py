"""Run independent jobs on every core, or as tasks on a Dask cluster, with progress
reported back from the workers."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import shutil
import signal
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from . import csvio
from .errors import Terminated, ToolError


@dataclass(frozen=True)
class Workers:
    """Where the tasks run: `jobs` local processes (0: one per core), or the Dask cluster
    whose scheduler is at `scheduler` (tcp://HOST:PORT), when given."""

    jobs: int = 0
    scheduler: str | None = None


_progress_queue = None
_stopping = False  # the running task was stopped by a signal and is cleaning up
_deferred = 0  # a further signal that came during that clean-up
# The command was started with Ctrl-C ignored (a script's background job, nohup): its
# workers and their tsharks ignore it too, as the command does and as -j 1 does, rather
# than die of it and stop the run.
_ignores_ctrl_c = False


def _worker_init(progress_queue):
    global _progress_queue, _ignores_ctrl_c
    _progress_queue = progress_queue
    _ignores_ctrl_c = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    _between_tasks()


def _stop_on(handler) -> None:
    if not _ignores_ctrl_c:
        signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _between_tasks() -> None:
    """An idle worker has nothing to clean up: Ctrl-C or SIGTERM end it quietly (an
    exception out of the pool's wait for work would print a traceback)."""
    _stop_on(_exit_quietly)


def _exit_quietly(signum, frame):
    raise SystemExit(128 + signum)


def _stop_task(signum, frame):
    """The first Ctrl-C or SIGTERM stops the task, whose unfinished files are removed on
    the way out. The next ones (Ctrl-C reaches every process of the terminal, and then the
    parent terminates its workers) must not break into that clean-up: the worker exits
    once it is done (_call)."""
    global _stopping, _deferred
    if _stopping:
        _deferred = signum
        return
    _stopping = True
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _report(count: int) -> None:
    _progress_queue.put(count)


def _call(function, arguments):
    global _stopping, _deferred
    _stopping, _deferred = False, 0
    _stop_on(_stop_task)
    try:
        return function(*arguments, on_packets=_report)
    except ToolError as e:
        return e
    finally:
        _between_tasks()
        if _deferred:  # asked to stop twice: the files are clean, leave now
            os._exit(128 + _deferred)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def width(jobs: int | Workers) -> int:
    """How many tasks run at once on this machine (a cluster's size is not known here)."""
    workers = jobs if isinstance(jobs, Workers) else Workers(jobs)
    return workers.jobs or cores()


def run_parallel(tasks, jobs: int | Workers = 0, on_progress=None):
    """tasks: [(function, args)], each function taking on_packets=. Yields (first arg,
    result or ToolError) in completion order. `jobs`: a number of local processes (0: one
    per core) or Workers."""
    workers = jobs if isinstance(jobs, Workers) else Workers(jobs)
    if workers.scheduler:
        yield from _run_on_cluster(tasks, workers.scheduler, on_progress)
        return
    jobs = min(workers.jobs or cores(), len(tasks)) or 1
    if jobs == 1:
        for function, arguments in tasks:
            try:
                yield arguments[0], function(*arguments, on_packets=on_progress)
            except ToolError as e:
                yield arguments[0], e
        return
    context = multiprocessing.get_context("fork")
    progress_queue = context.Queue()
    executor = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_worker_init, initargs=(progress_queue,)
    )
    try:
        pending = {executor.submit(_call, f, a): a[0] for f, a in tasks}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, on_progress)
            for future in done:
                yield pending.pop(future), _result(future)
        _drain(progress_queue, on_progress)
    except BaseException:
        processes = list(getattr(executor, "_processes", {}).values())
        for process in processes:
            process.terminate()  # workers remove their unfinished files on SIGTERM
        executor.shutdown(wait=False, cancel_futures=True)  # and then leave
        deadline = time.monotonic() + WORKER_STOP_WAIT
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():  # stuck on a lock of the pool's queue that a stopped
                process.kill()  # worker held: it runs no task, it has no file to remove
                process.join()
        raise
    executor.shutdown(wait=True)


WORKER_STOP_WAIT = 10.0  # seconds for a stopped worker to remove its files and exit
STOP_GRACE = 1.0  # seconds for a Ctrl-C that stopped the workers first to reach this process


def _result(future):
    """The task's result. A worker that died under it breaks the pool: when Ctrl-C reached
    the workers first (the whole terminal's process group gets it), the same signal reaches
    this process within a moment and stops it as an interrupt, not as an internal error."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool:
        time.sleep(STOP_GRACE)
        raise


def _drain(progress_queue, on_progress):
    while True:
        try:
            count = progress_queue.get_nowait()
        except queue.Empty:
            return
        if on_progress:
            on_progress(count)


# ---------------------------------------------------------------------------------------
# On a Dask cluster: each task one Dask task, whose start, progress and end are told back
# as events (Worker.log_event) on a topic of this run, and whose temporary files carry the
# topic in their names.
# ---------------------------------------------------------------------------------------

CONNECT_TIMEOUT = 10  # seconds to reach the scheduler
RETRIES = 2  # a task that raised is run again (a worker that died: the scheduler re-runs it)
STOP_WAIT = 60  # seconds for stopped tasks to remove their files, after Ctrl-C
END_WAIT = 2  # seconds for the last events of finished tasks


class Cancelled(Exception):
    """The task's future was cancelled (Ctrl-C in the command): stop, removing its files."""


def _on_worker(function, arguments, topic):
    """One task on a Dask worker: its start, progress and end are told to the command as
    events on TOPIC, and its temporary files carry TOPIC in their names. A cancelled task
    stops at its next progress report or file."""
    from distributed import get_worker
    from distributed.worker import thread_state

    worker, key, attempt = get_worker(), thread_state.key, uuid.uuid4().hex

    def stop_if_cancelled() -> None:
        task = worker.state.tasks.get(key)
        if task is None or task.state == "cancelled":
            raise Cancelled(key)

    def report(count: int) -> None:
        stop_if_cancelled()
        worker.log_event(topic, ["packets", attempt, count])

    def tag() -> str:
        stop_if_cancelled()  # the next stage of a stopped task: not even started
        return topic

    worker.log_event(topic, ["start", attempt, key])
    tagging = csvio.temporary_tag.set(tag)
    try:
        return function(*arguments, on_packets=report)
    except ToolError as e:
        return e
    finally:
        csvio.temporary_tag.reset(tagging)
        worker.log_event(topic, ["end", attempt, 0])


class _Attempts:
    """The runs of the tasks that are going on, from their events, and their progress
    handed on. A task whose worker died runs again elsewhere: the packets its first run
    counted are taken back, so that the bar counts each packet once."""

    def __init__(self, on_progress):
        self.on_progress = on_progress or (lambda count: None)
        self.running: dict[str, str] = {}  # run -> its task's key
        self.counted: dict[str, int] = {}

    def event(self, message) -> None:
        kind, attempt, value = message
        if kind == "start":
            for earlier in [a for a, key in self.running.items() if key == value]:
                del self.running[earlier]  # it never ended: its worker died
                self.on_progress(-self.counted.pop(earlier, 0))
            self.running[attempt] = value
        elif kind == "end":
            self.running.pop(attempt, None)
            self.counted.pop(attempt, None)
        elif kind == "packets" and attempt in self.running:
            self.counted[attempt] = self.counted.get(attempt, 0) + value
            self.on_progress(value)

    def wait_for_ends(self, inbox, seconds: float) -> None:
        """Until every run that started has ended (one whose worker died never does)."""
        deadline = time.monotonic() + seconds
        while self.running and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                kind, item = inbox.get(timeout=0.1)
                if kind == "event":
                    self.event(item)


def _held_keys(keys, dask_worker=None) -> list:
    """On a worker: which of the keys it still holds (a cancelled task whose thread runs)."""
    return [key for key in keys if key in dask_worker.state.tasks]


def _wait_until_stopped(client, keys, seconds: float) -> None:
    """Until no worker holds a task of this run: cancelled ones forgotten, running ones
    stopped. Asked of the workers themselves: a task that started as the command was
    stopped has not said so yet."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            held = client.run(_held_keys, keys, on_error="ignore")
        except Exception:  # the scheduler is gone: nothing more to learn
            return
        if not any(held.values()):
            return
        time.sleep(0.1)


def _remove_temporary_files(tasks, topic: str) -> None:
    """The temporary files of this run's tasks that are still there, beside the tasks' paths:
    a worker that died left them (or a task that did not stop in time: its rename then fails).
    Every output is renamed from such a file whole, so nothing half written is left."""
    folders = set()
    for _, arguments in tasks:
        for path in (a for a in _absolute(arguments) if isinstance(a, Path)):
            folders.add(path if path.is_dir() else path.parent)
    for folder in folders:
        for part in folder.glob(f".*.{topic}.*.part"):
            with contextlib.suppress(OSError):
                shutil.rmtree(part) if part.is_dir() else part.unlink()  # a dir: flows' partitions


def connect(address: str):
    """A Dask client of the scheduler at ADDRESS, or one ToolError line naming it."""
    try:
        from distributed import Client
    except ImportError:
        raise ToolError(
            "--scheduler needs Dask distributed: run bash scripts/setup.sh to install it"
        ) from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, ValueError, TypeError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ToolError(f"cannot reach the Dask scheduler at {address}: {reason}") from None


PACKAGE = __name__.split(".")[0]  # what the scheduler and every worker must import


def package_missing(address: str, where: str = "") -> ToolError:
    """The one line for a cluster whose scheduler or workers lack the package (Dask says
    'Error during deserialization of the task graph', or a worker dies unpickling a task)."""
    return ToolError(
        f"the Dask cluster at {address} cannot import the {PACKAGE} package"
        + (f" ({where})" if where else "")
        + f": install the {PACKAGE} package (pip install, as on this machine) in the Python "
        "environment of every worker and of the scheduler"
    )


def _is_package_missing(error: BaseException) -> bool:
    text = str(error)
    return (
        "deserialization of the task graph" in text
        or (isinstance(error, ImportError) and (error.name or "").split(".")[0] == PACKAGE)
        or f"No module named '{PACKAGE}" in text
    )


def check_package(client, address: str) -> None:
    """Refuse a cluster whose scheduler or workers cannot import the package before any
    task is sent: a worker without it dies unpickling its task, and the run would wait for
    a worker forever. (find_spec: a function of Python's own, that every process has.)"""
    from importlib.util import find_spec

    try:
        scheduler = client.run_on_scheduler(find_spec, PACKAGE) is not None
        workers = client.run(find_spec, PACKAGE, on_error="return")
    except Exception:  # an old scheduler that refuses run_on_scheduler: the tasks will tell
        return
    lacking = [w for w, spec in workers.items() if spec is None or isinstance(spec, Exception)]
    where = ([] if scheduler else ["the scheduler"]) + (
        [f"{len(lacking)} of {len(workers)} worker(s): {', '.join(sorted(lacking))}"]
        if lacking
        else []
    )
    if where:
        raise package_missing(address, " and ".join(where))


def _run_on_cluster(tasks, address: str, on_progress):
    client = connect(address)
    try:
        check_package(client, address)
    except ToolError:
        client.close()
        raise
    topic = f"iotsig-{uuid.uuid4().hex}"
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    attempts = _Attempts(on_progress)
    futures = {}
    try:
        client.subscribe_topic(topic, lambda event: inbox.put(("event", event[1])))
        for function, arguments in tasks:
            future = client.submit(
                _on_worker,
                function,
                _absolute(arguments),
                topic,
                key=f"{function.__name__}-{uuid.uuid4().hex}",  # as the dashboard shows it
                pure=False,
                retries=RETRIES,
            )
            futures[future.key] = (future, arguments[0])
            future.add_done_callback(lambda done: inbox.put(("done", done.key)))
        pending = set(futures)
        while pending:
            with contextlib.suppress(queue.Empty):  # a timeout: Ctrl-C gets through
                kind, item = inbox.get(timeout=0.2)
                if kind == "event":
                    attempts.event(item)
                elif item in pending:
                    pending.discard(item)
                    future, first = futures[item]
                    outcome = _outcome(future, first)
                    if outcome is PACKAGE_MISSING:  # every task would fail so: one line
                        raise package_missing(address)
                    yield first, outcome
        attempts.wait_for_ends(inbox, END_WAIT)
    except BaseException:
        client.cancel([future for future, _ in futures.values()])
        _wait_until_stopped(client, list(futures), STOP_WAIT)
        raise
    finally:
        _remove_temporary_files(tasks, topic)
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
        with contextlib.suppress(Exception):
            client.close()


def _absolute(arguments) -> tuple:
    """Paths as the workers must see them: they run in directories of their own."""
    return tuple(Path(os.path.abspath(a)) if isinstance(a, Path) else a for a in arguments)


PACKAGE_MISSING = object()  # _outcome's: the cluster cannot import the package


def _outcome(future, first):
    """The task's result or ToolError; what else stopped it on the cluster (a worker
    killed every time...) is that task's ToolError too, but for a cluster that cannot
    import the package (PACKAGE_MISSING: the run stops there)."""
    if future.status == "finished":
        return future.result()
    if future.status == "cancelled":
        return ToolError(f"{first}: its task was cancelled on the Dask cluster")
    error = future.exception()
    if _is_package_missing(error):
        return PACKAGE_MISSING
    reason = " ".join(str(error).split())
    return ToolError(f"{first}: failed on the Dask cluster: {type(error).__name__}: {reason}")
