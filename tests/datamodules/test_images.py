"""The image and mask reader: each file loads as what it is, or fails with a DataError naming it.

The property-based tests (hypothesis) throw random bytes, random valid PNG/JPEG/TIFF/BMP files of
every depth, channel count and size, and EXIF-oriented photos at the reader; the example tests pin
down each bad input of docs/bad_inputs.md.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from datamodules.images import (
    AmbiguousOrientation,
    NotAMask,
    SizeMismatch,
    image_size,
    orient,
    read_header,
    read_image,
    read_mask,
    read_pair,
)
from suite.errors import DataError

# hypothesis: no example database on disk, no per-example deadline (the machine is shared)
FAST = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def save_png(path: Path, array: np.ndarray, orientation: int | None = None) -> Path:
    kwargs = {"exif": exif_bytes(orientation)} if orientation else {}
    Image.fromarray(array).save(path, **kwargs)
    return path


# -- masks read as stored ----------------------------------------------------------------------
def test_16_bit_mask_keeps_its_values(tmp_path: Path) -> None:
    mask = np.zeros((8, 10), np.uint16)
    mask[2:4, 3:6] = 1
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    read = read_mask(tmp_path / "m.png")
    assert read.dtype == np.uint16 and np.array_equal(read, mask)  # 8-bit conversion made it all 0


def test_palette_mask_gives_its_indices(tmp_path: Path) -> None:
    indices = np.zeros((6, 6), np.uint8)
    indices[1:3, 1:3], indices[4:, 4:] = 1, 2
    img = Image.fromarray(indices, mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)  # Pascal VOC colours
    img.save(tmp_path / "voc.png")
    assert np.array_equal(read_mask(tmp_path / "voc.png"), indices)
    img.putpalette([0, 0, 0, 255, 255, 255, 170, 170, 170] + [0] * 759)  # a grey palette: its greys are meant
    img.save(tmp_path / "grey.png")
    assert np.array_equal(read_mask(tmp_path / "grey.png"), np.array([0, 255, 170], np.uint8)[indices])


def test_colour_mask_is_refused_with_its_colours(tmp_path: Path) -> None:
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[:2, :2] = (255, 0, 0)
    save_png(tmp_path / "red.png", mask)
    with pytest.raises(NotAMask, match=r"colour: .*red\.png .*\(0, 0, 0\) 93\.8 %, \(255, 0, 0\) 6\.2 %"):
        read_mask(tmp_path / "red.png")


def test_grey_saved_as_rgb_is_a_mask(tmp_path: Path) -> None:
    grey = np.zeros((5, 7), np.uint8)
    grey[1, 2] = 255
    save_png(tmp_path / "g.png", np.dstack([grey] * 3))
    assert np.array_equal(read_mask(tmp_path / "g.png"), grey)


def test_transparent_mask_and_nan_mask_are_refused(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2, :, 3] = 255
    save_png(tmp_path / "alpha.png", rgba)
    with pytest.raises(NotAMask, match=r"alpha .*alpha\.png"):
        read_mask(tmp_path / "alpha.png")
    cv2.imwrite(str(tmp_path / "nan.tif"), np.array([[0, np.nan]], np.float32))
    with pytest.raises(NotAMask, match=r"NaN .*nan\.tif"):
        read_mask(tmp_path / "nan.tif")


# -- files that are not whole images ----------------------------------------------------------
@pytest.mark.parametrize("reader", [read_image, read_mask, image_size])
def test_empty_truncated_and_foreign_files_are_named(tmp_path: Path, reader) -> None:
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty \(0 bytes\): .*zero\.png"):
        reader(tmp_path / "zero.png")
    for suffix in (".jpg", ".png"):
        ok, data = cv2.imencode(suffix, np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
        (tmp_path / f"cut{suffix}").write_bytes(data.tobytes()[: len(data) // 2])
        with pytest.raises(DataError, match=rf"cut\{suffix}"):
            reader(tmp_path / f"cut{suffix}")  # OpenCV alone decodes a cut JPEG, grey where data is missing
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"cannot read .*notes\.png"):
        reader(tmp_path / "notes.png")
    with pytest.raises(DataError, match=r"not found: .*missing\.png"):
        reader(tmp_path / "missing.png")


def test_jpeg_with_bytes_after_its_end_is_whole(tmp_path: Path) -> None:
    ok, data = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    (tmp_path / "tail.jpg").write_bytes(data.tobytes() + b"\x00" * 200)  # some cameras pad their files
    assert read_image(tmp_path / "tail.jpg").shape == (16, 16, 3)


# -- images of every depth --------------------------------------------------------------------
def test_image_depths_and_channels_become_rgb_uint8(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "16.png"), np.full((3, 4), 65535, np.uint16))
    cv2.imwrite(str(tmp_path / "f.tif"), np.full((3, 4), 0.5, np.float32))
    Image.fromarray(np.full((3, 4), 7, np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((3, 4), 200, np.uint8)).convert("LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "16.png").tolist() == np.full((3, 4, 3), 255).tolist()
    assert read_image(tmp_path / "f.tif").tolist() == np.full((3, 4, 3), 128).tolist()
    assert read_image(tmp_path / "cmyk.jpg").shape == (3, 4, 3)
    assert read_image(tmp_path / "la.png").tolist() == np.full((3, 4, 3), 200).tolist()
    cv2.imwrite(str(tmp_path / "neg.tif"), np.array([[-5, 3]], np.int16))
    with pytest.raises(DataError, match=r"values in \[-5, 3\]: .*neg\.tif"):
        read_image(tmp_path / "neg.tif")


# -- EXIF orientation -------------------------------------------------------------------------
def test_orient_matches_pillow_exif_transpose() -> None:
    from PIL import ImageOps

    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    for orientation in range(1, 9):
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(_png_bytes(stored, orientation)))))
        assert np.array_equal(orient(stored, orientation), expected), orientation


def _png_bytes(array: np.ndarray, orientation: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", exif=exif_bytes(orientation))
    return buffer.getvalue()


def marked_pair(tmp_path: Path, orientation: int, stored_hw: tuple[int, int], mask_on: str,
                seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """An image whose red channel is 255 exactly where its mask is foreground, saved with EXIF
    ``orientation``; the mask drawn on the stored pixels or on the photo as shown."""
    rng = np.random.default_rng(seed)
    pattern = rng.random(stored_hw) < 0.3
    image = np.zeros((*stored_hw, 3), np.uint8)
    image[..., 0] = pattern * 255
    image[..., 1] = rng.integers(0, 256, stored_hw)
    mask = pattern if mask_on == "stored" else orient(pattern, orientation)
    img = save_png(tmp_path / "photo.png", image, orientation)
    msk = save_png(tmp_path / "photo_mask.png", (mask * 255).astype(np.uint8))
    return img, msk, orient(pattern, orientation)


@pytest.mark.parametrize("mask_on", ["stored", "shown"])
def test_orientation_applies_to_image_and_mask_as_their_sizes_say(tmp_path: Path, mask_on: str) -> None:
    img, msk, shown = marked_pair(tmp_path, 6, (4, 7), mask_on)
    assert read_header(img).size == (4, 7)  # (width, height) as shown: orientation 6 is a quarter turn
    image, mask = read_pair(img, msk)
    assert image.shape[:2] == (7, 4)
    assert np.array_equal(image[..., 0] == 255, mask == 255)  # overlap 1, not 0
    assert np.array_equal(mask == 255, shown)


def test_orientation_the_sizes_cannot_tell_is_refused_naming_the_file(tmp_path: Path) -> None:
    img, msk, _ = marked_pair(tmp_path, 3, (5, 5), "stored")
    with pytest.raises(AmbiguousOrientation, match=r"photo\.png carries EXIF orientation 3 \(rotated 180°\)"):
        read_pair(img, msk)


def test_mask_of_neither_size_is_a_mismatch(tmp_path: Path) -> None:
    img, _, _ = marked_pair(tmp_path, 6, (4, 7), "stored")
    save_png(tmp_path / "small.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(SizeMismatch, match=r"small\.png .*EXIF orientation 6"):
        read_pair(img, tmp_path / "small.png")


# -- property-based: anything either loads as what it is or is a DataError naming the file -----
PREFIXES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"BM"]


@st.composite
def png_headers(draw) -> bytes:
    """A PNG signature and a well-formed IHDR chunk of any size, depth and colour type (many invalid)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)),
                       draw(st.sampled_from([1, 2, 4, 8, 16, 3])), draw(st.sampled_from([0, 2, 3, 4, 6, 5])), 0, 0,
                       draw(st.integers(0, 1)))
    chunk = b"IHDR" + ihdr
    return PREFIXES[1] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


