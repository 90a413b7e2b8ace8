"""One conformance suite for every store backend: the same operations give the same results.

Runs on qdrant-edge (a temporary folder), qdrant-client ``:memory:`` and qdrant-client ``path:`` mode.
Rankings are checked against brute-force numpy cosine, so every backend agrees with it and so with the
others; `test_backends_agree` also compares them directly.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, cast

import numpy as np
import pytest
from numpy.typing import NDArray

from common.errors import BackendUnavailable, EncoderMismatch, InvalidInput, InvalidQuery, NotFound
from store.protocol import IMAGE, STATE_KEY, TEXT, Filter, Match, MatchAny, PointWrite, Range, VectorStore
from tests.unit.store.conftest import BACKENDS, Opener, make_opener, unit_vectors

DIM = 16
ENC = "tiny-encoder"
COLORS = ("red", "blue", "green")


def catalog(n: int, *, seed: int = 0) -> list[PointWrite]:
    """``n`` products with both vectors (a few with one), and every filterable field."""
    img, txt = unit_vectors(n, DIM, seed=seed), unit_vectors(n, DIM, seed=seed + 1)
    points = []
    for i in range(n):
        payload: dict[str, Any] = {
            "id": f"p{i:03d}", "title": f"product {i}", "category": ("shoes", "bags", "hats")[i % 3],
            "brand": ("acme", "zeta", "nova", "orbit")[i % 4], "price": round(5.0 + 3.5 * i, 2),
            "in_stock": i % 2 == 0, "attributes": {"color": COLORS[i % 3], "size": i % 5},
            STATE_KEY: {"hash": f"h{i}"},
        }
        vectors = {IMAGE: img[i], TEXT: txt[i]}
        if i % 10 == 7:
            del vectors[TEXT]
        points.append(PointWrite(f"p{i:03d}", payload, vectors))
    return points


def loaded(store: VectorStore, n: int = 60, name: str = "products") -> list[PointWrite]:
    """Create ``name`` and write ``catalog(n)`` into it."""
    store.ensure_collection(name, encoder=ENC, dim=DIM)
    points = catalog(n)
    store.upsert(name, points)
    return points


def brute_force(
    points: list[PointWrite], query: NDArray[np.float32], using: str, keep: Any = None
) -> list[str]:
    """Product ids ranked by cosine to ``query`` on ``using`` (numpy), filtered by ``keep(payload)``."""
    scored = [(float(np.dot(p.vectors[using], query)), p.product_id) for p in points
              if using in p.vectors and (keep is None or keep(p.payload))]
    return [pid for _, pid in sorted(scored, reverse=True)]


# -- collections -------------------------------------------------------------------------------------

def test_ensure_collection_creates_then_opens(store: VectorStore) -> None:
    info = store.ensure_collection("products", encoder=ENC, dim=DIM)
    assert (info.name, info.encoder, info.dim, info.count) == ("products", ENC, DIM, 0)
    assert info.physical.startswith("products-") and info.physical != "products"
    again = store.ensure_collection("products", encoder=ENC, dim=DIM)
    assert again.physical == info.physical
    assert store.collection_info("products") == again
    assert store.list_collections() == ["products"]


@pytest.mark.parametrize(("encoder", "dim"), [("other-encoder", DIM), (ENC, DIM * 2)])
def test_ensure_collection_refuses_another_encoder(store: VectorStore, encoder: str, dim: int) -> None:
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    with pytest.raises(EncoderMismatch) as err:
        store.ensure_collection("products", encoder=encoder, dim=dim)
    assert ENC in str(err.value) and encoder in str(err.value) and str(dim) in str(err.value)


def test_the_weights_id_is_recorded_and_other_weights_are_refused(opener: Opener) -> None:
    store = opener()
    try:
        assert store.ensure_collection("products", encoder=ENC, dim=DIM, weights="sha-aaaa").weights == "sha-aaaa"
        store.ensure_collection("products", encoder=ENC, dim=DIM, weights="sha-aaaa")
        store.ensure_collection("products", encoder=ENC, dim=DIM)  # an unknown id is not a mismatch
        with pytest.raises(EncoderMismatch, match=r"other weights of encoder .*sha-aaaa.*now sha-bbbb"):
            store.ensure_collection("products", encoder=ENC, dim=DIM, weights="sha-bbbb")
        store.ensure_collection("legacy", encoder=ENC, dim=DIM)  # made without an id: nothing to compare
        assert store.ensure_collection("legacy", encoder=ENC, dim=DIM, weights="sha-bbbb").weights == ""
    finally:
        store.close()
    if opener.persistent:
        reopened = opener()
        try:
            assert reopened.collection_info("products").weights == "sha-aaaa"
            with pytest.raises(EncoderMismatch):
                reopened.ensure_collection("products", encoder=ENC, dim=DIM, weights="sha-bbbb")
        finally:
            reopened.close()


def test_missing_collection_is_not_found(store: VectorStore) -> None:
    with pytest.raises(NotFound, match="nope"):
        store.collection_info("nope")
    with pytest.raises(NotFound):
        store.count("nope")
    with pytest.raises(NotFound):
        store.search("nope", vector=unit_vectors(1, DIM, seed=0)[0], using=IMAGE, limit=3)
    with pytest.raises(NotFound):
        store.upsert("nope", catalog(1))


def test_bad_names_and_dims_are_refused(store: VectorStore) -> None:
    for bad in ("", "../x", "a/b", "-x", "x y"):
        with pytest.raises(InvalidInput, match="collection name"):
            store.ensure_collection(bad, encoder=ENC, dim=DIM)
    with pytest.raises(InvalidInput, match="dim"):
        store.ensure_collection("products", encoder=ENC, dim=0)
    assert store.list_collections() == []


def test_list_and_drop_collections(store: VectorStore) -> None:
    loaded(store, 5, "products")
    loaded(store, 3, "archive")
    assert store.list_collections() == ["archive", "products"]
    store.drop_collection("products")
    store.drop_collection("products")  # absent: no error
    assert store.list_collections() == ["archive"]
    assert store.count("archive") == 3
    assert store.ensure_collection("products", encoder="new-encoder", dim=8).count == 0


# -- versions (a rebuild written aside, then swapped in) ---------------------------------------------

def test_a_new_version_is_written_aside_then_switched_in(store: VectorStore) -> None:
    loaded(store, 5, "products")
    old = store.collection_info("products").physical
    new = store.create_version("products", encoder=ENC, dim=DIM)
    assert new.startswith("products-") and new != old
    assert store.list_versions("products") == [old, new]
    assert store.list_collections() == ["products"]
    # the version is written and read by its own name while the alias still serves the old one
    store.upsert(new, catalog(8, seed=5))
    assert (store.count(new), store.count("products")) == (8, 5)
    info = store.ensure_collection(new, encoder=ENC, dim=DIM)
    assert (info.physical, info.count) == (new, 8)
    assert store.search(new, vector=unit_vectors(1, DIM, seed=9)[0], using=IMAGE, limit=3)
    with pytest.raises(InvalidInput, match="in use by collection 'products'"):
        store.drop_version(old)
    assert store.switch_alias("products", new) == old
    assert store.collection_info("products").physical == new
    assert store.count("products") == 8
    store.drop_version(old)
    store.drop_version(old)  # absent: no error
    assert store.list_versions("products") == [new]
    assert store.list_collections() == ["products"]


def test_switching_to_a_version_of_another_alias_is_refused(store: VectorStore) -> None:
    loaded(store, 3, "products")
    loaded(store, 2, "archive")
    other = store.collection_info("archive").physical
    before = store.collection_info("products").physical
    for bad in (other, "products-19990101000000000000", "nope"):
        with pytest.raises(NotFound, match="no version"):
            store.switch_alias("products", bad)
    assert store.collection_info("products").physical == before
    assert store.list_versions("nope") == []


def test_an_alias_can_be_pointed_at_its_first_version(store: VectorStore) -> None:
    new = store.create_version("fresh", encoder=ENC, dim=DIM)
    assert store.list_collections() == []
    with pytest.raises(NotFound):
        store.collection_info("fresh")
    store.upsert(new, catalog(4))
    assert store.switch_alias("fresh", new) is None
    assert store.list_collections() == ["fresh"]
    assert store.count("fresh") == 4


def test_reopen_after_close_keeps_everything(opener: Opener) -> None:
    if not opener.persistent:
        pytest.skip(":memory: keeps nothing after close")
    first = opener()
    points = loaded(first)
    physical = first.collection_info("products").physical
    first.close()
    second = opener()
    try:
        info = second.collection_info("products")
        assert (info.physical, info.encoder, info.dim, info.count) == (physical, ENC, DIM, len(points))
        got = second.retrieve("products", ["p007", "p001"], with_vectors=True)
        assert [p.product_id for p in got] == ["p007", "p001"]
        assert set(got[0].vectors) == {IMAGE}
        np.testing.assert_allclose(got[1].vectors[TEXT], points[1].vectors[TEXT], atol=1e-6)
    finally:
        second.close()


def test_closed_store_refuses_calls(opener: Opener) -> None:
    s = opener()
    loaded(s, 3)
    s.close()
    with pytest.raises(BackendUnavailable):
        s.count("products")


# -- writes ------------------------------------------------------------------------------------------

def test_upsert_twice_is_one_point(store: VectorStore) -> None:
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    v = unit_vectors(2, DIM, seed=5)
    store.upsert("products", [PointWrite("a", {"title": "old"}, {IMAGE: v[0], TEXT: v[0]})])
    store.upsert("products", [PointWrite("a", {"title": "new"}, {IMAGE: v[1]})])
    assert store.count("products") == 1
    (got,) = store.retrieve("products", ["a"], with_vectors=True)
    assert got.product_id == "a" and got.payload == {"id": "a", "title": "new"}
    assert set(got.vectors) == {IMAGE}  # the overwrite removed the text vector
    assert got.vectors[IMAGE].dtype == np.float32
    np.testing.assert_allclose(got.vectors[IMAGE], v[1], atol=1e-6)


def test_points_with_one_vector(store: VectorStore) -> None:
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    v = unit_vectors(2, DIM, seed=6)
    store.upsert("products", [PointWrite("img", {}, {IMAGE: v[0]}), PointWrite("txt", {}, {TEXT: v[1]}),
                              PointWrite("none", {})])
    assert store.count("products") == 3
    assert [p.product_id for p in store.search("products", vector=v[0], using=IMAGE, limit=5)] == ["img"]
    assert [p.product_id for p in store.search("products", vector=v[0], using=TEXT, limit=5)] == ["txt"]
    got = {p.product_id: set(p.vectors) for p in store.retrieve("products", ["img", "txt", "none"],
                                                                with_vectors=True)}
    assert got == {"img": {IMAGE}, "txt": {TEXT}, "none": set()}


def test_set_payload_keeps_vectors(store: VectorStore) -> None:
    points = loaded(store, 10)
    new: dict[str, dict[str, Any]] = {"p002": {"title": "renamed", STATE_KEY: {"hash": "x"}},
                                      "p003": {"id": "p003", "price": 1.0}}
    store.set_payload("products", new)
    got = store.retrieve("products", ["p002", "p003"], with_vectors=True)
    assert [p.payload for p in got] == [{"id": "p002", "title": "renamed", STATE_KEY: {"hash": "x"}},
                                        {"id": "p003", "price": 1.0}]
    np.testing.assert_allclose(got[0].vectors[IMAGE], points[2].vectors[IMAGE], atol=1e-6)
    assert set(got[1].vectors) == {IMAGE, TEXT}


def test_set_payload_of_missing_products_writes_nothing(store: VectorStore) -> None:
    loaded(store, 3)
    with pytest.raises(NotFound, match="ghost"):
        store.set_payload("products", {"p000": {"title": "changed"}, "ghost": {"title": "x"}})
    assert store.retrieve("products", ["p000"])[0].payload["title"] == "product 0"
    with pytest.raises(InvalidInput, match="differs"):
        store.set_payload("products", {"p000": {"id": "p001"}})


def test_update_payload_sets_keys_and_keeps_the_rest(store: VectorStore) -> None:
    points = loaded(store, 10)
    store.update_payload("products", {
        "p002": {"title": "renamed", "similar": {"ids": ["p003"], "scores": [0.5]}},
        "p003": {"id": "p003", "extra": [1, 2]},
        "p004": {},
    })
    got = {p.product_id: p for p in store.retrieve("products", ["p002", "p003", "p004"], with_vectors=True)}
    assert got["p002"].payload == {**points[2].payload, "title": "renamed",
                                   "similar": {"ids": ["p003"], "scores": [0.5]}}
    assert got["p003"].payload == {**points[3].payload, "extra": [1, 2]}
    assert got["p004"].payload == points[4].payload
    np.testing.assert_allclose(got["p002"].vectors[IMAGE], points[2].vectors[IMAGE], atol=1e-6)
    assert set(got["p003"].vectors) == {IMAGE, TEXT}
    store.update_payload("products", {"p002": {"similar": {"ids": []}}})  # a whole key is replaced, not merged
    assert store.retrieve("products", ["p002"])[0].payload["similar"] == {"ids": []}
    store.update_payload("products", {})


def test_update_payload_of_missing_products_writes_nothing(store: VectorStore) -> None:
    loaded(store, 3)
    ghosts = {f"ghost{i:02d}": {"title": "x"} for i in range(12)}
    with pytest.raises(NotFound, match=r"ghost00.*and 2 more") as err:
        store.update_payload("products", {"p000": {"title": "changed"}, **ghosts})
    assert "p000" not in str(err.value)
    assert store.retrieve("products", ["p000"])[0].payload["title"] == "product 0"
    for bad, match in [({"p000": {"id": "p001"}}, "differs"), ({"": {"a": 1}}, "product id"),
                       ({"p000": ["title"]}, "not a dict")]:
        with pytest.raises(InvalidInput, match=match):
            store.update_payload("products", bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.update_payload("absent", {"p000": {"a": 1}})


def test_delete_ignores_absent_ids(store: VectorStore) -> None:
    loaded(store, 10)
    store.delete("products", ["p001", "p005", "absent"])
    store.delete("products", [])
    assert store.count("products") == 8
    assert store.retrieve("products", ["p001", "p002"]) != [] and store.retrieve("products", ["p001"]) == []


def test_bad_points_write_nothing(store: VectorStore) -> None:
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    good = catalog(2)
    bad_cases: list[tuple[PointWrite, str]] = [
        (PointWrite("x", {}, {IMAGE: np.ones(DIM + 1, np.float32)}), "shape"),
        (PointWrite("x", {}, {"sparse": np.ones(DIM, np.float32)}), "vector name"),
        (PointWrite("x", {}, {IMAGE: np.full(DIM, np.nan, np.float32)}), "NaN"),
        (PointWrite("x", {}, {IMAGE: np.zeros(DIM, np.float32)}), "zeros"),
        (PointWrite("", {}, {}), "product id"),
        (PointWrite("x", {"id": "y"}, {}), "differs"),
    ]
    for bad, message in bad_cases:
        with pytest.raises(InvalidInput, match=message):
            store.upsert("products", [*good, bad])
    assert store.count("products") == 0


def test_inputs_are_not_changed(store: VectorStore) -> None:
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    vector = np.arange(1, DIM + 1, dtype=np.float32)
    payload: dict[str, Any] = {"title": "t"}
    store.upsert("products", [PointWrite("a", payload, {IMAGE: vector})])
    assert payload == {"title": "t"}
    np.testing.assert_array_equal(vector, np.arange(1, DIM + 1, dtype=np.float32))


# -- reads -------------------------------------------------------------------------------------------

def test_retrieve_keeps_order_and_skips_absent(store: VectorStore) -> None:
    points = loaded(store, 20)
    got = store.retrieve("products", ["p012", "absent", "p003", "p012"])
    assert [p.product_id for p in got] == ["p012", "p003", "p012"]
    assert got[1].payload == points[3].payload  # STATE_KEY included
    assert got[1].vectors == {} and got[1].score is None
    assert store.retrieve("products", []) == []


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("using", [IMAGE, TEXT])
def test_search_ranks_like_brute_force(store: VectorStore, exact: bool, using: str) -> None:
    points = loaded(store, 60)
    for query in unit_vectors(5, DIM, seed=42):
        hits = store.search("products", vector=query, using=using, limit=10, exact=exact)
        assert [h.product_id for h in hits] == brute_force(points, query, using)[:10]
        by_id = {p.product_id: p for p in points}
        for h in hits:
            cosine = float(np.dot(by_id[h.product_id].vectors[using], query))
            assert h.score == pytest.approx(cosine, abs=1e-5)
            assert h.payload == by_id[h.product_id].payload and h.vectors == {}


def test_score_is_exact_cosine_of_listed_products(store: VectorStore) -> None:
    points = loaded(store, 30)
    query = unit_vectors(1, DIM, seed=8)[0]
    score = cast(Any, store).score  # a proposed addition to the VectorStore protocol
    asked = ["p007", "p001", "absent", "p017", "p001"]
    got = score("products", vector=query, using=TEXT, product_ids=asked)
    assert set(got) == {"p001"}  # p007 and p017 have no text vector
    got = score("products", vector=query, using=IMAGE, product_ids=asked)
    assert set(got) == {"p007", "p001", "p017"}
    for pid, value in got.items():
        assert value == pytest.approx(float(np.dot(points[int(pid[1:])].vectors[IMAGE], query)), abs=1e-5)
    assert score("products", vector=query, using=IMAGE, product_ids=[]) == {}


def test_search_returns_vectors(store: VectorStore) -> None:
    points = loaded(store, 20)
    hits = store.search("products", vector=points[7].vectors[IMAGE], using=IMAGE, limit=3, with_vectors=True)
    assert hits[0].product_id == "p007" and set(hits[0].vectors) == {IMAGE}
    assert set(hits[1].vectors) == {IMAGE, TEXT}
    assert all(v.dtype == np.float32 and v.shape == (DIM,) for h in hits for v in h.vectors.values())


def test_bad_queries_are_refused(store: VectorStore) -> None:
    loaded(store, 3)
    q = unit_vectors(1, DIM, seed=0)[0]
    with pytest.raises(InvalidQuery, match="shape"):
        store.search("products", vector=np.ones(DIM + 1, np.float32), using=IMAGE, limit=3)
    with pytest.raises(InvalidQuery, match="'audio'"):
        store.search("products", vector=q, using="audio", limit=3)
    with pytest.raises(InvalidQuery, match="limit"):
        store.search("products", vector=q, using=IMAGE, limit=0)
    with pytest.raises(InvalidQuery, match="neither"):
        store.count("products", Filter(must=(Range("price"),)))
    with pytest.raises(InvalidQuery, match="no values"):
        store.count("products", Filter(must=(MatchAny("brand", ()),)))


FILTERS: list[tuple[Filter, Any]] = [
    (Filter(must=(Match("category", "shoes"),)), lambda p: p["category"] == "shoes"),
    (Filter(must=(Match("attributes.color", "red"),)), lambda p: p["attributes"]["color"] == "red"),
    (Filter(must=(Match("attributes.size", 3),)), lambda p: p["attributes"]["size"] == 3),
    (Filter(must=(Match("in_stock", True),)), lambda p: p["in_stock"]),
    (Filter(must=(Match("price", 12.0),)), lambda p: p["price"] == 12.0),
    (Filter(must=(MatchAny("brand", ("acme", "nova")),)), lambda p: p["brand"] in ("acme", "nova")),
    (Filter(must=(Range("price", gte=20.0, lte=100.0),)), lambda p: 20.0 <= p["price"] <= 100.0),
    (Filter(must=(Range("price", lte=40.0),)), lambda p: p["price"] <= 40.0),
    (Filter(must_not=(Match("category", "bags"),)), lambda p: p["category"] != "bags"),
    (Filter(must=(Match("category", "hats"), Range("price", gte=50.0)), must_not=(Match("in_stock", False),)),
     lambda p: p["category"] == "hats" and p["price"] >= 50.0 and p["in_stock"]),
    (Filter(), lambda p: True),
]


@pytest.mark.parametrize(("flt", "keep"), FILTERS, ids=[str(i) for i in range(len(FILTERS))])
def test_filters_in_count_and_search(store: VectorStore, flt: Filter, keep: Any) -> None:
    points = loaded(store, 60)
    expected = [p.product_id for p in points if keep(p.payload)]
    assert len(expected) > 0
    assert store.count("products", flt) == len(expected)
    query = unit_vectors(1, DIM, seed=9)[0]
    for exact in (True, False):
        hits = store.search("products", vector=query, using=IMAGE, limit=7, filter=flt, exact=exact)
        assert [h.product_id for h in hits] == brute_force(points, query, IMAGE, keep)[:7]


def test_scroll_everything_with_fields(store: VectorStore) -> None:
    loaded(store, 50)
    rows = list(store.scroll("products", fields=["category", "attributes"], batch=7))
    assert sorted(r.product_id for r in rows) == [f"p{i:03d}" for i in range(50)]
    assert all(set(r.payload) == {"id", "category", "attributes"} and r.vectors == {} for r in rows)
    full = list(store.scroll("products"))
    assert len(full) == 50 and STATE_KEY in full[0].payload
    assert list(store.scroll("products", fields=[])) != [] and all(
        set(r.payload) == {"id"} for r in store.scroll("products", fields=[]))


def test_scroll_with_vectors(store: VectorStore) -> None:
    points = {p.product_id: p for p in loaded(store, 30)}
    rows = list(store.scroll("products", fields=[], batch=8, with_vectors=True))
    assert sorted(r.product_id for r in rows) == sorted(points)
    for row in rows:
        assert set(row.vectors) == set(points[row.product_id].vectors)
        for name, vector in row.vectors.items():
            assert vector.dtype == np.float32 and vector.shape == (DIM,)
            np.testing.assert_allclose(vector, points[row.product_id].vectors[name], atol=1e-6)
    images = list(store.scroll("products", fields=["title"], with_vectors=[IMAGE]))
    assert all(set(r.vectors) == {IMAGE} and set(r.payload) == {"id", "title"} for r in images)
    texts = {r.product_id: r.vectors for r in store.scroll("products", with_vectors=[TEXT])}
    assert texts["p007"] == {} and set(texts["p008"]) == {TEXT}  # p007 has no text vector
    assert all(r.vectors == {} for r in store.scroll("products", with_vectors=[]))
    for bad in (["sparse"], "image"):
        with pytest.raises(InvalidInput, match="vector name"):
            list(store.scroll("products", with_vectors=bad))


def test_optimize_keeps_results(store: VectorStore) -> None:
    points = loaded(store, 40)
    query = unit_vectors(1, DIM, seed=3)[0]
    store.optimize("products")
    assert store.count("products") == 40
    assert [h.product_id for h in store.search("products", vector=query, using=TEXT, limit=5)] == \
        brute_force(points, query, TEXT)[:5]


def test_threads_share_a_store(store: VectorStore) -> None:
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    points = catalog(200)
    errors: list[BaseException] = []

    def writer(part: list[PointWrite]) -> None:
        try:
            for i in range(0, len(part), 10):
                store.upsert("products", part[i:i + 10])
        except BaseException as e:
            errors.append(e)

    def reader() -> None:
        try:
            for q in unit_vectors(30, DIM, seed=11):
                store.search("products", vector=q, using=IMAGE, limit=5, with_vectors=True)
                store.count("products", Filter(must=(Match("category", "shoes"),)))
                store.retrieve("products", ["p001", "p150"])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(points[k::4],)) for k in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count("products") == 200
    got = store.retrieve("products", [p.product_id for p in points], with_vectors=True)
    assert [g.product_id for g in got] == [p.product_id for p in points]
    for g, p in zip(got, points, strict=True):
        np.testing.assert_allclose(g.vectors[IMAGE], p.vectors[IMAGE], atol=1e-6)


def tagged(n: int) -> list[PointWrite]:
    """``catalog(n)`` with zero-shot tags in the payload (`indexer.tagging`'s layout); every 5th has none."""
    points = catalog(n)
    for i, p in enumerate(points):
        if i % 5 != 4:
            p.payload["tags"] = {"colour": COLORS[i % 3], "type": "shoe"}
            p.payload["tag_confidence"] = {"colour": round(0.3 + 0.01 * i, 4), "type": 0.9}
    return points


def test_payload_indexes_on_tag_fields_filter(opener: Opener) -> None:
    store = opener()
    try:
        store.ensure_collection("products", encoder=ENC, dim=DIM)
        points = tagged(40)
        store.upsert("products", points)
        for field, kind in (("tags.colour", "keyword"), ("tag_confidence.colour", "float"),
                            ("tags.type", "keyword")):
            store.ensure_payload_index("products", field, kind)
            store.ensure_payload_index("products", field, kind)  # idempotent
        red = Filter(must=(Match("tags.colour", "red"),))
        sure = Filter(must=(Range("tag_confidence.colour", gte=0.5),))
        want_red = {p.product_id for p in points if p.payload.get("tags", {}).get("colour") == "red"}
        want_sure = {p.product_id for p in points if p.payload.get("tag_confidence", {}).get("colour", 0) >= 0.5}
        assert store.count("products", red) == len(want_red) > 0
        assert store.count("products", sure) == len(want_sure) > 0
        query = unit_vectors(1, DIM, seed=5)[0]
        hits = store.search("products", vector=query, using=IMAGE, limit=40, filter=red)
        assert {h.product_id for h in hits} == want_red
        assert [h.product_id for h in hits] == brute_force(points, query, IMAGE, lambda pl: pl.get("tags", {})
                                                           .get("colour") == "red")
        no_tags = Filter(must_not=(MatchAny("tags.type", ("shoe",)),))
        assert store.count("products", no_tags) == sum(1 for p in points if "tags" not in p.payload)
        store.ensure_payload_index("products", "tags.type", "integer")  # another kind replaces it: no error
    finally:
        store.close()
    if opener.persistent:  # the index survives reopening, and ensuring it again is still a no-op
        again = opener()
        try:
            again.ensure_payload_index("products", "tags.colour", "keyword")
            assert again.count("products", Filter(must=(Match("tags.colour", "red"),))) == len(want_red)
        finally:
            again.close()


@pytest.mark.parametrize(("field", "kind", "expected"), [
    ("tags.colour", "text", "kind 'text'"),
    ("tags.colour", "Keyword", "kind 'Keyword'"),
    ("", "keyword", "field ''"),
    ("tags..colour", "keyword", "'tags..colour'"),
    ("tags colour", "keyword", "'tags colour'"),
    ("tags.colour[]", "keyword", "'tags.colour[]'"),
])
def test_bad_payload_indexes_are_refused(store: VectorStore, field: str, kind: str, expected: str) -> None:
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    with pytest.raises(InvalidInput, match=re.escape(expected)):
        store.ensure_payload_index("products", field, kind)


def test_payload_index_of_a_missing_collection(store: VectorStore) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        store.ensure_payload_index("nope", "tags.colour", "keyword")


def test_backends_agree(tmp_path: Any) -> None:
    openers = [make_opener(kind, tmp_path / kind) for kind in BACKENDS]
    stores = [o() for o in openers]
    flt = Filter(must=(Match("category", "shoes"),), must_not=(Range("price", lte=2.0),))
    queries = unit_vectors(4, DIM, seed=77)
    try:
        results, scores = [], []
        for s in stores:
            loaded(s, 60)
            s.delete("products", ["p004"])
            s.set_payload("products", {"p005": {"category": "shoes", "price": 1.0}})
            hits = [s.search("products", vector=q, using=u, limit=8, filter=f, exact=e)
                    for q in queries for u in (IMAGE, TEXT) for f in (None, flt) for e in (True, False)]
            results.append((
                [[h.product_id for h in found] for found in hits],
                s.count("products"), s.count("products", flt),
                # JSON with sorted keys: gRPC carries nested objects as protobuf maps, which keep no key order
                sorted((r.product_id, json.dumps(r.payload, sort_keys=True)) for r in s.scroll("products")),
            ))
            scores.append(np.array([h.score for found in hits for h in found], dtype=np.float64))
        assert all(r == results[0] for r in results[1:])
        for other in scores[1:]:
            np.testing.assert_allclose(scores[0], other, atol=1e-5)
    finally:
        for s in stores:
            s.close()
        for o in openers:
            o.stop()
