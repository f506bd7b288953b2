"""Where alarm-bridge leans on a library's internals: one module per library, each pinned by a test.

A library upgrade that changes what we rely on (kombu's Redis key layout and publish path,
prometheus_client's multiprocess switch) then fails ``tests/unit/app/adapters`` instead of
miscounting queues or losing samples in production. Nothing outside this package touches those
internals.
"""