@settings(FAST, max_examples=300)
@given(prefix=st.sampled_from(PREFIXES) | png_headers(), body=st.binary(max_size=300),
       suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp"]))
def test_random_bytes_load_or_fail_naming_the_file(tmp_path: Path, prefix: bytes, body: bytes, suffix: str) -> None:
    path = tmp_path / f"random{suffix}"
    path.write_bytes(prefix + body)
    for reader in (read_image, read_mask, image_size):
        try:
            out = reader(path)
        except DataError as err:
            assert str(path) in str(err)
            continue
        if reader is read_image:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        elif reader is read_mask:
            assert out.ndim == 2


# formats and the depths OpenCV writes for them
WRITABLE = {".png": (np.uint8, np.uint16), ".jpg": (np.uint8,), ".bmp": (np.uint8,),
            ".tif": (np.uint8, np.uint16, np.float32)}
LOSSLESS = (".png", ".bmp", ".tif")


@st.composite
def image_files(draw):
    suffix = draw(st.sampled_from(sorted(WRITABLE)))
    dtype = draw(st.sampled_from(WRITABLE[suffix]))
    channels = draw(st.sampled_from([1, 3] if suffix == ".jpg" else [1, 3, 4]))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == np.float32:
        array = rng.random((h, w, channels), dtype=np.float32)
    else:
        array = rng.integers(0, np.iinfo(dtype).max, (h, w, channels), dtype=dtype, endpoint=True)
    if draw(st.booleans()):  # masks: the same value in every channel
        array = np.repeat(array[..., :1], channels, axis=2)
        if channels == 4:
            array[..., 3] = np.iinfo(dtype).max if dtype != np.float32 else 1.0
    return suffix, array


def expected_rgb(array: np.ndarray) -> np.ndarray:
    """What read_image must give for a BGR(A) array as OpenCV wrote it."""
    if array.dtype == np.uint16:
        array = (array.astype(np.uint32) * 255 + 32767) // 65535
    elif array.dtype == np.float32:
        array = np.rint(array * 255)
    rgb = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., 2::-1]
    return rgb.astype(np.uint8)


