"""Helpers of the API tests: a store filled through the real store API, and real uvicorn servers."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI
from PIL import Image

from common.settings import Settings
from embed import Encoder
from store.factory import open_store
from store.protocol import IMAGE, STATE_KEY, TEXT, PointWrite
from tests.sample_products import SHOP_PRODUCTS

START_TIMEOUT_S = 60.0

# The shop's products plus one whose id has a slash (GET /products/bag/2); the last one has no image.
PRODUCTS = [
    *SHOP_PRODUCTS[:3],
    {
        "id": "bag/2",
        "title": "blue canvas tote",
        "category": "bags",
        "brand": "Carry",
        "price": 25.0,
        "currency": "EUR",
        "in_stock": True,
    },
    SHOP_PRODUCTS[3],
]


def product_image(index: int, size: int = 48) -> Image.Image:
    """A distinct, reproducible RGB picture for product number ``index``."""
    rng = np.random.default_rng(100 + index)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class Catalog:
    """A VITRINE_HOME holding an indexed catalog, and how it was built."""

    home: Path
    encoder_name: str


def fill_store(settings: Settings, encoder: Encoder) -> None:
    """Write `PRODUCTS` with the encoder's own text and image vectors (the last one has no image)."""
    store = open_store(settings)
    try:
        store.ensure_collection(settings.store.collection, encoder=encoder.name, dim=encoder.dim)
        texts = encoder.embed_texts([p["title"] for p in PRODUCTS])
        images = encoder.embed_images([product_image(i) for i in range(len(PRODUCTS))])
        points = []
        for i, product in enumerate(PRODUCTS):
            vectors = {TEXT: texts[i]} if i == len(PRODUCTS) - 1 else {TEXT: texts[i], IMAGE: images[i]}
            points.append(
                PointWrite(
                    product_id=str(product["id"]), payload={**product, STATE_KEY: {"h": i}}, vectors=vectors
                )
            )
        store.upsert(settings.store.collection, points)
    finally:
        store.close()


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free port; yield its base URL; stop it after."""
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def wait_ready(client: httpx.Client, *, expect: int = 200) -> dict[str, object]:
    """Poll ``/ready`` until it leaves the loading state; return its last body."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        response = client.get("/ready")
        body: dict[str, object] = response.json()
        if body["status"] != "loading" or time.monotonic() > deadline:
            assert response.status_code == expect, body
            return body
        time.sleep(0.05)
