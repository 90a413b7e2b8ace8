"""Uploaded query images: bounded reads and safe decoding, plus an early refusal of oversized bodies."""

from __future__ import annotations

import logging
from typing import BinaryIO

from PIL import Image
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from common.errors import ImageTooLarge
from common.images import decode_image

logger = logging.getLogger(__name__)

FORM_OVERHEAD_BYTES = 1_114_112
"""Room for the multipart framing and the optional text field (Starlette caps a form field at 1 MiB)."""


def read_image_upload(
    stream: BinaryIO,
    *,
    filename: str | None,
    max_bytes: int,
    max_pixels: int,
    draft_size: int | None = None,
) -> Image.Image:
    """Read at most ``max_bytes + 1`` bytes of an upload and decode them.

    Args:
        stream: the uploaded file.
        filename: its name as the client gave it (for messages only).
        max_bytes: largest upload accepted (setting api.max_upload_bytes).
        max_pixels: largest image accepted, width x height.
        draft_size: let JPEGs decode at a reduced scale no smaller than this.

    Raises:
        ImageTooLarge: over ``max_bytes`` bytes or ``max_pixels`` pixels.
        UnsupportedImage: not an image, or a truncated or corrupt one.
    """
    data = read_upload(stream, filename=filename, max_bytes=max_bytes)
    return decode_image(data, max_pixels=max_pixels, source=upload_name(filename), draft_size=draft_size)


def upload_name(filename: str | None) -> str:
    """How messages name an upload."""
    return f"upload {filename or 'file'!r}"


def read_upload(stream: BinaryIO, *, filename: str | None, max_bytes: int) -> bytes:
    """The bytes of an upload, reading at most ``max_bytes + 1`` of them.

    Raises:
        ImageTooLarge: over ``max_bytes`` bytes.
    """
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{upload_name(filename)} is over the limit of {max_bytes} bytes (setting "
                            "api.max_upload_bytes)")
    return data


class UploadLimitMiddleware:
    """Answer 413 before reading the body when a declared Content-Length is over the upload limit.

    Without this, the multipart parser would spool the whole body to disk before the route could refuse it.
    Bodies without a Content-Length (chunked) are still bounded by the route's read of ``max_bytes + 1``.

    Args:
        app: the wrapped ASGI app.
        max_upload_bytes: the upload limit; bodies over it plus `FORM_OVERHEAD_BYTES` are refused.
        paths: the upload routes.
    """

    def __init__(self, app: ASGIApp, *, max_upload_bytes: int, paths: tuple[str, ...]) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_upload_bytes + FORM_OVERHEAD_BYTES
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                logger.info("refused an upload of %s bytes to %s", declared.decode(), scope["path"])
                response = error_response(
                    413, ImageTooLarge.__name__,
                    f"upload of {int(declared)} bytes is over the limit of {self.max_upload_bytes} bytes "
                    "(setting api.max_upload_bytes)",
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
