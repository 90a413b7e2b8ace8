"""What an indexing job leaves behind: the report of rejected rows, the summary, and the job record.

* The report is JSON Lines, one object per rejected row: ``{"line": 12, "id": "sku-1" or null,
  "reason": "..."}``. It is written as the job goes (flushed per batch) and replaced by each run.
* The job record, ``<jobs_dir>/index-<collection>-<started>.json``, says ``"status": "running"`` while the
  job runs, then ``"done"`` with the summary's keys (`IndexSummary.as_dict`) at its top level, or
  ``"failed"`` with the error. The newest is also copied to ``<jobs_dir>/last_index.json`` (see
  `last_job`), for ``vitrine info``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

logger = logging.getLogger(__name__)

LAST_JOB_FILE = "last_index.json"
EXIT_OK = 0
EXIT_REJECTED = 3


@dataclass(frozen=True)
class IndexSummary:
    """The outcome of one `index_catalog` run."""

    collection: str
    rows: int
    """Records read from the catalog (good and bad)."""
    indexed: int
    """Newly embedded: new products, or a changed text or image."""
    updated: int
    """Only other fields changed: payload rewritten, nothing re-embedded."""
    unchanged: int
    rejected: int
    pruned: int
    seconds: float
    report: Path | None
    """The report of rejected rows (None when nothing was written)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: setup (model, collection), state, read, images (waiting on workers), inference,
    write, prune."""
    notes: tuple[str, ...] = ()
    """Things the user should know (e.g. why pruning was skipped)."""
    thumbnails: int = 0
    """Images whose thumbnail and preview were written (new or changed images, and unchanged ones that had none)."""
    thumbnail_failures: int = 0
    """Images whose thumbnail and preview could not be made (their products were indexed all the same)."""
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per stage (``indexer.stages.STAGES``: read, wait, fetch, decode, preprocess, device_decode,
    device_preprocess, embed_text, embed_image, tag, upsert): ``seconds``, ``count`` (of ``unit``: rows, images,
    texts or products), ``per_s`` (count / seconds) and ``where`` (``main``: in turn in the job's process;
    ``workers``: summed over the worker processes, in parallel with the rest)."""

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every row was indexed, updated or unchanged; 3 when some were rejected."""
        return EXIT_OK if self.rejected == 0 else EXIT_REJECTED

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        data = asdict(self)
        data["report"] = str(self.report) if self.report else None
        data["notes"] = list(self.notes)
        data["rate"] = round(self.rate, 3)
        data["seconds"] = round(self.seconds, 3)
        data["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        data["stages"] = {name: {key: round(value, 3) if isinstance(value, float) else value
                                 for key, value in stage.items()} for name, stage in self.stages.items()}
        data["exit_code"] = self.exit_code
        return data


class RejectReport:
    """Appends rejected rows to a JSON Lines file, opened on the first row (or at once when ``eager``)."""

    def __init__(self, path: Path, *, eager: bool = False) -> None:
        self.path = path
        self.count = 0
        self._file: IO[str] | None = None
        if eager:
            self._open()

    def _open(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        return self._file

    def add(self, *, line: int, product_id: str | None, reason: str) -> None:
        """Record one rejected row."""
        record = {"line": line, "id": product_id, "reason": reason}
        self._open().write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    @property
    def written(self) -> bool:
        """Whether the file exists (was opened)."""
        return self._file is not None

    def flush(self) -> None:
        """Push written rows to the file."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> RejectReport:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


class JobRecord:
    """The job's state file under ``jobs_dir`` (and ``last_index.json``), rewritten atomically."""

    def __init__(self, jobs_dir: Path, *, collection: str, catalog: Path,
                 started: datetime | None = None) -> None:
        self.started = started or datetime.now(UTC)
        self.jobs_dir = jobs_dir
        stamp = self.started.strftime("%Y%m%dT%H%M%S%fZ")
        self.path = jobs_dir / f"index-{collection}-{stamp}.json"
        self.base: dict[str, Any] = {"kind": "index", "collection": collection, "catalog": str(catalog),
                                     "started": self.started.isoformat(), "pid": os.getpid()}

    @property
    def stamp(self) -> str:
        """The job's start time, as used in its file names."""
        return self.started.strftime("%Y%m%dT%H%M%S%fZ")

    def write(self, status: str, **extra: Any) -> None:
        """Record the job's status (``running``, ``done`` or ``failed``) and details."""
        data = {**self.base, "status": status, "written": datetime.now(UTC).isoformat(), **extra}
        try:
            _write_json_atomic(self.path, data)
            _write_json_atomic(self.jobs_dir / LAST_JOB_FILE, data)
        except OSError as e:  # job state is informative: never fail the job for it
            logger.warning("cannot write the job record %s: %s", self.path, e)


def last_job(jobs_dir: Path) -> dict[str, Any] | None:
    """The record of the newest indexing job in ``jobs_dir`` (None when there is none or it is unreadable)."""
    try:
        data = json.loads((jobs_dir / LAST_JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
