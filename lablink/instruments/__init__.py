"""The instrument vocabulary and the execution contract, shared by every layer that speaks of
instruments and imported by none of whom it serves.

Read in this order: ``scpi`` (the vocabulary of a driver table), ``drivers`` (one table per
instrument kind), ``checks`` (a job's parameters against its driver, before anything is
sent), ``instrument`` (the generic blocking driver a table drives), ``context`` (what a
blocking operation gets besides its instrument), ``errors`` (what can go wrong between a job
and an instrument), ``simulated`` (the guide's six instruments by id), ``execution`` (the
request and the one ``Outcome`` of an execution) and ``protocol`` (the messages and subjects
of the scheduler and the agents over NATS).

The pure core (``domain``, ``projections``), the application services, the ``scheduler`` and
the ``equipment_agent`` import from here; nothing here imports any of them (see
docs/architecture.md and the import contracts in pyproject.toml).
"""
