"""One HTTP inference service for any task's exported bundle (FastAPI + uvicorn).

    python -m deploy.service --bundle <run dir>/export [--host 127.0.0.1] [--port 8000] [key=value ...]
    python -m deploy.service --run <run dir> [--ckpt best]      # a checkpoint through PyTorch (no export)

- ``POST /predict``: multipart field ``file`` holding an image (segmentation, lego), a video (behavior,
  violence) or one motion event as a .zip of its frames or a short video (relevance) -> the task
  predictor's answer (``Predictor.predict_bytes``) plus ``inference_ms``;
- ``GET /metadata``: task, heads and classes, input spec, accepted uploads and limits, options, model hashes;
- ``GET /health``: liveness and the queue (in flight, waiting).

Refusals, each with a message naming the problem and the limit: a content type the task does not take
(415), bytes that do not decode (400), an upload over the byte limit (413), an image whose header announces
more pixels than ``--max-pixels``, a video longer than ``--max-video-seconds``, a .zip past its frame, byte
or pixel limits (413, all read from headers before decoding), no ``file`` field (422), a full queue (503
with ``Retry-After``). A predictor's user error (bad content) is a 400; anything else a 500 whose traceback
stays in the service log. Predictions run in worker threads, at most ``--max-in-flight`` at once, so
``/health`` answers while a model runs.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deploy.backends import PREPROCESSING_JSON, is_bundle
from deploy.uploads import (
    Limits,
    UploadRefused,
    check_archive,
    check_image,
    check_size,
    check_video,
    upload_kind,
    upload_name,
)
from suite.errors import UserError

log = logging.getLogger("deploy.service")

#: the upload kinds each task's predictor takes in ``predict_bytes``
TASK_UPLOADS: dict[str, tuple[str, ...]] = {
    "segmentation": ("image",),
    "lego": ("image",),
    "relevance": ("archive", "video"),  # one motion event: a .zip of its frames or a short video
    "behavior": ("video",),
    "violence": ("video",),
}
#: tasks whose predictor decodes every frame of an uploaded video (their videos get a total pixel limit)
DECODES_EVERY_FRAME = frozenset({"relevance"})
FIELD = "file"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file bytes
EXPORT_HINT = ("a bundle is the folder an export writes: <graph>.onnx files beside preprocessing.json (and "
               "parity.json); train.py writes one to <run dir>/export/ when a run ends (callbacks.onnx_export), "
               "a finished run is exported with `python export.py <run dir>`; serve it with "
               "--bundle <run dir>/export")


class Gate:
    """Admission: at most ``in_flight`` predictions run (worker threads) and ``queue`` wait; the next request
    is refused at once (503) instead of piling up memory and latency."""

    def __init__(self, in_flight: int, queue: int):
        self.capacity = in_flight + queue
        self.limiter = anyio.CapacityLimiter(in_flight)
        self.pending = 0  # admitted and not answered; only touched on the event loop, so no lock

    def admit(self, retry_after_s: int) -> None:
        if self.pending >= self.capacity:
            raise UploadRefused(503, f"busy: {self.running} prediction(s) running and {self.waiting} waiting "
                                     f"(queue of {self.capacity}): retry in {retry_after_s} s",
                                headers={"Retry-After": str(retry_after_s)})
        self.pending += 1

    def leave(self) -> None:
        self.pending -= 1

    @property
    def running(self) -> int:
        return int(self.limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        return self.pending - self.running


def create_app(source: str | Path | Any, limits: Limits | None = None, *, options: dict[str, Any] | None = None,
               ckpt: str = "best", threads: int = 1, predictor: Any = None) -> FastAPI:
    """The service around one model, loaded once. ``source`` is a bundle folder, a run dir (PyTorch) or a
    backend object (``deploy.backends.Backend``); ``predictor`` replaces the task's own (tests)."""
    from deploy.backends import open_backend
    from deploy.predictors import predictor_for

    limits = limits or Limits()
    backend = open_backend(source, ckpt=ckpt, threads=threads) if isinstance(source, str | Path) else source
    predictor = predictor if predictor is not None else predictor_for(backend, options)
    meta = backend.meta
    task = str(meta.get("task"))
    # a predictor may name its upload kinds itself (class attribute ``uploads``); else the task's
    kinds = tuple(getattr(predictor, "uploads", None) or TASK_UPLOADS.get(task, ("image",)))
    gate = Gate(limits.max_in_flight, limits.max_queue)
    app = FastAPI(title=f"{task} inference", version="1",
                  description="POST /predict an upload (multipart field 'file'); GET /metadata, /health.")
    app.state.predictor, app.state.gate, app.state.limits = predictor, gate, limits

    @app.exception_handler(UploadRefused)
    async def refused(request: Request, err: UploadRefused) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status, headers=err.headers)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "task": task, "backend": backend.name, "in_flight": gate.running,
                "waiting": gate.waiting, "capacity": gate.capacity}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return service_metadata(backend, predictor, kinds, limits)

    @app.post("/predict", openapi_extra=_multipart_doc())
    async def predict(request: Request) -> dict[str, Any]:
        cap = max(limits.max_upload_bytes(k) for k in kinds)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap + MULTIPART_SLACK:
            raise UploadRefused(413, f"upload of {declared} bytes: larger than the {cap} byte limit")
        gate.admit(limits.retry_after_s)
        try:
            filename, content_type, data = await _read_upload(request, cap + MULTIPART_SLACK)
            kind = upload_kind(content_type, filename, kinds)
            filename = upload_name(filename, content_type, kind)
            check_size(data, limits.max_upload_bytes(kind), kind)
            if kind == "image":
                check_image(data, limits.max_pixels, filename)
            else:  # reads a container or an archive: off the event loop
                await anyio.to_thread.run_sync(_check_container, kind, data, filename)
            start = time.perf_counter()
            result = await anyio.to_thread.run_sync(_guarded(predictor.predict_bytes), data, filename,
                                                    limiter=gate.limiter)
        finally:
            gate.leave()
        return {**result, "inference_ms": round((time.perf_counter() - start) * 1000, 2)}

    def _check_container(kind: str, data: bytes, filename: str) -> None:
        if kind == "archive":
            check_archive(data, limits, filename)
        else:
            check_video(data, limits.video_seconds(task), limits.max_pixels, filename,
                        limits.max_total_pixels if task in DECODES_EVERY_FRAME else None)

    return app


