"""Print the configuration reference (docs/configuration.md) from the settings model itself.

    .venv/bin/python scripts/config_reference.py > docs/configuration.md

`tests/unit/common/test_config_reference.py` fails when the committed page and the model disagree.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from common.settings import Settings

HEADER = """# Configuration reference

Every setting, its environment variable, default and meaning. Generated from `common/settings.py` by
`scripts/config_reference.py`; a test keeps the two in step.

Settings come from, highest precedence first:

1. command-line options where a command has them (`--model`, `--collection`, `--host`, `--port`, ...);
2. environment variables: prefix `VITRINE_`, groups nested with `__` (`VITRINE_EMBED__DEVICE=cuda:1`);
   lists as JSON (`VITRINE_INDEXER__IMAGE_ROOTS='["/data/images"]'`);
3. a TOML file: the one named by `VITRINE_CONFIG`, else `./vitrine.toml` when it exists, with the same
   names (`home = "/var/lib/vitrine"`, then `[embed]`, `device = "cuda"`, ...);
4. the defaults below.

A bad value stops the command with a message naming the setting and the value (exit status 2).
"""


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed (see description)"
    value: Any = field.default
    if value is None:
        return "unset"
    if isinstance(value, tuple | list) and not value:
        return "`[]`"
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            continue
        env = f"VITRINE_{prefix}{name.upper()}"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env}` | {_default(field)} | {description} |")
    return rows


def render() -> str:
    """The whole page as markdown."""
    parts = [HEADER, "## General\n", "| variable | default | meaning |", "|---|---|---|"]
    parts += _rows(Settings, "")
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            doc = (group.__doc__ or "").strip().splitlines()[0]
            parts += ["", f"## `{name}`: {doc}\n", "| variable | default | meaning |", "|---|---|---|"]
            parts += _rows(group, f"{name.upper()}__")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
