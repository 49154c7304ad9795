"""LabLink: an event-sourced scheduler for laboratory instruments."""

__version__ = "0.1.0"
