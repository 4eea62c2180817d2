"""Run independent jobs on every core, with progress reported back from the workers."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from .errors import ToolError

_progress_queue = None
_stopping = False  # the running task was stopped by a signal and is cleaning up
_deferred = 0  # a further signal that came during that clean-up


def _worker_init(progress_queue):
    global _progress_queue
    _progress_queue = progress_queue
    _between_tasks()


def _between_tasks() -> None:
    """An idle worker has nothing to clean up: Ctrl-C or SIGTERM end it quietly (an
    exception out of the pool's wait for work would print a traceback)."""
    signal.signal(signal.SIGINT, _exit_quietly)
    signal.signal(signal.SIGTERM, _exit_quietly)


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
    from .cli import Terminated

    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _report(count: int) -> None:
    _progress_queue.put(count)


def _call(function, arguments):
    global _stopping, _deferred
    _stopping, _deferred = False, 0
    signal.signal(signal.SIGINT, _stop_task)
    signal.signal(signal.SIGTERM, _stop_task)
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


def run_parallel(tasks, jobs: int = 0, on_progress=None):
    """tasks: [(function, args)], each function taking on_packets=. Yields (first arg,
    result or ToolError) in completion order."""
    jobs = min(jobs or cores(), len(tasks)) or 1
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
                yield pending.pop(future), future.result()
        _drain(progress_queue, on_progress)
    except BaseException:
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()  # workers remove their unfinished files on SIGTERM
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def _drain(progress_queue, on_progress):
    while True:
        try:
            count = progress_queue.get_nowait()
        except queue.Empty:
            return
        if on_progress:
            on_progress(count)
