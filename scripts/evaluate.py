#!/usr/bin/env python3
"""EVENTS_DIR DEVICES_YAML: learn each event on part of its recordings, detect on the rest."""

from iotsig.commands.evaluate import Evaluate

if __name__ == "__main__":
    Evaluate.script()
