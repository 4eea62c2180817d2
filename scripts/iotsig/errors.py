"""Errors a user can act on, each one line (`FILE: problem`), and the warnings the library
gives (Python warnings of one category: a notebook shows them, a caller can filter them)."""

from __future__ import annotations

import contextlib
import warnings


class ToolError(Exception):
    """A problem reported as one line, without a traceback."""


class InputError(ToolError):
    def __init__(self, path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable: errors come back from worker processes
        return type(self), (self.path, self.problem)


class OutputError(ToolError):
    def __init__(self, path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so that unfinished files are cleaned up on the way out."""


class IotsigWarning(UserWarning):
    """Something the library noticed and went on past: a damaged capture's unread packets,
    a CSV a spreadsheet changed, a device that never appears... One line, naming the file."""


def warn(message: str) -> None:
    warnings.warn(message, IotsigWarning, stacklevel=3)


@contextlib.contextmanager
def collected(into: list[str]):
    """The IotsigWarnings given inside the block, appended to `into` as their lines rather
    than shown (a worker process hands them back with its result); other warnings go on."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", IotsigWarning)
            yield into
    finally:
        for item in caught:
            if issubclass(item.category, IotsigWarning):
                into.append(str(item.message))
            else:
                warnings.warn_explicit(
                    item.message, item.category, item.filename, item.lineno, source=item.source
                )
