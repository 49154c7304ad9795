"""Projections: pure folds of the event log into the SQLite tables the API reads."""

from lablink.projections.base import Projection
from lablink.projections.runner import Projector, default_projections

__all__ = ["Projection", "Projector", "default_projections"]
