"""The commands behind ``python runner.py`` and ``rapport``: thin doors onto :mod:`memory`.

``memory`` (inspect, export, forget), ``calls`` (follow-ups and analysed calls) and ``worker``
(the standalone analysis worker), each in its own module; :mod:`cli.format` holds what their
tables share.
"""

import os

# numpy's BLAS (OpenBLAS) keeps its worker threads spinning for a while after each parallel
# call (dense ranking and recall make such calls); on a small machine they take the core the
# event loop needs, and other calls' starts stall for milliseconds. OpenBLAS reads this once,
# as numpy loads: set here, before any command imports it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
