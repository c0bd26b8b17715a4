"""A page of a GCS object listing, decoded leanly: the fields a listing is asked for, typed.

A claim pass lists its queues a few times a second and the console lists whole prefixes: the
page's JSON was most of their CPU. msgspec decodes straight into the fields ``ObjectInfo``
holds and skips the rest of each resource (the emulator ignores ``fields=`` and sends all of
it), at a fraction of ``json.loads`` plus a dict walk (docs/architecture.md, "How claimers find
work without reading records"). A page whose shape it refuses (a ``null`` where a value
belongs, a time that is not RFC 3339) is left to the caller's tolerant decoder.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from .storeapi import ObjectInfo


class _Item(msgspec.Struct):
    name: str
    # The JSON API sends int64 values as strings; the decoder is not strict, so it takes both.
    generation: int = 0
    size: int = 0
    updated: datetime | None = None
    metadata: dict[str, str] = {}


class _Page(msgspec.Struct):
    items: list[_Item] = []
    nextPageToken: str | None = None


_DECODER = msgspec.json.Decoder(_Page, strict=False)


def decode_page(body: bytes) -> tuple[list[ObjectInfo], str | None] | None:
    """The objects of one listing page and the next page's token; None when the page is not
    of the shape GCS documents (the caller decodes it tolerantly)."""
    try:
        page = _DECODER.decode(body or b"{}")
    except msgspec.DecodeError:  # ValidationError is one
        return None
    infos = [
        ObjectInfo(item.name, item.generation, item.size, item.updated, item.metadata)
        for item in page.items
    ]
    return infos, page.nextPageToken
