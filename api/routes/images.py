"""Thumbnails and previews of product images (`common.thumbnails`), at the URLs search results give.

``GET /images/{key}/thumb.webp`` and ``/images/{key}/preview.jpg`` serve a file of the thumbnail folder
(settings ``images.dir``). The key is the hash of the image's content, so a URL always names the same picture:
responses may be cached for good (``Cache-Control: public, max-age=<images.max_age_s>, immutable``), carry an
``ETag``, and a request whose ``If-None-Match`` holds that ETag gets ``304 Not Modified``. The route reads
nothing but the settings and the folder: it answers while the search service is still loading, or when it
failed to load.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import FileResponse

from api.deps import SettingsDep
from api.errors import error_responses
from common.errors import NotFound
from common.thumbnails import EXTENSIONS, MEDIA_TYPES, ThumbnailStore, file_size

router = APIRouter(tags=["images"], responses=error_responses(404, 422))
FILES = [f"{size}.{extension}" for size, extension in EXTENSIONS.items()]
"""The file names of an image key (the schema lists them; `common.thumbnails.file_size` checks them)."""


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header holds ``etag`` (weak comparison, as RFC 9110 asks) or is ``*``."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == wanted for tag in tags)


@router.get(
    "/images/{key}/{file}",
    summary="A product image's thumbnail or preview",
    response_class=FileResponse,
    responses={200: {"content": {media_type: {} for media_type in MEDIA_TYPES.values()},
                     "description": "The thumbnail (WebP) or preview (JPEG)"},
               304: {"description": "Not modified: the ETag in If-None-Match is the file's"}},
)
def image(
    key: Annotated[str, Path(description="The image's hash (64 hexadecimal characters), as in a result's URL.",
                             json_schema_extra={"pattern": "^[0-9a-f]{64}$"})],
    file: Annotated[str, Path(description=f"One of {', '.join(FILES)}.", json_schema_extra={"enum": FILES})],
    settings: SettingsDep,
    if_none_match: Annotated[str | None, Header(description="ETags the client holds.")] = None,
) -> Response:
    """The file, cacheable for ``images.max_age_s`` seconds; 304 when ``If-None-Match`` names its ETag; 422 for a
    malformed key or an unknown file name; 404 when there is no such file."""
    size = file_size(file)  # InvalidInput: 422
    path = ThumbnailStore.from_settings(settings).path(key, size)
    try:
        stat = path.stat()
    except OSError as e:
        raise NotFound(f"no {size} image with key {key!r}; thumbnails and previews are made by `vitrine index`"
                       ) from e
    headers = {"Cache-Control": f"public, max-age={settings.images.max_age_s}, immutable"}
    response = FileResponse(path, media_type=MEDIA_TYPES[size], stat_result=stat, headers=headers)
    etag = response.headers["etag"]
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={**headers, "ETag": etag,
                                                  "Last-Modified": response.headers["last-modified"]})
    return response
