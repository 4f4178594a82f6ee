"""Image and mask reading for every task: each file is read as what it is, or refused naming it.

- :func:`read_image`: RGB uint8 ``[H, W, 3]`` from any PNG/JPEG/TIFF/BMP (grey, grey+alpha,
  palette, RGB(A), CMYK; 8/16-bit, float in [0, 1] or [0, 255]), turned as its EXIF orientation says
  (as an image viewer shows it).
- :func:`read_mask`: the stored values, 2-D (palette PNGs in colour give their indices, grey palettes
  their grey values; 16-bit masks keep their 16-bit values); a mask in colour is refused with the
  colours it holds and how to convert it.
- :func:`read_pair`: an image and its mask on one pixel grid, the EXIF orientation of the image applied
  to both when that is what the file sizes say (see :func:`pair_layout`).

Every failure is a :class:`~suite.errors.DataError` naming the file: empty, truncated or not an image,
a channel count or value range with no RGB meaning, a colour mask, an ambiguous orientation. OpenCV
decodes (fast, every depth); Pillow reads headers, EXIF orientation and palette indices, which
OpenCV does not expose, and decodes what OpenCV cannot. Pillow is imported where used so that the
deploy code (which imports :func:`list_images`) needs only OpenCV and NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from suite.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: EXIF orientation -> what a viewer does to the stored pixels (EXIF 2.3, tag 0x0112)
ORIENTATIONS = {
    1: "as stored", 2: "mirrored left-right", 3: "rotated 180°", 4: "mirrored top-bottom",
    5: "transposed", 6: "rotated 90° clockwise", 7: "transversed", 8: "rotated 90° counter-clockwise",
}
_EXIF_ORIENTATION = 0x0112
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


class NotAMask(DataError):
    """A readable image that is not one channel of values (colour, transparency, NaN)."""


class SizeMismatch(DataError):
    """An image and its mask of different sizes."""


class AmbiguousOrientation(DataError):
    """An image whose EXIF orientation may or may not apply to its mask, and the sizes cannot tell."""


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


# -- headers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    """What a file's header says: stored ``(width, height)``, Pillow ``mode`` and ``format``, EXIF orientation."""

    path: Path
    stored_size: tuple[int, int]
    mode: str
    format: str
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` as read (orientation applied): orientations 5-8 swap the sides."""
        w, h = self.stored_size
        return (h, w) if self.orientation >= 5 else (w, h)


def _exif_orientation(img: Any) -> int:
    # A PNG's eXIf chunk is in ``info`` when it precedes the pixels; getexif() would decode the whole
    # image to look after them, which a header read must not do.
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a corrupt EXIF block: decoders ignore it and show the pixels as stored
        return 1
    return value if isinstance(value, int) and value in ORIENTATIONS else 1


def _check_complete(path: Path, fmt: str, what: str) -> None:
    """A truncated PNG or JPEG, caught from its last bytes (OpenCV decodes a cut JPEG without a word)."""
    if fmt not in ("PNG", "JPEG"):
        return  # OpenCV refuses cut TIFF/BMP files itself
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 64))
        tail = fh.read()
    if (fmt == "PNG" and tail.endswith(_PNG_END)) or (fmt == "JPEG" and _JPEG_END in tail):
        return
    # No end marker in the tail: data after the end is legal, a cut file is not; a full decode tells.
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
    except Exception as err:
        raise DataError(f"{what} file is truncated or corrupt: {path} ({err})") from None


def read_header(path: str | Path, what: str = "image") -> Header:
    """The header of ``path`` (no pixel decoding, except to confirm a file that looks cut); a DataError
    naming the file when it is missing, empty, truncated or not an image."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} file is empty (0 bytes): {path}")
    try:
        with Image.open(path) as img:
            header = Header(path, img.size, img.mode, img.format or "", _exif_orientation(img))
    except Exception as err:  # Pillow raises many types on damaged headers; all mean "not readable"
        # Pillow cannot parse every TIFF OpenCV can (float64, float RGB): its decode is the judge.
        array = _cv2_decode(path)
        if array is None:
            raise DataError(f"cannot read {what} (corrupt or not an image): {path} ({err})") from None
        return Header(path, (array.shape[1], array.shape[0]), "", "")
    _check_complete(path, header.format, what)
    return header


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of ``path`` as :func:`read_image` returns it, from the header."""
    return read_header(path).size


# -- decoding ---------------------------------------------------------------------------------
def _cv2_decode(path: Path) -> np.ndarray | None:
    try:
        # UNCHANGED: every depth and channel as stored, EXIF orientation not applied (done here, once)
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None


def _pil_decode(path: Path, what: str) -> np.ndarray:
    """Pixels Pillow decodes where OpenCV does not, as OpenCV would give them (BGR order)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F", "I;16", "I;16B", "I;16L"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            array = np.asarray(img)
    except Exception as err:
        raise DataError(f"cannot read {what} (corrupt or not an image): {path} ({err})") from None
    if array.ndim == 3 and array.shape[2] >= 3:
        array = array[..., [2, 1, 0, *range(3, array.shape[2])]]
    return array


def _decode(path: Path, what: str) -> np.ndarray:
    array = _cv2_decode(path)
    if array is None:
        array = _pil_decode(path, what)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or array.size == 0:
        raise DataError(f"cannot read {what}: {path} decodes to an array of shape {array.shape}")
    return array


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels of an image turned as EXIF ``orientation`` (1-8) tells a viewer to show them."""
    if orientation == 1:
        return array
    if orientation in (5, 6, 7, 8):
        array = np.swapaxes(array, 0, 1)  # transpose, then the flips of the orientations 1-4 below
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation in (2, 3):
        array = array[:, ::-1]
    if orientation in (3, 4):
        array = array[::-1]
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """8-bit values of any stored depth: 16-bit scaled, floats in [0, 1] or [0, 255]; other ranges refused."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise DataError(f"image holds NaN or infinite values: {path}")
        low, high = float(array.min()), float(array.max())
        if low >= 0 and high <= 1:
            return np.rint(array * 255).astype(np.uint8)
        if low >= 0 and high <= 255:
            return np.rint(array).astype(np.uint8)
        raise DataError(f"float image with values in [{low:g}, {high:g}]: {path}; images must hold values in "
                        "[0, 1] or [0, 255] (save it as 8-bit)")
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return _to_uint8(array.astype(np.uint16), path)
        raise DataError(f"{array.dtype} image with values in [{low}, {high}]: {path}; images must hold values in "
                        "[0, 255] or [0, 65535] (save it as 8-bit)")
    raise DataError(f"image of an unsupported pixel type {array.dtype}: {path}")


def _bgr_to_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    """RGB from grey, grey+alpha, BGR or BGRA uint8 (the alpha channel is dropped, as OpenCV's colour read does).

    cv2.cvtColor, not a reversed-stride copy: five times faster on a 640x480 frame.
    """
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    channels = array.shape[2]
    if channels == 2:
        return cv2.cvtColor(np.ascontiguousarray(array[..., 0]), cv2.COLOR_GRAY2RGB)
    if channels in (3, 4):
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGB)
    raise DataError(f"image has {channels} channels: {path}; expected 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)")


def read_image(path: str | Path, header: Header | None = None) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` as a viewer shows the file (EXIF orientation applied; grey replicated)."""
    path = Path(path)
    header = header or read_header(path)
    array = _decode(path, "image")
    return orient(_bgr_to_rgb(_to_uint8(array, path), path), header.orientation)


def _describe_colours(array: np.ndarray, limit: int = 6) -> str:
    """The most frequent colours of a ``[H, W, C]`` BGR(A) array as ``(R, G, B) 80.1 %`` items."""
    rgb = array[..., 2::-1].reshape(-1, 3).astype(np.int64)
    packed = (rgb[:, 0] << 32) | (rgb[:, 1] << 16) | rgb[:, 2]
    values, counts = np.unique(packed, return_counts=True)
    order = np.argsort(counts)[::-1]
    items = [f"({v >> 32}, {(v >> 16) & 0xFFFF}, {v & 0xFFFF}) {100 * c / packed.size:.1f} %"
             for v, c in zip(values[order][:limit], counts[order][:limit], strict=True)]
    return ", ".join(items) + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _mask_values(array: np.ndarray, path: Path) -> np.ndarray:
    """One channel of values from a decoded mask; colour is refused naming the colours found."""
    if array.ndim == 3:
        colour, alpha = array[..., :3] if array.shape[2] >= 3 else array[..., :1], None
        if array.shape[2] in (2, 4):
            alpha = array[..., -1]
        if array.shape[2] > 4:
            raise NotAMask(f"mask has {array.shape[2]} channels: {path}; a mask is one channel of values")
        if alpha is not None and (alpha != alpha.flat[0]).any():
            raise NotAMask(f"mask has a varying alpha channel (transparent pixels): {path}; a mask is one channel "
                            "of values: save the foreground as one value (e.g. 255) and the rest as 0, without alpha")
        if colour.shape[2] == 3 and ((colour[..., 0] != colour[..., 1]) | (colour[..., 1] != colour[..., 2])).any():
            raise NotAMask(f"mask is in colour: {path} holds the colours {_describe_colours(colour)}; "
                            "a mask is one channel of values: save it single-channel with the foreground as one "
                            "value (e.g. 255 where it shows the foreground colour, 0 elsewhere), or as a palette "
                            "PNG whose indices are the classes")
        array = colour[..., 0]
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise NotAMask(f"mask holds NaN or infinite values: {path}")
    return array


def _read_mask_stored(path: Path, header: Header) -> np.ndarray:
    if header.mode in ("P", "PA"):
        # Palette PNGs in colour (e.g. Pascal VOC): the indices are the classes (OpenCV would give the colours'
        # grey levels). A grey palette (CDnet ground truth) shows its grey values: those are what is meant.
        from PIL import Image

        try:
            with Image.open(path) as img:
                indices = np.asarray(img if img.mode == "P" else img.convert("P"))
                palette = np.asarray(img.getpalette() or [], np.uint8).reshape(-1, 3)
        except Exception as err:
            raise DataError(f"cannot read mask (corrupt or not an image): {path} ({err})") from None
        used = palette[: int(indices.max()) + 1] if indices.size and len(palette) > indices.max() else None
        if used is not None and (used == used[:, :1]).all():
            return used[:, 0][indices]
        return indices
    return _mask_values(_decode(path, "mask"), path)


def read_mask(path: str | Path, header: Header | None = None) -> np.ndarray:
    """The mask's stored values as a 2-D array (8/16-bit or float as stored; palette PNGs in colour give their
    indices, grey palettes their grey values),
    turned by the mask's own EXIF orientation if it has one."""
    path = Path(path)
    header = header or read_header(path, "mask")
    return orient(_read_mask_stored(path, header), header.orientation)