def service_metadata(backend: Any, predictor: Any, kinds: tuple[str, ...], limits: Limits) -> dict[str, Any]:
    """What a client needs to call the service and to know which model answers."""
    from deploy.uploads import CONTENT_TYPES, EXTENSIONS

    meta = backend.meta
    return {
        "task": meta.get("task"),
        "format": meta.get("format"),
        "heads": meta.get("heads", []),
        "input": meta.get("input"),
        "graphs": {name: {k: g.get(k) for k in ("input", "outputs", "input_shape")}
                   for name, g in (meta.get("graphs") or {}).items()},
        "uploads": {kind: {"field": FIELD, "content_types": list(CONTENT_TYPES[kind]),
                           "extensions": list(EXTENSIONS[kind]), "max_bytes": limits.max_upload_bytes(kind)}
                    for kind in kinds},
        "limits": {"max_pixels": limits.max_pixels, "max_video_seconds": limits.video_seconds(str(meta.get("task"))),
                   "max_total_pixels": limits.max_total_pixels, "max_archive_frames": limits.max_archive_frames,
                   "max_archive_bytes": limits.max_archive_bytes, "max_in_flight": limits.max_in_flight,
                   "max_queue": limits.max_queue},
        "options": getattr(predictor, "options", {}),
        "bundle_options": meta.get("options", {}),
        "model": {"backend": backend.name, "sha256": dict(getattr(backend, "hashes", {}))},
    }


