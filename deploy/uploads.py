"""What the service checks in an upload before a predictor decodes it: its declared type, its size, the
pixel count its header announces, and for a video its duration, read by probing the container.

A 48 KB PNG can announce 20000×20000 pixels: decoding it takes 2.5 GB and seconds of CPU. The header
tells the size without decoding, so such a file is refused before any pixel is allocated; a video is
likewise measured from its container (and at most its packets, never its frames) before it is decoded.

Every refusal is an :class:`UploadRefused` carrying the HTTP status and a message naming the problem and
the limit. Uses Pillow (image headers) and PyAV (containers) only, both on the Pi path.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from dataclasses import dataclass

from datamodules.images import IMAGE_EXTENSIONS as FRAME_EXTENSIONS
from datamodules.video import VIDEO_EXTENSIONS

#: content types accepted per upload kind (what browsers, curl and requests send for these files)
CONTENT_TYPES: dict[str, tuple[str, ...]] = {
    "image": ("image/jpeg", "image/png", "image/bmp", "image/x-ms-bmp", "image/webp", "image/tiff"),
    "video": ("video/mp4", "video/x-msvideo", "video/avi", "video/msvideo", "video/x-matroska", "video/webm",
              "video/quicktime", "video/x-m4v", "video/mpeg"),
    "archive": ("application/zip", "application/x-zip-compressed", "application/x-zip"),
}
#: file extensions per kind, for clients that send no type or ``application/octet-stream`` (curl -F
#: does so for videos): the extension is then the declaration, and the content is checked anyway
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"),
    "video": VIDEO_EXTENSIONS,
    "archive": (".zip",),
}
#: the extension a predictor sees for an upload named without one (predictors pick readers by extension)
TYPE_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/bmp": ".bmp", "image/x-ms-bmp": ".bmp",
                   "image/webp": ".webp", "image/tiff": ".tif", "video/mp4": ".mp4", "video/x-msvideo": ".avi",
                   "video/avi": ".avi", "video/msvideo": ".avi", "video/x-matroska": ".mkv", "video/webm": ".webm",
                   "video/quicktime": ".mov", "video/x-m4v": ".m4v", "video/mpeg": ".mpg", "application/zip": ".zip",
                   "application/x-zip-compressed": ".zip", "application/x-zip": ".zip"}
UNTYPED = ("", "application/octet-stream")
ARTICLES = {"image": "an image", "video": "a video", "archive": "a .zip of frames"}
#: video length per task when --max-video-seconds is not given: behavior scans long recordings window by
#: window, violence samples a fixed number of frames of a clip, relevance decodes every frame of an event
TASK_VIDEO_SECONDS = {"behavior": 600.0, "violence": 120.0, "relevance": 30.0}
DEFAULT_VIDEO_SECONDS = 60.0


class UploadRefused(Exception):
    """An upload the service will not run: ``status`` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class Limits:
    """The service's bounds; every one is a command-line option of ``python -m deploy.service``."""

    max_bytes: int = 8 * 2**20  # an image or a .zip upload
    max_video_bytes: int = 100 * 2**20
    max_pixels: int = 25_000_000  # width × height of an image, a video frame or a frame in a .zip (6000×4000 fits)
    max_video_seconds: float | None = None  # None: the task's (TASK_VIDEO_SECONDS)
    max_archive_frames: int = 256  # images in a .zip (one event's frames)
    max_archive_bytes: int = 256 * 2**20  # their uncompressed total
    # frames × width × height of an upload a predictor decodes whole (a .zip, a relevance video): 200 M
    # pixels are 600 MB of RGB
    max_total_pixels: int = 200_000_000
    max_in_flight: int = 1  # predictions run at once (one model on a few cores: more only competes)
    max_queue: int = 8  # requests waiting for a slot; beyond: 503
    retry_after_s: int = 2

    def max_upload_bytes(self, kind: str) -> int:
        return self.max_video_bytes if kind == "video" else self.max_bytes

    def video_seconds(self, task: str) -> float:
        if self.max_video_seconds is not None:
            return self.max_video_seconds
        return TASK_VIDEO_SECONDS.get(task, DEFAULT_VIDEO_SECONDS)


def upload_kind(content_type: str | None, filename: str | None, kinds: tuple[str, ...]) -> str:
    """Which of the accepted ``kinds`` the upload declares itself to be; 415 naming the accepted types if none."""
    declared = (content_type or "").split(";")[0].strip().lower()
    ext = os.path.splitext(filename or "")[1].lower()
    for kind in kinds:
        if declared in CONTENT_TYPES[kind] or (declared in UNTYPED and ext in EXTENSIONS[kind]):
            return kind
    accepted = ", ".join(t for kind in kinds for t in CONTENT_TYPES[kind])
    raise UploadRefused(415, f"unsupported content type '{declared or 'none'}' for '{filename or 'upload'}': "
                             f"upload {' or '.join(ARTICLES[k] for k in kinds)} ({accepted})")


def upload_name(filename: str | None, content_type: str | None, kind: str) -> str:
    """The upload's file name, with the extension of its declared type when it has none of its kind."""
    name = os.path.basename(filename or "") or "upload"
    if os.path.splitext(name)[1].lower() in EXTENSIONS[kind]:
        return name
    declared = (content_type or "").split(";")[0].strip().lower()
    return name + TYPE_EXTENSIONS.get(declared, EXTENSIONS[kind][0])


def check_size(data: bytes, limit: int, kind: str) -> None:
    if len(data) > limit:
        raise UploadRefused(413, f"{kind} larger than the {limit} byte limit")
    if not data:
        raise UploadRefused(400, f"empty upload: no {kind} bytes")


