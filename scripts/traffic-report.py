#!/usr/bin/env python3
"""Packets/flows CSVs -> device inventory, endpoint map, timeline, report.html. See --help."""

from iotsig.commands.traffic_report import TrafficReport

if __name__ == "__main__":
    TrafficReport.script()
