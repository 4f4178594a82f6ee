"""HTTP inference service for the LEGO classifier's Raspberry Pi bundle (FastAPI + uvicorn).

    python -m deploy.lego_service --bundle <run>/export/pi_bundle [--host 0.0.0.0] [--port 8000]

The service for every task's exported bundle is ``python -m deploy.service`` (docs/service.md); this one
serves the ``pi_bundle/`` that ``export.py`` writes (int8 model, ``config/*.json``), and hands an exported
bundle (``preprocessing.json`` at its root) to ``deploy.service``.

``POST /predict`` with a multipart field ``file`` holding a JPEG/PNG/BMP/WebP/TIFF image returns
``{part_id, part_confidence, color_id, color_confidence}``; ``GET /health`` returns the model and
its classes. Rejected uploads get a 4xx with a message: a content type that is not an image (415),
more than ``--max-bytes`` (413), bytes that do not decode as an image (400), no file (422).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, UploadFile

from deploy.onnx_predictor import ClassifierLoader, ImageDecodeError

ALLOWED_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/webp", "image/tiff", "image/x-ms-bmp")
DEFAULT_MAX_BYTES = 5 * 2**20


def create_app(bundle_dir: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, threads: int = 1) -> FastAPI:
    """The service around one bundle, loaded once at start-up."""
    loader = ClassifierLoader(bundle_dir, threads=threads)
    app = FastAPI(title="LEGO classifier", version="1")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": str(loader.model_path), "outputs": loader.output_names,
                "parts": len(loader.part_names), "colors": len(loader.color_names),
                "image_size": loader.config.get("size"), "max_bytes": max_bytes}

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
        content_type = (file.content_type or "").split(";")[0].strip().lower()
        if content_type not in ALLOWED_TYPES:
            raise HTTPException(
                status_code=415,
                detail=f"unsupported content type '{content_type or 'none'}': upload an image "
                       f"({', '.join(ALLOWED_TYPES[:5])})",
            )
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(status_code=413, detail=f"image larger than the {max_bytes} byte limit")
        start = time.perf_counter()
        try:
            result = loader.predict(data)
        except ImageDecodeError as err:
            raise HTTPException(status_code=400, detail=f"{file.filename or 'upload'}: {err}") from None
        result["inference_ms"] = round((time.perf_counter() - start) * 1000, 2)
        return result

    return app


def check_pi_bundle(path: Path) -> Path:
    """``path`` if it holds a Pi bundle's files; otherwise a UserError saying what a bundle is."""
    from suite.errors import UserError

    missing = [rel for rel in ("config/preprocessing.json", "config/part_names.json", "config/color_names.json")
               if not (path / rel).is_file()]
    if missing:
        raise UserError(f"--bundle {path} is not a LEGO Pi bundle ({', '.join(missing)} missing): a Pi bundle is the "
                        "pi_bundle/ folder `make export-pi RUN=<run dir>` writes (<run dir>/export/pi_bundle)")
    return path


def serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a LEGO classifier bundle over HTTP (POST /predict).")
    parser.add_argument("--bundle", type=Path, required=True, help="pi_bundle folder written by export.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest accepted upload")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    from deploy.backends import is_bundle

    if is_bundle(args.bundle):  # an exported bundle of any task: the generic service
        from deploy import service

        service.serve(["--bundle", str(args.bundle), "--host", args.host, "--port", str(args.port),
                       "--max-bytes", str(args.max_bytes), "--threads", str(args.threads)])
        return
    app = create_app(check_pi_bundle(args.bundle), args.max_bytes, args.threads)
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port)


def main(argv: list[str] | None = None) -> None:
    from suite.errors import run_guarded

    run_guarded(serve, argv)


if __name__ == "__main__":
    main()
