"""Equipment agents: one VISA session, one worker and one lock per instrument, reached over NATS.

Arrives with the equipment agents issue; the package exists now so the layout is fixed.
"""
