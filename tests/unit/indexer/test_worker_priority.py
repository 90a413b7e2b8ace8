"""Image preparation runs at a lower CPU priority than the model, so decoding never slows the model down."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from indexer.worker import LOW_NICE, ImagePreparer, lower_priority, warm_up

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scheduling classes")


def test_workers_run_at_idle_priority() -> None:
    with ImagePreparer(workers=1, priority="idle") as preparer:
        assert preparer._pool is not None
        pid = preparer._pool.submit(warm_up).result(timeout=120)
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller (the model's process) is untouched


@pytest.mark.parametrize(("priority", "policy", "nice_at_least"), [
    ("idle", os.SCHED_IDLE, None),
    ("low", os.SCHED_OTHER, LOW_NICE),
    ("normal", os.SCHED_OTHER, None),
])
def test_lower_priority_changes_only_the_calling_thread(priority: str, policy: int, nice_at_least: int | None) -> None:
    seen: dict[str, int] = {}

    def run() -> None:
        lower_priority(priority)
        tid = threading.get_native_id()
        seen["policy"] = os.sched_getscheduler(tid)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid)

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen["policy"] == policy
    if nice_at_least is not None:
        assert seen["nice"] >= nice_at_least
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
