#!/usr/bin/env python3
"""Captures (pcap/pcapng) -> one packets CSV per capture. See --help and the README."""

from iotsig.commands.packet_translator import PacketTranslator

if __name__ == "__main__":
    PacketTranslator.script()
