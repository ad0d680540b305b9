"""Image parts: data-URI parsing and type checks by magic number (pure; downloads live in image_fetch)."""
from __future__ import annotations

import base64
import binascii
import re

from app.errors import ImageRejected

_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,"
                       r"(?P<data>.*)$", re.S)


def sniff(head: bytes) -> str | None:
    """The image type the bytes really are (JPEG, PNG, GIF, WebP), whatever was declared."""
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def decode_data_uri(url: str, max_bytes: int, *, where: str = "image_url.url") -> tuple[str, bytes]:
    """Validate a `data:` image URI -> (sniffed mime type, raw bytes). Raises ImageRejected."""
    match = _DATA_URI.match(url)
    if not match or not match.group("b64"):
        raise ImageRejected("Image data URIs must look like data:image/png;base64,<data>.",
                            fields={where: "not a base64 data URI"})
    data = match.group("data")
    if len(data) * 3 // 4 > max_bytes + 3:
        raise ImageRejected(f"Image is larger than {max_bytes} bytes (FLOWCALL_MAX_IMAGE_BYTES).",
                            fields={where: "image too large"})
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("Image data URI is not valid base64.", fields={where: "invalid base64"}) from None
    if len(raw) > max_bytes:
        raise ImageRejected(f"Image is larger than {max_bytes} bytes (FLOWCALL_MAX_IMAGE_BYTES).",
                            fields={where: "image too large"})
    mime = sniff(raw[:16])
    if mime is None:
        raise ImageRejected("Only JPEG, PNG, GIF and WebP images are accepted (checked by content).",
                            fields={where: "not a JPEG, PNG, GIF or WebP image"})
    return mime, raw


def to_data_uri(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def split_data_uri(url: str) -> tuple[str, str]:
    """An already validated data URI -> (mime type, base64 payload), without decoding it again."""
    header, _, data = url.partition(",")
    mime = header[5:].split(";", 1)[0] or "application/octet-stream"
    return mime, data
