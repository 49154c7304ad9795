"""The fields a change alters, each with its value before and after: pure.

Compared as JSON values (``msgspec.to_builtins``), the form the event stores them in, so a
value that reads back the same (an instant, a tuple written as a list) is no change.
"""

from __future__ import annotations

import msgspec

from lablink.events import FieldChange


def field_changes(old: msgspec.Struct, new: msgspec.Struct) -> tuple[FieldChange, ...]:
    """Each field of ``new`` whose value differs from ``old``'s, in ``new``'s field order.
    Both are records of one kind (two job specs, two profiles)."""
    changes = []
    for name in new.__struct_fields__:
        before = msgspec.to_builtins(getattr(old, name, None))
        after = msgspec.to_builtins(getattr(new, name))
        if before != after:
            changes.append(FieldChange(field=name, old=before, new=after))
    return tuple(changes)
