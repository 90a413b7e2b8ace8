"""`indexer.space`: a disk too full for the embedded store is a clear error, before anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from common.errors import BackendUnavailable
from indexer.space import MIN_FREE_BYTES, DiskFull, check_free_space


def _usage(free: int) -> Any:
    return shutil._ntuple_diskusage(10 * MIN_FREE_BYTES, 10 * MIN_FREE_BYTES - free, free)


def test_enough_space_passes(tmp_path: Path) -> None:
    check_free_space(tmp_path, need=1)
    check_free_space(tmp_path / "not" / "yet" / "made", need=1)  # asks the nearest existing parent


def test_a_full_disk_names_the_folder_and_the_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Path] = []

    def usage(path: Path) -> Any:
        asked.append(Path(path))
        return _usage(3 * 2**20)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    folder = tmp_path / "home" / "store"
    with pytest.raises(DiskFull) as err:
        check_free_space(folder)
    assert isinstance(err.value, BackendUnavailable)
    message = str(err.value)
    assert str(folder) in message and "no space left" in message
    assert "3 MiB free" in message and f"{MIN_FREE_BYTES // 2**20} MiB" in message
    assert asked == [tmp_path]


def test_a_file_system_that_cannot_be_asked_is_let_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def usage(path: Path) -> Any:
        raise PermissionError(13, "denied", str(path))

    monkeypatch.setattr(shutil, "disk_usage", usage)
    check_free_space(tmp_path)