@settings(FAST, max_examples=200)
@given(image_files())
def test_valid_images_load_as_what_they_are(tmp_path: Path, case) -> None:
    suffix, array = case
    path = tmp_path / f"img{suffix}"
    assert cv2.imwrite(str(path), array)
    h, w = array.shape[:2]
    rgb = read_image(path)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert image_size(path) == (w, h)
    if suffix in LOSSLESS:
        assert np.array_equal(rgb, expected_rgb(array))
    grey = array.shape[2] == 1 or (np.ptp(array[..., :3], axis=2) == 0).all()
    opaque = array.shape[2] < 4 or (array[..., 3] == array[..., 3].flat[0]).all()
    try:
        mask = read_mask(path)
    except NotAMask as err:
        assert str(path) in str(err)
        assert suffix == ".jpg" or not (grey and opaque)  # lossless grey masks are never refused
        return
    assert mask.shape == (h, w)
    if suffix in LOSSLESS:
        assert grey and opaque
        assert np.array_equal(mask, array[..., 0])  # 16-bit and float values kept as stored


@settings(FAST, max_examples=120)
@given(orientation=st.integers(1, 8), h=st.integers(1, 12), w=st.integers(1, 12),
       mask_on=st.sampled_from(["stored", "shown"]), seed=st.integers(0, 1000))
def test_exif_oriented_pairs_align_or_are_refused_naming_the_file(tmp_path: Path, orientation: int, h: int, w: int,
                                                                   mask_on: str, seed: int) -> None:
    img, msk, shown = marked_pair(tmp_path, orientation, (h, w), mask_on, seed)
    try:
        image, mask = read_pair(img, msk)
    except AmbiguousOrientation as err:
        assert str(img) in str(err)
        assert orientation != 1 and orient(np.zeros((h, w)), orientation).shape == (h, w)  # only when sizes agree
        return
    assert np.array_equal(image[..., 0] == 255, mask == 255)
    assert np.array_equal(mask == 255, shown)


@settings(FAST, max_examples=40)
@given(orientation=st.integers(1, 8), h=st.integers(8, 40), w=st.integers(8, 40))
def test_exif_jpeg_photos_are_read_as_shown(tmp_path: Path, orientation: int, h: int, w: int) -> None:
    stored = np.zeros((h, w, 3), np.uint8)
    stored[: h // 2] = 255  # top half white: where it lands tells the turn
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, exif=exif_bytes(orientation), quality=95)
    rgb = read_image(path)
    assert rgb.shape[:2] == orient(stored, orientation).shape[:2]
    assert np.abs(rgb.astype(int) - orient(stored, orientation)).mean() < 20
