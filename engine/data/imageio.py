"""The one image loader, shared by the scan, the decoded-image cache, training and prediction.

Why one loader: if training and prediction decoded images differently (EXIF rotation,
16-bit scaling, transparency), a model would see different pixels at prediction time
than it was trained on. Everything that turns a file into pixels goes through here.

Colour: an embedded ICC profile (phone photos in Display P3, cameras in Adobe RGB, CMYK
JPEGs) is converted to sRGB with Pillow's ImageCms (LittleCMS), relative colorimetric, so
a picture means the same pixels whatever space it was saved in. A profile that cannot be
parsed is ignored (the pixels are used as stored), never an error.

Safety: the format is sniffed from the content (never trusted from the extension), and
the pixel count is checked against ``max_pixels`` from the header, before any pixel
buffer is allocated. We identify files through Pillow's plugin registry ourselves rather
than ``Image.open`` so Pillow's own global decompression-bomb check cannot warn or raise
on files we are about to reject with a clearer message. The global
``Image.MAX_IMAGE_PIXELS`` is only ever raised (never lowered, never restored), and only
when a caller explicitly asks for a higher limit, so concurrent callers never see it flip.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps

from loupe.engine.core.errors import DatasetError

if TYPE_CHECKING:
    import torch

Image.init()  # register every plugin once, so unsupported formats can be named

DEFAULT_MAX_PIXELS: int = int(1024 * 1024 * 1024 // 4 // 3)  # Pillow's default, 89_478_485
BACKGROUND: tuple[int, int, int] = (255, 255, 255)  # transparency is composited on white
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
FORMAT_NAMES = "JPEG, PNG, BMP, GIF, WebP, TIFF"

EMPTY_FILE = "empty file"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
UNSUPPORTED_FORMAT = "unsupported format"
TOO_LARGE = "too large"
DAMAGED = "damaged"
UNREADABLE = "unreadable"

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_PNG_END = b"IEND"
_PNG_TAIL_BYTES = 4096
_VALIDATE_BUDGET_PIXELS = 128_000_000  # concurrent full decodes held by validate_image
_limit_lock = threading.Lock()
_MAX_ICC_BYTES = 8 << 20  # real profiles are KBs (printer LUTs a few MB); ignore bigger
# The profile's colour space -> the Pillow mode it converts from.
_ICC_MODES = {"RGB": "RGB", "CMYK": "CMYK", "GRAY": "L"}

Source = str | os.PathLike[str] | IO[bytes]


class UnreadableImage(DatasetError):
    """A file that cannot be used as an image; ``reason`` is the short human reason.

    The scan stores ``reason`` per rejected file; ``str(err)`` names the file too.
    """

    def __init__(self, path: str, reason: str, size: tuple[int, int] | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.size = size  # the declared (width, height) when known, e.g. for "too large"


def too_large_reason(width: int, height: int, max_pixels: int) -> str:
    """The one wording of the decompression-bomb rejection (also used by the scan index)."""
    return (
        f"{TOO_LARGE}: {width}×{height} ({_mpx(width * height)} Mpx) exceeds the safety "
        f"limit of {_mpx(max_pixels)} Mpx"
    )


def open_image(path: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFile.ImageFile:
    """Identify ``path`` by content and return it opened lazily (header parsed, no pixels).

    Raises :class:`UnreadableImage` (a ``DatasetError``) for an empty file, something that
    is not an image, an image format Loupe does not accept, a damaged header, or a pixel
    count above ``max_pixels``. Use it as a context manager so the file is closed.
    """
    name = _display_name(path)
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    _allow_pillow_limit(max_pixels)
    exclusive = not hasattr(path, "read")  # True when the file object is ours to close
    try:
        fp = open(os.fspath(cast(str, path)), "rb") if exclusive else cast(IO[bytes], path)
    except OSError as err:
        raise UnreadableImage(name, _os_reason(err)) from err
    if not exclusive and not _seekable(fp):
        fp, exclusive = io.BytesIO(fp.read()), True
    try:
        img = _identify(fp, name, max_pixels)
    except BaseException:
        if exclusive:
            fp.close()
        raise
    img._exclusive_fp = exclusive  # what Image.open does: closing the image closes the file
    return img


def load_rgb(
    path_or_file: Source,
    *,
    min_short_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode the first frame as an RGB image, detached from the file.

    EXIF orientation is applied; 16-bit and float images are scaled to 8 bits (not
    clipped); transparency is composited on :data:`BACKGROUND`. For JPEGs,
    ``min_short_side`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale as long as the short
    side stays at least that long, which makes big photos several times cheaper.
    """
    name = _display_name(path_or_file)
    with open_image(path_or_file, max_pixels=max_pixels) as img:
        if img.format == "PNG":
            _check_png_end(img.fp, name)  # the scan rejects these: so must every other caller
        if min_short_side and img.format in _JPEG_FORMATS:
            img.draft("RGB", (min_short_side, min_short_side))
        _decode(img, name)
        icc = img.info.get("icc_profile")
        _apply_exif_orientation(img)
        try:
            rgb = to_srgb(img, icc)
        except ValueError as err:
            raise UnreadableImage(name, f"{UNSUPPORTED_FORMAT}: colour mode {img.mode}") from err
        return rgb.copy() if rgb is img else rgb  # closing the file must not take the pixels


