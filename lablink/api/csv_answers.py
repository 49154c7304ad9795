"""Answers that are JSON or, with ``format=csv``, a CSV file streamed a chunk at a time: a
job's results (``results.py``) and the audit trail (``audit.py``, and the dashboard's
``/audit.csv``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Schema
from litestar.response import Stream
from litestar.types import ASGIApp

# Litestar adds "; charset=utf-8" to a text/ type itself (once written here, it said it twice).
CSV_MEDIA_TYPE = "text/csv"


class CsvStream(Stream):
    """A stream that stays text/csv: Litestar gives a returned response the route's media
    type (JSON, from the annotation) unless the response insists."""

    def to_asgi_response(  # type: ignore[override]
        self, app: Any, request: Request[Any, Any, Any], **options: Any
    ) -> ASGIApp:
        options["media_type"] = CSV_MEDIA_TYPE
        return super().to_asgi_response(app, request, **options)


def csv_or_json(rows: str) -> type[Operation]:
    """The ``operation_class`` of a route whose 200 answer is JSON or, with ``format=csv``,
    a CSV file of a header row and then ``rows``: both in the OpenAPI document."""

    @dataclass
    class CsvOrJson(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            content = getattr(ok, "content", None)
            if isinstance(content, dict):
                content["text/csv"] = OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.STRING,
                        description=f"a header row, then {rows} (format=csv)",
                    )
                )

    return CsvOrJson
