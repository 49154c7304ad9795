"""The templates' environment and filters (rendering.py): rows looked up as items first
answer exactly as plain Jinja does, and the filters escape whatever a job's fields hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from jinja2 import DictLoader, Environment
from markupsafe import Markup

from lablink.dashboard.rendering import DICT_ATTRIBUTES, RowsEnvironment, instant, status

# Field names of rows, the dict's own names among them (``row.items`` must stay the method).
NAMES = st.sampled_from(["status", "error", "value", "items", "get", "keys", "values", "copy"])
VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.dictionaries(st.sampled_from(["type", "message", "items"]), st.text(max_size=3)),
)
TEMPLATE = (
    "{{ row.NAME }}|{{ row.NAME is defined }}|{{ row.NAME is callable }}"
    "|{{ row.NAME.type if row.NAME is mapping else '' }}"
)


@given(row=st.dictionaries(NAMES, VALUES), name=NAMES)
def test_rows_read_as_items_first_render_as_plain_jinja_renders_them(
    row: dict[str, Any], name: str
) -> None:
    template = TEMPLATE.replace("NAME", name)
    plain = Environment(autoescape=True).from_string(template).render(row=row)
    rows = RowsEnvironment(autoescape=True).from_string(template).render(row=row)
    assert rows == plain
    # ``row.items`` is the dict's method even where the row has an item of that name.
    assert ("method" in rows) == (name in DICT_ATTRIBUTES)


def test_a_missing_field_is_undefined_and_other_objects_are_read_as_jinja_reads_them() -> None:
    rows = RowsEnvironment(autoescape=True, loader=DictLoader({}))
    template = rows.from_string("{{ row.absent is defined }}/{{ when.year }}/{{ pair.real }}")
    assert template.render(row={"status": "ok"}, when=datetime(2026, 1, 2), pair=3) == (
        "False/2026/3"
    )


def test_the_filters_escape_what_a_jobs_fields_hold() -> None:
    hostile = '<script>"&'
    assert instant(hostile, hostile, hostile) == Markup(
        '<time datetime="&lt;script&gt;&#34;&amp;" data-zone="&lt;script&gt;&#34;&amp;"'
        ' data-style="&lt;script&gt;&#34;&amp;">&lt;script&gt;&#34;&amp;</time>'
    )
    assert instant(None) == instant("") == Markup("—")
    assert instant(datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "Europe/Berlin", "clock") == Markup(
        '<time datetime="2026-03-29T01:00:00+00:00" data-zone="Europe/Berlin"'
        ' data-style="clock">2026-03-29T01:00:00+00:00</time>'
    )
    assert status("timed_out") == Markup(
        '<span class="status status-timed_out"><span aria-hidden="true">◷</span> timed out</span>'
    )
    assert status(hostile) == Markup(
        '<span class="status status-&lt;script&gt;&#34;&amp;"><span aria-hidden="true">•</span>'
        " &lt;script&gt;&#34;&amp;</span>"
    )
    assert "unknown" in status(None)
