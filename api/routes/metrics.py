"""``GET /metrics``: the Prometheus text exposition of `common.metrics.REGISTRY`, and the last index job.

Index jobs run in the command line's process, which nobody scrapes, so the server also reads the newest job
record (`indexer.report.last_job`) at each scrape and shows its row counts as
``vitrine_last_index_job_rows{outcome}`` (and when it was written, as ``vitrine_last_index_job_timestamp_seconds``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.auth import require_metrics_key
from api.deps import SettingsDep
from common.metrics import INGEST_OUTCOMES, REGISTRY
from indexer.report import last_job

METRICS_PATH = "/metrics"

router = APIRouter(tags=["metrics"])


class LastIndexJobCollector(Collector):
    """The row counts of the newest index job recorded in ``jobs_dir``, read at each collection.

    Args:
        jobs_dir: the folder of the job records (settings ``jobs_dir``).
    """

    def __init__(self, jobs_dir: Path) -> None:
        self._jobs_dir = jobs_dir

    def collect(self) -> Iterator[Metric]:
        job = last_job(self._jobs_dir)
        if job is None:
            return
        rows = GaugeMetricFamily("vitrine_last_index_job_rows", "Rows of the newest index job (any collection) by "
                                 "outcome; 'rows' is all rows read.", labels=["outcome"])
        for outcome in ("rows", *INGEST_OUTCOMES):
            value = job.get(outcome)
            if isinstance(value, int | float) and not isinstance(value, bool):
                rows.add_metric([outcome], float(value))
        yield rows
        written = _timestamp(job.get("written") or job.get("started"))
        if written is not None:
            yield GaugeMetricFamily("vitrine_last_index_job_timestamp_seconds", "When the newest index job's "
                                    "record was written (Unix time).", value=written)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


class _Scrape(Collector):
    """The metrics of several collectors, as one registry."""

    def __init__(self, *sources: Collector) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source.collect()


@router.get(METRICS_PATH, include_in_schema=False, dependencies=[Depends(require_metrics_key)])
def metrics(settings: SettingsDep) -> Response:
    """Every metric in the Prometheus text exposition format."""
    scrape = _Scrape(REGISTRY, LastIndexJobCollector(settings.jobs_dir))
    return Response(generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)

