"""The SIA DC-09 receiver: alarm panels and IP communicators report over TCP or UDP.

``frames`` reads and writes the wire format through pysiaalarm, ``reports`` turns what a frame
reports into Events, ``desk`` decides each frame's answer and records it in the ledger first, and
``server`` is the process (``alarm-bridge receiver``): the connection loop, the ledger threads and
the shutdown. Nothing here imports Flask or the workers; only this package imports pysiaalarm.
"""
