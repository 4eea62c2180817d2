#!/usr/bin/env python3
"""SIGNATURE_CSV [...] PCAP_OR_FLOWS_CSV [...]: find learned events in captures. See --help."""

from iotsig.commands.event_detector import EventDetector

if __name__ == "__main__":
    EventDetector.script()
