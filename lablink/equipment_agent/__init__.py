"""Equipment agents: the bench, the guide's job types as blocking operations, and the two
asynchronous shells that run them.

Read in this order: ``bench`` (one VISA session, one lock and one worker thread per
instrument; the simulated bench in ``bench.yaml``), ``operations`` and ``acquisition`` (the
guide's job types as blocking code over the drivers of ``lablink.instruments``), then the two
shells, the only modules here that use asyncio: ``inprocess`` (the in-process executor: the
scheduler's own process drives a bench) and ``agent`` (an agent process, reached over NATS,
with its ``config`` from lab.toml and its ``ledger``). Both run the same operations on an
instrument's worker thread, in that instrument's own line (``queues``: how many wait, and
the safe state that goes ahead of them); ``child`` runs ``agent`` as `lablink serve`'s
supervised child process (LABLINK_EMBEDDED_AGENT=process). Nothing here imports the
scheduler or the API: what the two sides share is in ``lablink.instruments``.
"""