def validate_image(path: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Fully decode the first frame to prove the file is usable; return (width, height).

    The size is after EXIF orientation. Depth of the check: every pixel of the first frame
    is decoded (the only honest test for truncation), JPEGs at 1/8 scale (libjpeg still
    reads the whole entropy-coded stream, so truncation is caught at 1/64 of the cost),
    and a PNG must also reach its IEND chunk. Concurrent full decodes share a pixel budget
    so a folder of large images cannot exhaust memory when validated in parallel.
    """
    name = _display_name(path)
    with open_image(path, max_pixels=max_pixels) as img:
        width, height = img.size
        if img.format == "PNG":
            _check_png_end(img.fp, name)
        if img.format in _JPEG_FORMATS:
            img.draft(None, (1, 1))
        with _validate_budget.hold(img.size[0] * img.size[1]):
            _decode(img, name)
            # After the decode: Pillow reads a PNG's EXIF by loading the whole image.
            swap = _orientation(img) in (5, 6, 7, 8)
            img.close()  # drop the pixels before another validation may take the budget
    return (height, width) if swap else (width, height)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way a person would expect to see it.

    16-bit greyscale (``I;16*``, and ``I`` holding 0..65535) is scaled by 255/65535;
    float ``F`` in 0..1 is scaled by 255, other ranges stretched min..max; transparency
    (alpha channel, palette or ``transparency`` key) is composited on white. An image
    that is already plain RGB is returned as is (not copied).
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        img = _scale_integer(img)
    elif mode == "F":
        img = _scale_float(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")


def to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """:func:`to_rgb`, with the embedded ICC profile ``icc`` converted to sRGB.

    RGB profiles apply to the RGB image (after transparency was composited on white);
    CMYK and grey profiles to the image as decoded. An sRGB profile, a profile for
    another colour model, or one LittleCMS cannot read leaves the pixels as they are.
    """
    space = _icc_space(icc)
    if space is not None and space != "RGB" and img.mode == _ICC_MODES[space]:
        converted = _convert_to_srgb(img, cast(bytes, icc), img.mode)
        if converted is not None:
            return converted
    rgb = to_rgb(img)
    if space == "RGB":
        return _convert_to_srgb(rgb, cast(bytes, icc), "RGB") or rgb
    return rgb


def _icc_space(icc: bytes | None) -> str | None:
    """The colour space an embedded profile converts from, if it needs converting."""
    if not icc or not isinstance(icc, bytes) or len(icc) > _MAX_ICC_BYTES:
        return None
    info = _icc_profile(icc)
    return info[1] if info is not None else None


@lru_cache(maxsize=32)
def _icc_profile(icc: bytes) -> tuple[ImageCms.ImageCmsProfile, str] | None:
    """(profile, colour space) for a non-sRGB profile Loupe can convert, else None."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = str(profile.profile.xcolor_space).strip().upper()
        description = str(ImageCms.getProfileDescription(profile) or "")
    except Exception:  # a damaged or hostile profile: use the pixels as stored
        return None
    if space not in _ICC_MODES or "srgb" in description.lower():
        return None  # sRGB already (or a colour model we do not convert)
    return profile, space


@lru_cache(maxsize=32)
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    info = _icc_profile(icc)
    if info is None:
        return None
    try:
        return ImageCms.buildTransform(
            info[0], _SRGB, mode, "RGB",
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            flags=ImageCms.Flags.NOCACHE,  # one transform is shared by decoder threads
        )
    except Exception:  # LittleCMS refused the profile (an inconsistent one): no conversion
        return None


def _convert_to_srgb(img: Image.Image, icc: bytes, mode: str) -> Image.Image | None:
    transform = _srgb_transform(icc, mode)
    if transform is None:
        return None
    try:
        converted = ImageCms.applyTransform(img, transform)
    except Exception:  # never let colour management make a readable image unreadable
        return None
    return converted if isinstance(converted, Image.Image) else None


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def resize_short_side(img: Image.Image, short: int) -> Image.Image:
    """Resize so the shorter side is exactly ``short`` (bilinear, antialiased by Pillow)."""
    if short <= 0:
        raise ValueError(f"short side must be positive, got {short}")
    width, height = img.size
    if min(width, height) == short:
        return img
    scale = short / min(width, height)
    if width <= height:
        size = (short, max(1, round(height * scale)))
    else:
        size = (max(1, round(width * scale)), short)
    return img.resize(size, Image.Resampling.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Crop the central ``size``×``size`` square.

    The offset is ``(W - size) // 2`` (and likewise for H), the same as
    ``loupe.engine.data.transforms.eval_tensor_from_cached`` so the PIL and tensor paths agree pixel
    for pixel. An image smaller than ``size`` on either side is first resized so its
    short side is ``size``: the result is always square and never padded.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if min(img.size) < size:
        img = resize_short_side(img, size)
    width, height = img.size
    left = (width - size) // 2
    top = (height - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """3×H×W uint8 tensor (channels first, as torchvision expects), owning its memory."""
    import torch

    if img.mode != "RGB":
        img = to_rgb(img)
    array = np.array(img, dtype=np.uint8)  # a writable copy, detached from Pillow
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# --- identification -------------------------------------------------------------------


def _identify(fp: IO[bytes], name: str, max_pixels: int) -> ImageFile.ImageFile:
    fp.seek(0)
    prefix = fp.read(32)
    if not prefix:
        raise UnreadableImage(name, EMPTY_FILE)
    header_error: tuple[str, Exception] | None = None
    for fmt in ACCEPTED_FORMATS:
        if fmt not in Image.OPEN:
            continue  # this Pillow build lacks the codec: reported as unsupported below
        factory, accept = Image.OPEN[fmt]
        if accept and not accept(prefix[:16]):
            continue
        if fmt == "WEBP":
            _check_webp_header(fp, prefix, name, max_pixels)
        try:
            img = _construct(factory, fp)
        except Image.DecompressionBombError as err:
            raise UnreadableImage(name, f"{TOO_LARGE}: {err}") from err
        except (SyntaxError, ValueError, OSError, EOFError, IndexError, struct.error) as err:
            header_error = (fmt, err)
            continue
        width, height = img.size
        if width * height > max_pixels:
            img.close()
            raise UnreadableImage(name, too_large_reason(width, height, max_pixels), img.size)
        return img
    if header_error is not None:
        raise UnreadableImage(name, _header_reason(*header_error))
    other = _other_format(fp, prefix)
    if other:
        raise UnreadableImage(name, f"{UNSUPPORTED_FORMAT}: {other} (Loupe reads {FORMAT_NAMES})")
    raise UnreadableImage(name, f"{NOT_AN_IMAGE} (Loupe reads {FORMAT_NAMES})")


def _construct(factory: Callable[..., ImageFile.ImageFile], fp: IO[bytes]) -> ImageFile.ImageFile:
    fp.seek(0)
    return factory(fp, getattr(fp, "name", "") or "")


def _other_format(fp: IO[bytes], prefix: bytes) -> str | None:
    """Name the format when Pillow knows the file but Loupe does not accept it (PSD, ICO...).

    Only headers are parsed and the image is closed at once, so a huge PSD costs nothing.
    """
    for fmt, (factory, accept) in list(Image.OPEN.items()):
        if fmt in ACCEPTED_FORMATS or fmt == "DIB":
            continue  # DIB has no magic bytes; it would claim random data
        if accept is not None:
            try:
                if not accept(prefix[:16]):
                    continue
            except Exception:  # a plugin's sniffing bug is not our verdict
                continue
        try:
            img = _construct(factory, fp)
        except Exception:  # any failure just means "not this format"
            continue
        described = img.format or fmt
        img._exclusive_fp = False
        img.close()
        return described
    return None


def _check_webp_header(fp: IO[bytes], prefix: bytes, name: str, max_pixels: int) -> None:
    """WebP's Pillow plugin allocates the canvas while opening, so check size first."""
    size = _webp_canvas_size(prefix)
    if size and size[0] * size[1] > max_pixels:
        raise UnreadableImage(name, too_large_reason(size[0], size[1], max_pixels), size)
    riff_size = struct.unpack("<I", prefix[4:8])[0] + 8
    fp.seek(0, os.SEEK_END)
    if fp.tell() < riff_size:
        raise UnreadableImage(name, TRUNCATED)


def _webp_canvas_size(header: bytes) -> tuple[int, int] | None:
    """Canvas size from the first chunk of a WebP file (VP8, VP8L or VP8X)."""
    chunk = header[12:16]
    if chunk == b"VP8 " and len(header) >= 30 and header[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", header[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(header) >= 25 and header[20] == 0x2F:
        bits = struct.unpack("<I", header[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(header) >= 30:
        width = int.from_bytes(header[24:27], "little") + 1
        height = int.from_bytes(header[27:30], "little") + 1
        return width, height
    return None


# --- decoding -------------------------------------------------------------------------


def _decode(img: ImageFile.ImageFile, name: str) -> None:
    """``img.load()`` with Pillow's exceptions turned into one human reason each."""
    try:
        img.load()
    except Image.DecompressionBombError as err:
        raise UnreadableImage(name, f"{TOO_LARGE}: {err}") from err
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as err:
        raise UnreadableImage(name, _decode_reason(img.format or "image", err)) from err


def _decode_reason(fmt: str, err: Exception) -> str:
    text = str(err) or type(err).__name__
    lowered = text.lower()
    if isinstance(err, EOFError | struct.error) or "truncat" in lowered or "premature" in lowered:
        return TRUNCATED
    if "not available" in lowered or "unsupported" in lowered or "not supported" in lowered:
        return f"{UNSUPPORTED_FORMAT}: {fmt} variant ({text})"
    return f"{DAMAGED}: {fmt} data ({text})"


def _header_reason(fmt: str, err: Exception) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, EOFError | struct.error) or "truncat" in text.lower():
        return TRUNCATED
    return f"{DAMAGED}: {fmt} header ({text})"


def _check_png_end(fp: IO[bytes] | None, name: str) -> None:
    """A PNG must reach IEND; Pillow decodes fine when only the stream's tail is cut off."""
    if fp is None:
        raise UnreadableImage(name, f"{UNREADABLE}: the file was closed before it was checked")
    fp.seek(0, os.SEEK_END)
    length = fp.tell()
    fp.seek(max(0, length - _PNG_TAIL_BYTES))
    if _PNG_END not in fp.read():
        raise UnreadableImage(name, TRUNCATED)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # broken EXIF must not make a good image unusable
        return 1


def _apply_exif_orientation(img: Image.Image) -> None:
    if _orientation(img) in (2, 3, 4, 5, 6, 7, 8):
        ImageOps.exif_transpose(img, in_place=True)


def _scale_integer(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit holding 16-bit) greyscale to 8 bits by 255/65535, never clipped."""
    values = np.asarray(img)
    if img.mode == "I":
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            return _stretch(values.astype(np.float64), low, high)
    wide = values.astype(np.uint32)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def _scale_float(img: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= 0.0 and high <= 1.0:
        return Image.fromarray(np.rint(values * 255.0).astype(np.uint8), mode="L")
    return _stretch(values, low, high)


def _stretch(values: np.ndarray, low: float, high: float) -> Image.Image:
    span = (high - low) or 1.0
    scaled = np.rint((values - low) * (255.0 / span))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


# --- helpers --------------------------------------------------------------------------


class _PixelBudget:
    """Caps the pixels held by concurrent validations; one image alone may exceed it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._cond:
            while self._used and self._used + pixels > self._limit:
                self._cond.wait()
            self._used += pixels
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()


_validate_budget = _PixelBudget(_VALIDATE_BUDGET_PIXELS)


def _allow_pillow_limit(max_pixels: int) -> None:
    """Make sure Pillow's own bomb check never fires below our (checked) limit."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or max_pixels <= current:
        return
    with _limit_lock:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and max_pixels > current:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _mpx(pixels: int) -> str:
    value = pixels / 1_000_000
    if value >= 10:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _os_reason(err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return f"{UNREADABLE}: file not found"
    if isinstance(err, PermissionError):
        return f"{UNREADABLE}: permission denied"
    if isinstance(err, IsADirectoryError):
        return f"{UNREADABLE}: is a folder, not a file"
    return f"{UNREADABLE}: {err.strerror or err}"


def _seekable(fp: IO[bytes]) -> bool:
    try:
        return bool(fp.seekable())
    except (AttributeError, ValueError):
        return False


def _display_name(path: Source) -> str:
    if hasattr(path, "read"):
        return str(getattr(path, "name", "<image data>"))
    return str(Path(os.fspath(path)))
