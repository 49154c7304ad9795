"""Reading ``/metrics`` as Prometheus does: the text format parsed by prometheus_client."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """(every metric name a query may use, each sample's value by name and labels).

    The names: each family's, a counter's with ``_total`` (the parser drops it from the
    family), and every sample's (``_bucket``, ``_sum``, ``_count``)."""
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        for sample in family.samples:
            names.add(sample.name)
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: Any) -> float | None:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))


def total(samples: Samples, name: str, **labels: Any) -> float:
    """The sum over the series of ``name`` whose labels include ``labels``."""
    wanted = {(k, str(v)) for k, v in labels.items()}
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)
