#!/usr/bin/env python3
"""Captures or packets CSVs -> one feature vector per unit (features.csv, .parquet). See --help."""

from iotsig.cli import entry_point
from iotsig.commands.feature_extractor import FeatureExtractor

if __name__ == "__main__":
    entry_point(FeatureExtractor)