def check_image(data: bytes, max_pixels: int, filename: str = "upload") -> tuple[int, int]:
    """``(width, height)`` from the image's header; 400 if it has none Pillow knows, 413 past ``max_pixels``."""
    width, height = image_header_size(data, filename)
    if width * height > max_pixels:
        raise UploadRefused(413, f"{filename}: the image is {width}×{height} pixels ({width * height}), more than the "
                                 f"{max_pixels} pixel limit: send a smaller image")
    return width, height


def image_header_size(data: bytes, filename: str = "upload") -> tuple[int, int]:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.size
        except Image.DecompressionBombError:
            return _size_past_pillow_limit(data, filename)
        except (OSError, SyntaxError, ValueError, EOFError):
            # UnidentifiedImageError is an OSError; a truncated header raises the others
            raise UploadRefused(400, f"{filename}: not a decodable image (JPEG, PNG, BMP, WebP or TIFF expected)") \
                from None


def _size_past_pillow_limit(data: bytes, filename: str) -> tuple[int, int]:
    """Pillow's ``open`` refuses an image past twice its own bomb limit before telling its size; its format
    plugins read the header without that check, so the refusal can still name the dimensions."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and accept(prefix) is not True:
            continue
        try:
            return factory(io.BytesIO(data), filename).size
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError):
            continue
    raise UploadRefused(413, f"{filename}: the image has more pixels than Pillow's bomb limit")


def check_archive(data: bytes, limits: Limits, filename: str = "upload") -> int:
    """A .zip of frames: 400 if it is no zip, 413 past ``max_archive_frames`` images, ``max_archive_bytes``
    uncompressed (as its directory declares: zipfile never inflates a member past its declared size), an
    image past ``max_pixels`` or images past ``max_total_pixels`` together (headers only). Returns the
    number of images."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UploadRefused(400, f"{filename}: not a zip archive") from None
    with archive:
        frames = [i for i in archive.infolist()
                  if not i.is_dir() and os.path.splitext(i.filename)[1].lower() in FRAME_EXTENSIONS]
        if len(frames) > limits.max_archive_frames:
            raise UploadRefused(413, f"{filename}: {len(frames)} images, more than the {limits.max_archive_frames} "
                                     "image limit of an archive")
        total = sum(i.file_size for i in frames)
        if total > limits.max_archive_bytes:
            raise UploadRefused(413, f"{filename}: {total} bytes uncompressed, more than the "
                                     f"{limits.max_archive_bytes} byte limit of an archive")
        pixels = 0
        for info in frames:
            try:
                member = archive.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
                raise UploadRefused(400, f"{filename}: {info.filename} does not unpack ({err})") from None
            width, height = check_image(member, limits.max_pixels, f"{filename}: {info.filename}")
            pixels += width * height
            if pixels > limits.max_total_pixels:
                raise UploadRefused(413, f"{filename}: the images up to {info.filename} hold {pixels} pixels, more "
                                         f"than the {limits.max_total_pixels} pixel limit of an upload")
    return len(frames)


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    seconds: float
    fps: float


def check_video(data: bytes, max_seconds: float, max_pixels: int, filename: str = "upload",
                max_total_pixels: int | None = None) -> VideoInfo:
    """Probe the container (PyAV): 400 if it holds no decodable video stream, 413 if it lasts longer than
    ``max_seconds``, its frames are larger than ``max_pixels`` or (when given, for a predictor that decodes
    every frame) all its frames hold more than ``max_total_pixels``. Only the first frame is decoded."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError):
        raise UploadRefused(400, f"{filename}: not a decodable video (MP4, AVI, MKV, WebM or MOV expected)") from None
    with container:
        if not container.streams.video:
            raise UploadRefused(400, f"{filename}: the file holds no video stream")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width * height > max_pixels:
            raise UploadRefused(413, f"{filename}: the video's frames are {width}×{height} pixels, more than the "
                                     f"{max_pixels} pixel limit")
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        seconds = _duration(container, stream, max_seconds)
        if seconds > max_seconds:
            raise UploadRefused(413, f"{filename}: the video lasts {seconds:.1f} s, more than the {max_seconds:g} s "
                                     "limit: cut it into shorter parts")
        total = seconds * fps * width * height
        if max_total_pixels is not None and total > max_total_pixels:
            raise UploadRefused(413, f"{filename}: {seconds:.1f} s of {width}×{height} at {fps:g} fps hold "
                                     f"{total:.0f} pixels, more than the {max_total_pixels} pixel limit of an "
                                     "upload: send a shorter or smaller video")
        try:
            container.seek(0)
            next(container.decode(stream))
        except (av.FFmpegError, StopIteration, ValueError):
            raise UploadRefused(400, f"{filename}: the video stream does not decode") from None
    return VideoInfo(width, height, seconds, fps)


def _duration(container: object, stream: object, max_seconds: float) -> float:
    """The stream's duration from its header, else the container's, else the last packet timestamp
    (demuxing only, stopping past ``max_seconds``): some WebM and AVI writers leave the header empty."""
    import av

    if stream.duration and stream.time_base:  # type: ignore[attr-defined]
        return float(stream.duration * stream.time_base)  # type: ignore[attr-defined]
    if container.duration:  # type: ignore[attr-defined]
        return container.duration / av.time_base  # type: ignore[attr-defined]
    end = 0.0
    try:
        for packet in container.demux(stream):  # type: ignore[attr-defined]
            if packet.pts is not None and packet.time_base:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                if end > max_seconds:
                    break
    except av.FFmpegError:
        pass  # a broken tail: the decode check that follows refuses what cannot be read
    return end
