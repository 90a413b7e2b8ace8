"""Encode a query (text, image or both) into one unit vector of the encoder's shared space."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from common.errors import InvalidQuery
from embed.protocol import Encoder

_EPS = 1e-6


def normalised_mean(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """The unit vector along the mean of ``vectors`` (shape (n, dim)).

    For unit inputs this is the point on the sphere halfway (in angle) between them, so a text and an image
    query pull equally, whatever their norms were before normalisation.

    Raises:
        InvalidQuery: the vectors cancel out (their mean is zero).
    """
    mean = np.asarray(vectors, dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < _EPS:
        raise InvalidQuery("the text and the image of the query point in opposite directions and cancel out; "
                           "search with one of them")
    unit: NDArray[np.float32] = (mean / norm).astype(np.float32)
    return unit


def encode_query(encoder: Encoder, *, text: str | None, image: Image.Image | None) -> NDArray[np.float32]:
    """One unit query vector of shape (dim,).

    Text goes through ``encoder.embed_texts``, an image through ``encoder.embed_images``. When both are given
    the query is their normalised mean (`normalised_mean`): "this photo, described as ...". That vector is
    then searched against both indices like any other query.

    Raises:
        InvalidQuery: neither text nor image, or the two cancel out.
    """
    parts: list[NDArray[np.float32]] = []
    if text:
        parts.append(encoder.embed_texts([text])[0])
    if image is not None:
        parts.append(encoder.embed_images([image])[0])
    if not parts:
        raise InvalidQuery("nothing to search for: give a query text or an image (or both)")
    if len(parts) == 1:
        return normalised_mean(parts[0][None, :])
    return normalised_mean(np.stack(parts))
