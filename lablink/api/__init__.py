"""The HTTP API (Litestar): thin controllers over the write path and the projections."""
