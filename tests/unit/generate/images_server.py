"""A small OpenAI images API server on loopback that records requests and misbehaves on demand.

It speaks what the ``openai`` client speaks: ``POST /v1/images/edits`` (multipart/form-data: ``image`` file
parts, then ``prompt``, ``model``, ``n``, ``size``, ...) and ``POST /v1/images/generations`` (JSON). By default it
answers ``n`` solid-colour PNGs as ``b64_json`` (the colour is `COLOUR`); scripted replies (`Reply`) are served
first, in order: statuses, headers, raw bodies and delays.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tests.loopback import LoopbackServer, Reply, SeenRequest

COLOUR = (200, 30, 40)
SIZE = (64, 48)


@dataclass
class Seen(SeenRequest):
    """One request as the server got it: form fields (or the JSON body) and, for edits, the file parts."""

    fields: dict[str, Any]
    files: list[tuple[str, str, bytes]]  # (field name, file name, bytes)


def png_b64(colour: tuple[int, int, int] = COLOUR, size: tuple[int, int] = SIZE) -> str:
    """A solid PNG, base64."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def images_reply(n: int, colour: tuple[int, int, int] = COLOUR, size: tuple[int, int] = SIZE) -> dict[str, Any]:
    """An ImagesResponse body with ``n`` b64_json images."""
    return {"created": 0, "data": [{"b64_json": png_b64(colour, size)} for _ in range(n)]}


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, Any] = {}
    files: list[tuple[str, str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        if filename is not None:
            files.append((str(name), filename, payload))
        else:
            fields[str(name)] = payload.decode()
    return fields, files


class FakeImagesServer(LoopbackServer[Seen]):
    """The server (`tests.loopback.LoopbackServer`)."""

    def parse(self, path: str, headers: dict[str, str], raw: bytes) -> Seen:
        """Multipart form fields and files (edits), or the JSON body (generations)."""
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            fields, files = _parse_multipart(content_type, raw)
        else:
            fields, files = json.loads(raw), []
        return Seen(path, headers, fields, files)

    def default_reply(self, seen: Seen) -> Reply:
        """What the well-behaved fake API answers."""
        if seen.path not in ("/v1/images/edits", "/v1/images/generations"):
            return Reply(404, {"error": {"message": f"no route {seen.path}"}})
        return Reply(body=images_reply(int(seen.fields.get("n", 1))))
