"""The commands in scripts/, each a thin command line over the library (iotsig.api's
functions and iotsig.pipeline).

No linear algebra runs here: OpenBLAS's thread pool, started when numpy is imported, would
only spend a tenth of a second of CPU on a second core (and compete with the translator's
workers). Set before numpy is imported (scripts/*.py import a command first); an explicit
setting wins. A library caller's process is left as it is (iotsig/__init__.py)."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
