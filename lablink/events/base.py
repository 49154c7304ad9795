"""The base every event Struct shares.

Events are frozen, kw_only msgspec Structs with a hand-picked, stable tag (never a class path,
which would break on rename). Schemas only grow: a new field gets a default, no field changes
type, and unknown fields in stored rows are ignored so an older reader survives a newer writer.
"""

from __future__ import annotations

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """A past-tense fact. Subclasses set ``tag=`` explicitly."""
