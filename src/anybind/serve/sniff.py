"""What a file is, from its first bytes (magic numbers), never from its name or declared type.

The service sniffs every upload before it goes near a decoder, and every stored
file before serving it, so a ``.png`` that is really an HTML page is neither
decoded as an image nor served as one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.media import looks_like_svg
from ..data.series import NPY_MAGIC
from ..data.video import looks_like_video

#: bytes read from the start of a file to sniff it (SVG roots may sit behind up to 64 KB of comments)
SNIFF_BYTES = 65536


@dataclass(frozen=True)
class Sniffed:
    kind: str  # "image" | "audio" | "video" | "array"
    mime: str
    ext: str


_PNG = Sniffed("image", "image/png", ".png")
_JPEG = Sniffed("image", "image/jpeg", ".jpg")
_GIF = Sniffed("image", "image/gif", ".gif")
_WEBP = Sniffed("image", "image/webp", ".webp")
_SVG = Sniffed("image", "image/svg+xml", ".svg")
_WAV = Sniffed("audio", "audio/wav", ".wav")
_OGG = Sniffed("audio", "audio/ogg", ".ogg")
_FLAC = Sniffed("audio", "audio/flac", ".flac")
_MP3 = Sniffed("audio", "audio/mpeg", ".mp3")
_MP4 = Sniffed("video", "video/mp4", ".mp4")
_WEBM = Sniffed("video", "video/webm", ".webm")
_NPY = Sniffed("array", "application/x-npy", ".npy")  # for a modality whose encoder reads arrays (a time series)

#: every content type :func:`sniff` can answer (the service documents these for stored files)
MIME_TYPES = tuple(s.mime for s in (_PNG, _JPEG, _GIF, _WEBP, _SVG, _WAV, _OGG, _FLAC, _MP3, _MP4, _WEBM, _NPY))
ACCEPTED = ("PNG, JPEG, GIF, WebP or SVG images; WAV, OGG, FLAC or MP3 sounds; MP4 or WebM videos; .npy arrays "
            "(a time series)")


def _mp3_frame(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, layer III, a valid bitrate and sample-rate index."""
    if len(head) < 4 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return False
    version = (head[1] >> 3) & 0x3
    layer = (head[1] >> 1) & 0x3
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0x3
    return version != 1 and layer == 1 and bitrate not in (0, 15) and rate != 3


def sniff(data: bytes) -> Sniffed | None:
    """The image, sound, video or array (``.npy``) format of ``data`` (the file's first bytes), or ``None``.

    Videos: MP4 (an ``ftyp`` box; not the still-image HEIF/AVIF brands) and WebM (EBML with the ``webm`` doc
    type); QuickTime and other Matroska files are not taken."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if data.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _GIF
    if len(data) >= 12 and data[:4] == b"RIFF":
        if data[8:12] == b"WEBP":
            return _WEBP
        if data[8:12] == b"WAVE":
            return _WAV
        return None
    if data.startswith(NPY_MAGIC):
        return _NPY
    if data.startswith(b"OggS"):
        return _OGG
    if data.startswith(b"fLaC"):
        return _FLAC
    if data.startswith(b"ID3") or _mp3_frame(data[:4]):
        return _MP3
    video = looks_like_video(data[:64])
    if video == "mp4":
        return _MP4
    if video == "webm":
        return _WEBM
    if looks_like_svg(data):
        return _SVG
    return None
