"""Where an uploaded image ends, so that nothing can hide behind it.

A polyglot file is an image *and* something else at once: an HTML page, a script or a ZIP archive
appended after the image's end marker, where image viewers never look. The logo is re-encoded
before it is stored, so such a payload would never be served, but a file like that is not a logo
someone saved from an image editor: it is refused with a message instead of quietly cleaned.
"""

from __future__ import annotations


def bytes_after_image(data: bytes, image_format: str) -> int:
    """How many bytes follow the end of the PNG, JPEG or WebP image that ``data`` starts with.

    0 for a clean file, and when the end cannot be found (Pillow has already read the image).
    """
    end = _ENDS[image_format](data)
    return max(len(data) - end, 0) if end is not None else 0


def _png_end(data: bytes) -> int | None:
    """After the IEND chunk: a PNG is a signature, then chunks of length, type, data and CRC."""
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        position += 12 + length
        if kind == b"IEND":
            return position
    return None


def _webp_end(data: bytes) -> int:
    """A WebP file is one RIFF chunk, its size after the first 8 bytes, padded to an even length."""
    size = int.from_bytes(data[4:8], "little")
    return 8 + size + (size & 1)


def _jpeg_end(data: bytes) -> int | None:
    """After the end-of-image marker, skipping segments by their length and scans to their next marker."""
    position = 2  # after the start-of-image marker
    while position + 1 < len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
        elif marker == 0xD9:  # end of image
            return position + 2
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
            if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker
                position = _next_marker(data, position)
    return None


def _next_marker(data: bytes, position: int) -> int:
    """The next 0xFF that starts a marker: 0xFF 0x00 is a stuffed data byte, 0xFF 0xD0-D7 a restart."""
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            return len(data)
        following = data[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            position += 2
        else:
            return position


_ENDS = {"PNG": _png_end, "JPEG": _jpeg_end, "WEBP": _webp_end}
