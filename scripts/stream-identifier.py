#!/usr/bin/env python3
"""Packets CSVs -> one flows CSV each (Zeek conn.log style). See --help and the README."""

from iotsig.commands.stream_identifier import StreamIdentifier

if __name__ == "__main__":
    StreamIdentifier.script()
