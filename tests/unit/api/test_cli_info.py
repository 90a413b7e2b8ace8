"""``vitrine info``'s summary line of the last index job."""

from __future__ import annotations

from api.cli.info import _job_line


def test_the_job_line_shows_when_it_was_written_not_a_count() -> None:
    job = {"status": "done", "collection": "products", "started": "2026-11-29T10:00:00+00:00",
           "written": "2026-11-29T10:01:00+00:00", "rows": 5, "indexed": 0, "updated": 450, "seconds": 4.4}
    line = _job_line(job)
    assert line.startswith("done at 2026-11-29T10:01:00+00:00, collection 'products': ")
    assert "450 updated" in line and line.endswith("in 4.4 s")
    assert _job_line({"status": "running", "started": "S"}).startswith("running at S")
