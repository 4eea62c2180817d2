"""iotsig: IoT event signatures from packet captures.

Library behind the scripts in scripts/: packets (tshark -> packets CSV), flows (packets CSV
-> flows CSV), signature (flows CSVs -> pattern.txt, profile.yaml, signature CSV).
"""

__version__ = "0.1.0"