# -- image + mask -----------------------------------------------------------------------------
def _sizes(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def pair_layout(image: str | Path, mask: str | Path) -> tuple[Header, Header, bool]:
    """Headers of an image and its mask, and whether the image's EXIF orientation must also turn the mask.

    Images are read as a viewer shows them (orientation applied). A mask saved without that
    orientation was drawn either on the photo as shown — then it has the shown size — or on its
    pixels as stored — then it has the stored size, and the same turn applies to it. When both sizes
    are the same (square images, flips, 180°) the files cannot tell which: that is refused, naming the
    file, rather than guessed. A size matching neither is a size mismatch.
    """
    img, msk = read_header(image, "image"), read_header(mask, "mask")
    if img.orientation == msk.orientation:
        turn_mask = False
        ok = img.size == msk.size
    else:
        shown, stored = img.size == msk.size, img.stored_size == msk.stored_size and msk.orientation == 1
        if shown and stored:
            raise AmbiguousOrientation(
                f"{img.path} carries EXIF orientation {img.orientation} ({ORIENTATIONS[img.orientation]}) and its "
                f"mask {msk.path} has {'none' if msk.orientation == 1 else msk.orientation}; with a "
                f"{_sizes(img.stored_size)} image the sizes cannot tell whether the mask was drawn on the photo as "
                "shown or on its pixels as stored. If it matches the photo as shown, save the image with the "
                "orientation applied (e.g. Pillow's ImageOps.exif_transpose); if it matches the stored pixels, "
                "remove the tag (e.g. exiftool -Orientation= <image>)")
        turn_mask, ok = stored and not shown, shown or stored
    if not ok:
        raise SizeMismatch(f"mask size {msk.size} differs from image size {img.size}: {msk.path} vs {img.path}"
                        + (f" (the image carries EXIF orientation {img.orientation}: "
                           f"{ORIENTATIONS[img.orientation]}, stored {_sizes(img.stored_size)})"
                           if img.orientation != 1 else ""))
    return img, msk, turn_mask


def read_pair(image: str | Path, mask: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB uint8 [H, W, 3], mask values [H, W])`` on one pixel grid (see :func:`pair_layout`)."""
    img, msk, turn_mask = pair_layout(image, mask)
    rgb = read_image(img.path, img)
    values = orient(_read_mask_stored(msk.path, msk), img.orientation if turn_mask else msk.orientation)
    if values.shape != rgb.shape[:2]:  # the header lied about the size
        raise SizeMismatch(f"mask size {values.shape[::-1]} differs from image size {rgb.shape[1::-1]}: "
                        f"{msk.path} vs {img.path}")
    return rgb, values
