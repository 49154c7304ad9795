"""The operators' web dashboard, served by `lablink serve` at ``/``: server-rendered pages
(Jinja), htmx vendored under ``static/``, live updates over Server-Sent Events. It reads the
same views as the API and writes through the same services; sessions and CSRF are its own
(session.py), so the JSON API stays key-only."""
