"""iotsig: IoT event signatures from packet captures.

Library behind the scripts in scripts/: packets (tshark -> packets CSV), flows (packets CSV
-> flows CSV), signature (flows CSVs -> pattern.txt, profile.yaml, signature CSV).
"""

__version__ = "0.1.0"

import os as _os

# No linear algebra here: OpenBLAS's thread pool, started when numpy is imported, would only
# spend a tenth of a second of CPU on a second core (and compete with the translator's
# workers). Set before numpy is imported; an explicit setting wins.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
