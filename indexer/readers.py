"""Catalog readers: JSON Lines, CSV and Parquet, chosen by the file's suffix, and row validation.

Every reader yields, in file order, either a `RawRow` (a parsed dict) or a `BadRow` (why the record could
not be parsed); one bad record never stops the file. `line` is 1-based: the physical line of the record
for JSON Lines and CSV (for a CSV record spanning several lines, the line where it starts), the row
number for Parquet.

Formats (a ``.gz`` suffix on JSON Lines and CSV files is decompressed on the fly):

* ``.jsonl`` / ``.ndjson``: one JSON object per line; blank lines are skipped; ``NaN`` and ``Infinity``
  are refused (they are not JSON).
* ``.csv`` (comma) / ``.tsv`` (tab): UTF-8 (a BOM is fine), a header row naming the columns, quoted fields
  may span lines. Conventions:

  - ``images`` holds several images separated by ``|``: ``front.jpg|back.jpg``;
  - columns named ``attributes.X`` are gathered into the ``attributes`` dict (``attributes.color`` ->
    ``{"color": ...}``); an ``attributes`` column may also hold a JSON object;
  - empty cells mean "absent"; numbers and booleans are given as text (``19.99``, ``yes``/``no``);
  - a record with more or fewer fields than the header is refused rather than guessed at.
* ``.parquet`` / ``.pq``: read in record batches, never whole; list and struct columns map to lists and
  dicts; flat ``attributes.X`` columns are gathered as for CSV.

`iter_products` then validates rows into `common.product.Product` and refuses a repeated id (the second
occurrence is reported, the first one kept), so that nothing is silently lost.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from common.errors import InvalidInput, NotFound
from common.product import Product

logger = logging.getLogger(__name__)

ATTRIBUTE_PREFIX = "attributes."
PARQUET_BATCH_ROWS = 4096
_REPR_LIMIT = 80

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class RawRow:
    """A parsed record, not yet validated."""

    line: int
    data: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    """A record refused, with the reason; ``product_id`` when the record named one."""

    line: int
    reason: str
    product_id: str | None = None


@dataclass(frozen=True)
class ValidRow:
    """A record validated into a product."""

    line: int
    product: Product


def catalog_format(path: Path) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"``, from the file name.

    Raises:
        InvalidInput: the suffix is none of the supported ones.
    """
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InvalidInput(
        f"catalog {str(path)!r} has an unsupported file type; expected JSON Lines (.jsonl, .ndjson), CSV "
        "(.csv, .tsv) or Parquet (.parquet, .pq); JSON Lines and CSV may be gzipped (.gz)"
    )


def read_catalog(path: Path) -> Iterator[RawRow | BadRow]:
    """Parse the catalog file at ``path``, record by record.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: unsupported suffix, or a file that cannot be read at all (no CSV header, not Parquet).
    """
    kind = catalog_format(path)
    if not path.is_file():
        raise NotFound(f"catalog {str(path)!r} does not exist or is not a file")
    if kind == "jsonl":
        return _read_jsonl(path)
    if kind == "csv":
        tabs = path.name.lower().removesuffix(".gz").endswith(".tsv")
        return _read_csv(path, delimiter="\t" if tabs else ",")
    return _read_parquet(path)


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _read_jsonl(path: Path) -> Iterator[RawRow | BadRow]:
    with _open_binary(path) as file:
        for line_no, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield BadRow(line_no, f"line is not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} at "
                                      f"position {e.start})")
                continue
            try:
                value = json.loads(text, parse_constant=_refuse_constant)
            except json.JSONDecodeError as e:
                yield BadRow(line_no, f"invalid JSON: {e.msg} at column {e.colno}")
                continue
            except ValueError as e:
                yield BadRow(line_no, f"invalid JSON: {e}")
                continue
            if not isinstance(value, dict):
                yield BadRow(line_no, f"expected a JSON object per line, got {type(value).__name__} "
                                      f"{_short(value)}")
                continue
            yield RawRow(line_no, value)