async def _read_upload(request: Request, cap: int) -> tuple[str, str, bytes]:
    """``(filename, content type, bytes)`` of the ``file`` part, reading at most ``cap`` bytes of body:
    a client that sends no Content-Length (chunked) cannot push more than that either."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise UploadRefused(422, f"send the upload as multipart/form-data in the field '{FIELD}' "
                                 f"(curl -F {FIELD}=@<path> ...)")

    async def capped() -> AsyncIterator[bytes]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > cap:
                raise UploadRefused(413, f"upload larger than the {cap - MULTIPART_SLACK} byte limit")
            yield chunk

    try:
        form = await MultiPartParser(request.headers, capped(), max_files=1, max_fields=8).parse()
    except MultiPartException as err:
        raise UploadRefused(400, f"malformed multipart body: {err.message}") from None
    try:
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise UploadRefused(422, f"no file in the field '{FIELD}' (curl -F {FIELD}=@<path> ...)")
        return upload.filename or "upload", upload.content_type or "", await upload.read()
    finally:
        await form.close()


def _guarded(fn: Callable[[bytes, str], dict[str, Any]]) -> Callable[[bytes, str], dict[str, Any]]:
    """A predictor's user error (content it cannot use) becomes a 400 naming it; anything else a 500 with a
    one-line message, the traceback going to the service log instead of the client."""

    def call(data: bytes, filename: str) -> dict[str, Any]:
        try:
            return fn(data, filename)
        except UserError as err:
            raise UploadRefused(400, str(err)) from None
        except Exception as err:
            log.exception("prediction failed for %s", filename)
            raise UploadRefused(500, f"internal error ({type(err).__name__}) predicting {filename}; "
                                     "the traceback is in the service log") from None

    return call


def _multipart_doc() -> dict[str, Any]:
    """The request body for the OpenAPI page: the endpoint reads the body itself (to cap it)."""
    schema = {"type": "object", "required": [FIELD],
              "properties": {FIELD: {"type": "string", "format": "binary"}}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def check_bundle_dir(path: Path) -> Path:
    """``path`` if it is an exported bundle; otherwise a UserError saying what it is and what a bundle is."""
    if not path.exists():
        raise UserError(f"--bundle {path}: no such folder; {EXPORT_HINT}")
    if is_bundle(path):
        return path
    if (path / "config" / PREPROCESSING_JSON).is_file() and (path / "models").is_dir():
        beside = (f"the bundle beside it: --bundle {path.parent}" if is_bundle(path.parent) else EXPORT_HINT)
        raise UserError(f"--bundle {path} is a LEGO Raspberry Pi bundle (export.py's pi_bundle/): serve it with "
                        f"`python -m deploy.lego_service --bundle {path}`, or serve {beside}")
    if (path / "export" / PREPROCESSING_JSON).is_file():
        raise UserError(f"--bundle {path} is a training run: its bundle is {path / 'export'} "
                        f"(or serve the checkpoint with --run {path})")
    if (path / "checkpoints").is_dir() or (path / ".hydra").is_dir():
        raise UserError(f"--bundle {path} is a training run, not a bundle (or serve its checkpoint through PyTorch "
                        f"with --run {path}); {EXPORT_HINT}")
    raise UserError(f"--bundle {path} is not a bundle: {PREPROCESSING_JSON} is missing; {EXPORT_HINT}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="python -m deploy.service", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="exported bundle folder (<run dir>/export)")
    source.add_argument("--run", type=Path, help="a training run dir: its checkpoint through PyTorch")
    parser.add_argument("options", nargs="*", metavar="key=value", help="the task predictor's options")
    parser.add_argument("--ckpt", default="best", help="checkpoint of --run: best, last or a file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of ONNX Runtime / torch")
    parser.add_argument("--max-bytes", type=int, default=defaults.max_bytes, help="largest image upload")
    parser.add_argument("--max-video-bytes", type=int, default=defaults.max_video_bytes, help="largest video")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels,
                        help="largest width×height of an image or a video frame, read from its header")
    parser.add_argument("--max-video-seconds", type=float, default=None,
                        help="longest video (default per task: behavior 600, violence 120, relevance 30)")
    parser.add_argument("--max-total-pixels", type=int, default=defaults.max_total_pixels,
                        help="frames × width × height of an upload decoded whole (a .zip, a relevance video)")
    parser.add_argument("--max-archive-frames", type=int, default=defaults.max_archive_frames,
                        help="images in a .zip upload")
    parser.add_argument("--max-archive-bytes", type=int, default=defaults.max_archive_bytes,
                        help="uncompressed bytes of the images in a .zip upload")
    parser.add_argument("--max-in-flight", type=int, default=defaults.max_in_flight,
                        help="predictions running at once")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="requests waiting for a prediction slot; more get 503")
    args = parser.parse_args(argv)
    bad = [o for o in args.options if "=" not in o]
    if bad:
        parser.error(f"options are key=value, got {bad}")
    for name in ("threads", "max_bytes", "max_video_bytes", "max_pixels", "max_in_flight", "max_total_pixels",
                 "max_archive_frames", "max_archive_bytes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_queue < 0 or (args.max_video_seconds is not None and args.max_video_seconds <= 0):
        parser.error("--max-queue must be >= 0 and --max-video-seconds > 0")
    return args


def build(args: argparse.Namespace) -> FastAPI:
    from deploy.backends import BundleError

    limits = Limits(max_bytes=args.max_bytes, max_video_bytes=args.max_video_bytes, max_pixels=args.max_pixels,
                    max_video_seconds=args.max_video_seconds, max_total_pixels=args.max_total_pixels,
                    max_archive_frames=args.max_archive_frames, max_archive_bytes=args.max_archive_bytes,
                    max_in_flight=args.max_in_flight, max_queue=args.max_queue)
    source = check_bundle_dir(args.bundle) if args.bundle is not None else args.run
    try:
        return create_app(source, limits, options=dict(o.split("=", 1) for o in args.options), ckpt=args.ckpt,
                          threads=args.threads)
    except BundleError as err:
        raise UserError(f"{err}; {EXPORT_HINT}") from None


def serve(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    app = build(args)
    import uvicorn

    # uvicorn answers 503 itself past this many open connections: the gate's queue plus room for /health
    uvicorn.run(app, host=args.host, port=args.port,
                limit_concurrency=args.max_in_flight + args.max_queue + 16)


def main(argv: list[str] | None = None) -> None:
    from suite.errors import run_guarded

    run_guarded(serve, argv)


if __name__ == "__main__":
    main()
