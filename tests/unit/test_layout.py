"""The package layout of design.md, checked from the source: imports flow one way and nothing imports api."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> the packages of ours it may import (design.md, "Layout").
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "embed": {"common"},
    "store": {"common"},
    "indexer": {"common", "embed", "store"},
    "search": {"common", "embed", "store"},
    "rerank": {"common"},
    "generate": {"common"},
    "train": {"common", "embed", "indexer"},
    "api": {"common", "embed", "store", "indexer", "search", "rerank", "generate", "train"},
}
OURS = set(ALLOWED)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


def _package_files() -> list[tuple[str, Path]]:
    return [(pkg, path) for pkg in sorted(ALLOWED) if (ROOT / pkg).is_dir()
            for path in sorted((ROOT / pkg).rglob("*.py"))]


@pytest.mark.parametrize(("package", "path"), _package_files(), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_imports_flow_one_way(package: str, path: Path) -> None:
    bad = _imports(path) - ALLOWED[package] - {package}
    assert not bad, f"{path.relative_to(ROOT)} ({package}) imports {sorted(bad)}; allowed: {sorted(ALLOWED[package])}"


def test_every_top_level_package_is_known() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    assert packages <= OURS, f"unknown top-level packages {sorted(packages - OURS)}: add them to design and ALLOWED"


def test_the_layout_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import api.app\nfrom search.service import SearchService\n", encoding="utf-8")
    assert _imports(bad) == {"api", "search"}
