"""Errors a user can act on. Each renders as one line: `FILE: problem`."""

from __future__ import annotations


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
