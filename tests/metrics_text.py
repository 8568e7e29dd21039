"""Reading a service's `GET /metrics` answer in tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def store_memory(text: str) -> dict[str, float]:
    """The state store's memory gauges (`fedlora_store_*`) in a `/metrics` answer, by metric name."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("fedlora_store_")
    }


def metric_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the sample `name` with `labels` in a `/metrics` answer; None if it has none."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None
