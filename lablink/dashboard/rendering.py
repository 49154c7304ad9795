"""What the templates share: instants the browser shows in its own zone, durations in
human units, and statuses that read without colour (a symbol and a word)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape

# A symbol beside the word: status is never told by colour alone. Each is in the DejaVu
# fonts a Debian lab PC has (⏸, ⏱ and ⦸ are not: they showed as empty boxes).
STATUS_SYMBOLS = {
    "completed": "✔",
    "running": "▶",
    "pending": "…",
    "queued": "…",
    "failed": "✖",
    "timed_out": "◷",
    "interrupted": "⚡",
    "cancelled": "⊘",
    "skipped": "↷",
    "missed": "⚠",
    "coalesced": "⇉",
    "blocked": "⊘",
    # Calibration (docs/calibration.md).
    "valid": "✔",
    "due_soon": "⚠",
    "expired": "✖",
    "missing": "○",
    "overridden": "⚠",
    "quarantined": "✖",
    "active": "●",
    "paused": "‖",
    "ok": "✔",
    "degraded": "⚠",
    "failing": "✖",
    "off": "○",
    "online": "●",
    "offline": "○",
    "critical": "✖",
    "error": "✖",
    "warning": "⚠",
    "info": "ℹ",
}


def duration(seconds: float | None) -> str:
    """1.5 → '1.5 s', 0.012 → '12 ms', 3725 → '1 h 2 min'."""
    if seconds is None:
        return "—"
    value = float(seconds)
    sign = "−" if value < 0 else ""
    value = abs(value)
    if value < 1:
        return f"{sign}{value * 1000:.0f} ms"
    if value < 60:
        return f"{sign}{value:.1f} s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {secs} s" if secs else f"{sign}{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{sign}{hours} h {minutes} min" if minutes else f"{sign}{hours} h"
    days, hours = divmod(hours, 24)
    return f"{sign}{days} d {hours} h" if hours else f"{sign}{days} d"


def instant(value: str | datetime | None, zone: str | None = None, style: str = "") -> Markup:
    """A <time> the page's script rewrites in the browser's zone (and the job's, where it
    differs); until then, and without scripts, it reads as recorded. ``style``: "clock"
    (hours and minutes) or "hour" (weekday and hour), for lists where the day is a heading;
    "moment" (day, month and time, no year), for tables."""
    if value is None or value == "":
        return Markup("—")
    # f-strings over escaped parts, not Markup.format: a job page's executions table shows
    # 50 of these, and string.Formatter was a fifth of the drawing process's time.
    text = escape(value.isoformat() if isinstance(value, datetime) else str(value))
    zone_attr = f' data-zone="{escape(zone)}"' if zone else ""
    style_attr = f' data-style="{escape(style)}"' if style else ""
    return Markup(f'<time datetime="{text}"{zone_attr}{style_attr}>{text}</time>')


def status(value: str | None) -> Markup:
    word = value or "unknown"
    symbol = STATUS_SYMBOLS.get(word, "•")
    shown = escape(word)
    return Markup(
        f'<span class="status status-{shown}"><span aria-hidden="true">{escape(symbol)}</span>'
        f" {escape(word.replace('_', ' '))}</span>"
    )


def no_token(*_: Any) -> str:
    """``csrf_token()`` in a part drawn for every screen: refused, as no screen's token may be
    in it (its forms send the token in htmx's header, base.html's hx-headers)."""
    raise RuntimeError(
        "a part drawn for every screen cannot carry one screen's CSRF token: "
        "its forms send it in htmx's header (base.html's hx-headers)"
    )


# The names a dict answers as attributes (items, get, values...): ``row.get`` stays the method.
DICT_ATTRIBUTES = frozenset(dir(dict))


class RowsEnvironment(Environment):
    """Jinja as Litestar's engine has it, for templates whose rows are the views' dicts:
    ``row.status`` is looked up as an item first. Jinja tries the attribute first, and for a
    dict every field of every row raised and caught an AttributeError: 29 per row of a job's
    executions table. The same answers: an item is taken only where the attribute could not
    be (a name that is not a dict's own), and a missing one is undefined as before."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def templates(directory: Path) -> RowsEnvironment:
    """The dashboard's templates, autoescaped, with its filters: the app's engine and the
    drawing process's alike."""
    found = RowsEnvironment(loader=FileSystemLoader(directory), autoescape=True)
    register_filters(found)
    return found


def register_filters(environment: Any) -> None:
    environment.filters["duration"] = duration
    environment.filters["instant"] = instant
    environment.filters["status"] = status
    environment.filters["e"] = escape
