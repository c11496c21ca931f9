"""The commands behind ``python runner.py`` and ``rapport``: thin doors onto :mod:`memory`.

``memory`` (inspect, export, forget), ``calls`` (follow-ups and analysed calls) and ``worker``
(the standalone analysis worker), each in its own module; :mod:`cli.format` holds what their
tables share.
"""
