"""Benchmarks that print tables, each run as ``python -m bench.<name>``.

They run with the bot's process settings for the threads of numerical code, set here before
anything loads numpy or the E5 engine: numpy's BLAS on one thread (see :mod:`cli`), and the
engine's OpenMP threads passive while they wait (see :func:`cli.serve.run_bot`).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
