"""Catalog readers (JSON Lines, CSV, Parquet) and row validation, on files written here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import InvalidInput, NotFound
from indexer.readers import BadRow, RawRow, ValidRow, iter_products, read_catalog, validate_row


def rows(path: Path) -> list[RawRow | BadRow]:
    return list(read_catalog(path))


def test_jsonl_rows_keep_physical_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "price": 1}\n\n   \n{"id": "b"}\n', encoding="utf-8")
    assert rows(path) == [RawRow(1, {"id": "a", "price": 1}), RawRow(4, {"id": "b"})]


def test_jsonl_bad_lines_are_reported_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "c.ndjson"
    path.write_bytes(b'{"id": "a"}\n{"id": \n[1, 2]\n{"id": "n", "price": NaN}\n'
                     b'{"id": "\xff"}\n{"id": "z"}\n')
    out = rows(path)
    assert out[0] == RawRow(1, {"id": "a"})
    assert isinstance(out[1], BadRow) and out[1].line == 2
    assert out[1].reason.startswith("invalid JSON: Expecting")
    assert out[2] == BadRow(3, "expected a JSON object per line, got list [1, 2]")
    assert out[3] == BadRow(4, "invalid JSON: NaN is not a valid JSON number")
    assert isinstance(out[4], BadRow) and out[4].line == 5 and "not valid UTF-8" in out[4].reason
    assert out[5] == RawRow(6, {"id": "z"})


def test_jsonl_gzip_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress('\ufeff{"id": "a"}\n{"id": "b"}\n'.encode()))
    assert rows(path) == [RawRow(1, {"id": "a"}), RawRow(2, {"id": "b"})]


def test_csv_conventions(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "\ufeffid,title,images,price,in_stock,attributes.color,attributes.size\n"
        "a,Red shirt,front.jpg|back.jpg,19.99,yes,red,\n"
        'b,"A ""quoted"" title, with comma",,,,,M\n',
        encoding="utf-8",
    )
    out = rows(path)
    assert out == [
        RawRow(2, {"id": "a", "title": "Red shirt", "images": "front.jpg|back.jpg", "price": "19.99",
                   "in_stock": "yes", "attributes": {"color": "red"}}),
        RawRow(3, {"id": "b", "title": 'A "quoted" title, with comma', "images": "", "price": "",
                   "in_stock": "", "attributes": {"size": "M"}}),
    ]
    products = [item.product for item in iter_products(path) if isinstance(item, ValidRow)]
    assert products[0].images == ["front.jpg", "back.jpg"] and products[0].price == 19.99
    assert products[0].in_stock is True and products[0].attributes == {"color": "red"}
    assert products[1].price is None and products[1].images is None


def test_csv_multiline_record_reports_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,description\na,"line one\nline two\nline three"\n\nb,short\nc,x,extra\nd\n',
                    encoding="utf-8")
    out = rows(path)
    assert out[0] == RawRow(2, {"id": "a", "description": "line one\nline two\nline three"})
    assert out[1] == RawRow(6, {"id": "b", "description": "short"})
    assert out[2] == BadRow(7, "record has 3 fields but the header has 2 columns")
    assert out[3] == BadRow(8, "record has 1 fields but the header has 2 columns")


def test_csv_attributes_json_cell(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,attributes,attributes.size\na,"{""color"": ""red""}",M\nb,red,\n', encoding="utf-8")
    out = rows(path)
    assert out[0] == RawRow(2, {"id": "a", "attributes": {"color": "red", "size": "M"}})
    assert isinstance(out[1], BadRow) and out[1].line == 3 and out[1].product_id == "b"
    assert "attributes 'red' is not a JSON object" in out[1].reason


def test_tsv_gzip_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv.gz"
    path.write_bytes(gzip.compress(b"id\ttitle\na\tcaf\xc3\xa9\nb\tbad \xff byte\nc\tok\n"))
    out = rows(path)
    assert out == [RawRow(2, {"id": "a", "title": "café"}), BadRow(3, "record is not valid UTF-8 text"),
                   RawRow(4, {"id": "c", "title": "ok"})]


@pytest.mark.parametrize(("header", "message"), [
    ("title,price", "has no 'id' column"),
    ("id,title,title", r"repeats the column\(s\) \['title'\]"),
    ("id,,price", "empty column name at position 2"),
])
def test_csv_bad_header_is_fatal(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "c.csv"
    path.write_text(header + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=message):
        rows(path)


def test_empty_csv_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("", encoding="utf-8")
    assert rows(path) == []


def test_parquet_rows_numbered_across_batches(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    n = 5000
    table = pa.table({
        "id": [f"p{i}" for i in range(n)],
        "price": [float(i) for i in range(n)],
        "images": [[f"{i}.jpg", f"{i}b.jpg"] for i in range(n)],
        "attributes": [{"color": "red"} for _ in range(n)],
        "attributes.size": ["M"] * n,
    })
    pq.write_table(table, path, row_group_size=1000)
    out = rows(path)
    assert len(out) == n
    assert out[0] == RawRow(1, {"id": "p0", "price": 0.0, "images": ["0.jpg", "0b.jpg"],
                                "attributes": {"color": "red", "size": "M"}})
    assert out[-1].line == n and isinstance(out[-1], RawRow) and out[-1].data["id"] == f"p{n - 1}"


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInput, match="is not a readable Parquet file"):
        rows(path)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"c\.json' has an unsupported file type; expected JSON Lines"):
        read_catalog(path)
    with pytest.raises(NotFound, match="does not exist"):
        read_catalog(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(("data", "reason", "product_id"), [
    ({"id": "a", "price": "abc"}, "price 'abc' is not a number", "a"),
    ({"id": "a", "currency": "euro"}, "currency: String should have at most 3 characters (got 'EURO')", "a"),
    ({"title": "no id"}, "id is required: expected a non-empty string or integer", None),
    ({"id": "  "}, "id is required: expected a non-empty string or integer", None),
    ({"id": 7, "in_stock": "maybe"},
     "in_stock 'maybe' is not a boolean; expected true/false, yes/no or 1/0", "7"),
    ({"id": "a", "images": [1]}, "images.0: Input should be a valid string (got 1)", "a"),
    ({"id": "a", "_vitrine": {}},
     "field '_vitrine' is reserved for Vitrine's own bookkeeping; rename it", "a"),
])
def test_validation_messages_name_field_and_value(data: dict[str, object], reason: str,
                                                  product_id: str | None) -> None:
    assert validate_row(RawRow(9, data)) == BadRow(9, reason, product_id)


def test_several_problems_in_one_row() -> None:
    out = validate_row(RawRow(1, {"id": "a", "price": -2, "in_stock": "perhaps"}))
    assert isinstance(out, BadRow)
    assert out.reason == ("price: Input should be greater than or equal to 0 (got -2); "
                          "in_stock 'perhaps' is not a boolean; expected true/false, yes/no or 1/0")


def test_duplicate_ids_are_refused_naming_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    lines = [{"id": "a", "title": "first"}, {"id": "b"}, {"id": "a", "title": "second"}, {"id": "a"}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    out = list(iter_products(path))
    assert isinstance(out[0], ValidRow) and out[0].product.title == "first"
    assert out[2] == BadRow(3, "duplicate id 'a' first seen on line 1", "a")
    assert out[3] == BadRow(4, "duplicate id 'a' first seen on line 1", "a")
