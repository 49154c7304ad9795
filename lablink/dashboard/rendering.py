"""What the templates share: instants the browser shows in its own zone, durations in
human units, and statuses that read without colour (a symbol and a word)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    zone_attr = Markup(' data-zone="{}"').format(zone) if zone else Markup("")
    style_attr = Markup(' data-style="{}"').format(style) if style else Markup("")
    return Markup('<time datetime="{}"{}{}>{}</time>').format(text, zone_attr, style_attr, text)


def status(value: str | None) -> Markup:
    word = value or "unknown"
    symbol = STATUS_SYMBOLS.get(word, "•")
    return Markup(
        '<span class="status status-{}"><span aria-hidden="true">{}</span> {}</span>'
    ).format(word, symbol, word.replace("_", " "))


def no_token(*_: Any) -> str:
    """``csrf_token()`` in a part drawn for every screen: refused, as no screen's token may be
    in it (its forms send the token in htmx's header, base.html's hx-headers)."""
    raise RuntimeError(
        "a part drawn for every screen cannot carry one screen's CSRF token: "
        "its forms send it in htmx's header (base.html's hx-headers)"
    )


def register_filters(environment: Any) -> None:
    environment.filters["duration"] = duration
    environment.filters["instant"] = instant
    environment.filters["status"] = status
    environment.filters["e"] = escape
