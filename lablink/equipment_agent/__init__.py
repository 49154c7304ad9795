"""Equipment: drivers, benches and the blocking operations that run jobs on instruments.

Read in this order: ``scpi`` (the vocabulary of a driver table), ``drivers`` (one table per
instrument kind), ``instrument`` (the generic driver a table drives), ``bench`` (one VISA
session, one lock and one worker thread per instrument; the simulated bench in ``bench.yaml``),
``operations`` and ``acquisition`` (the guide's job types as blocking code), ``errors``.
Nothing here uses asyncio: the in-process executor (``lablink.scheduler.inprocess``) and the
equipment agents (reached over NATS) both run these operations on an instrument's worker.
"""
