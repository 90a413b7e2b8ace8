"""The shared pieces of the store backends: collection records, names, and validation messages."""

from __future__ import annotations

import re

import numpy as np
import pytest

from common.errors import EncoderMismatch, InvalidInput
from store._common import CollectionRecord, check_encoder, check_points, new_record, physical_name
from store.protocol import IMAGE, PointWrite


def test_physical_names_are_alias_and_timestamp() -> None:
    assert re.fullmatch(r"products-\d{20}", physical_name("products"))
    assert physical_name("a-b").startswith("a-b-2")


def test_record_round_trip_and_newer_formats() -> None:
    record = new_record("products", encoder="enc", dim=8)
    assert CollectionRecord.from_dict(record.as_dict(), where="x") == record
    with pytest.raises(ValueError, match="newer Vitrine"):
        CollectionRecord.from_dict({**record.as_dict(), "format": 2}, where="x")
    with pytest.raises(ValueError, match="lacks"):
        CollectionRecord.from_dict({"format": 1, "alias": "a"}, where="x")


def test_encoder_mismatch_names_both_encoders_and_the_way_out() -> None:
    record = new_record("products", encoder="open_clip:ViT-B-32/laion2b", dim=512)
    check_encoder("products", record, encoder="open_clip:ViT-B-32/laion2b", dim=512)
    with pytest.raises(EncoderMismatch) as err:
        check_encoder("products", record, encoder="demo", dim=384)
    message = str(err.value)
    assert "open_clip:ViT-B-32/laion2b" in message and "'demo'" in message and "512" in message
    assert "--model" in message


def test_check_points_copies_and_names_the_bad_product() -> None:
    payload = {"title": "t"}
    (checked,) = check_points([PointWrite("a", payload, {IMAGE: np.array([1, 2], np.float32)})], dim=2)
    assert checked.payload == {"id": "a", "title": "t"} and payload == {"title": "t"}
    assert checked.vectors[IMAGE].dtype == np.float32
    with pytest.raises(InvalidInput, match=r"'b'.*shape \(3,\); expected \(2,\)"):
        check_points([PointWrite("b", {}, {IMAGE: np.ones(3, np.float32)})], dim=2)