def gather_attributes(data: dict[str, Any]) -> dict[str, Any]:
    """Fold flat ``attributes.X`` columns (and a JSON-object ``attributes`` cell) into one dict.

    Raises:
        ValueError: the ``attributes`` cell is text that is not a JSON object.
    """
    keys = [key for key in data if key.startswith(ATTRIBUTE_PREFIX)]
    cell = data.get("attributes")
    if not keys and not isinstance(cell, str):
        return data
    out = {key: value for key, value in data.items() if not key.startswith(ATTRIBUTE_PREFIX)}
    attributes: dict[str, Any] = {}
    if isinstance(cell, str) and cell.strip():
        try:
            parsed = json.loads(cell)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError(f"attributes {_short(cell)} is not a JSON object; use attributes.NAME columns "
                             'or a JSON object such as {"color": "red"}')
        attributes.update(parsed)
    elif isinstance(cell, dict):
        attributes.update(cell)
    for key in keys:
        value = data[key]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        attributes[key.removeprefix(ATTRIBUTE_PREFIX)] = value
    out["attributes"] = attributes
    return out


def _has_surrogates(values: Iterable[str]) -> bool:
    return any(any("\udc80" <= ch <= "\udcff" for ch in value) for value in values)


def _read_csv(path: Path, *, delimiter: str) -> Iterator[RawRow | BadRow]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    file: IO[str] = opener(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    with file:
        reader = csv.reader(file, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        end = 0
        while True:
            start = end + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                end = reader.line_num
                yield BadRow(start, f"malformed CSV record: {e}")
                continue
            end = reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if _has_surrogates(record):
                yield BadRow(start, "record is not valid UTF-8 text")
                continue
            if header is None:
                header = _check_header(path, record, start)
                continue
            if len(record) != len(header):
                yield BadRow(start, f"record has {len(record)} fields but the header has {len(header)} "
                                    "columns")
                continue
            data = dict(zip(header, record, strict=True))
            try:
                yield RawRow(start, gather_attributes(data))
            except ValueError as e:
                yield BadRow(start, str(e), _raw_id(data))
        if header is None:
            logger.warning("catalog %s is empty (no header row)", path)


def _check_header(path: Path, record: list[str], line: int) -> list[str]:
    header = [name.strip() for name in record]
    if any(not name for name in header):
        raise InvalidInput(f"catalog {str(path)!r}: the header (line {line}) has an empty column name at "
                           f"position {header.index('') + 1}; every column needs a name")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InvalidInput(f"catalog {str(path)!r}: the header (line {line}) repeats the column(s) "
                           f"{repeated}; every column name must be unique")
    if "id" not in header:
        raise InvalidInput(f"catalog {str(path)!r}: the header (line {line}) has no 'id' column; found "
                           f"{header[:20]}")
    return header


def _read_parquet(path: Path) -> Iterator[RawRow | BadRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInput(f"catalog {str(path)!r} is not a readable Parquet file: {e}") from e
    row = 0
    with parquet:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for data in batch.to_pylist():
                row += 1
                try:
                    yield RawRow(row, gather_attributes(data))
                except ValueError as e:
                    yield BadRow(row, str(e), _raw_id(data))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _raw_id(data: dict[str, Any]) -> str | None:
    """The id a refused record named, when it named a usable one."""
    value = data.get("id")
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per problem, naming the field and the value."""
    problems = []
    for err in error.errors():
        field = ".".join(str(part) for part in err["loc"]) or "row"
        message = err["msg"]
        if err["type"] == "value_error":  # our own validators already name the field and the value
            problems.append(message.removeprefix("Value error, "))
        elif err["type"] == "missing":
            problems.append(f"{field}: required field is missing")
        else:
            problems.append(f"{field}: {message} (got {_short(err.get('input'))})")
    return "; ".join(problems)


def validate_row(row: RawRow) -> ValidRow | BadRow:
    """Validate one parsed record into a `Product`."""
    try:
        return ValidRow(row.line, Product.model_validate(row.data))
    except ValidationError as e:
        return BadRow(row.line, describe_validation_error(e), _raw_id(row.data))


def iter_products(path: Path) -> Iterator[ValidRow | BadRow]:
    """Read and validate the catalog at ``path``; a repeated id is refused, naming its first line.

    Raises:
        NotFound, InvalidInput: as `read_catalog`.
    """
    first_seen: dict[str, int] = {}
    for item in read_catalog(path):
        checked = validate_row(item) if isinstance(item, RawRow) else item
        if isinstance(checked, ValidRow):
            product_id = checked.product.id
            if product_id in first_seen:
                yield BadRow(checked.line, f"duplicate id {product_id!r} first seen on line "
                                           f"{first_seen[product_id]}", product_id)
                continue
            first_seen[product_id] = checked.line
        yield checked
