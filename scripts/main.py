#!/usr/bin/env python3
"""DEVICE IPV4 PCAP [PCAP ...]: the three stages in order, from captures to signature."""

from iotsig.commands.main import Main

if __name__ == "__main__":
    Main.script()
