#!/usr/bin/env python3
"""Flows CSVs of one event's recordings -> pattern.txt, profile.yaml, signature.csv."""

from iotsig.commands.signature_extractor import SignatureExtractor

if __name__ == "__main__":
    SignatureExtractor.script()
