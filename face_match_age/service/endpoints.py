"""The service's HTTP interface (FastAPI): POST /compare, /age and /embed take photos as multipart uploads, GET /
is the page, GET /health says what runs, /docs is the OpenAPI page.

    app = create_app(FaceAnalyzer(...), ServiceOptions(max_upload_bytes=8 * 2**20))
    uvicorn.run(app)   # face-match-age serve does this (service/command.py)

The answers are the command line's: /compare returns infer.py's pair record (face_1, face_2, verification,
age_gap, error, age_model, models; built by the same analyzer.pair_result and cli.pair_json), /age every face
of the photo as FaceAnalyzer.predict_age(all_faces=True) gives them, /embed the chosen face's embedding as
FaceAnalyzer.embed. A photo without a face is a 200 whose face is null and whose `error` says so, as in the
CLI's JSON. Bad uploads are HTTP errors with a one-line `detail`, and the service goes on serving:

    415  not an image (bytes of no image format)
    400  an empty upload, or a truncated or damaged image
    413  a request body over the upload limit (refused as it streams in: a body announced larger than the limit
         is never read) or an image over PIL's pixel limit (a decompression bomb, refused before decoding)
    422  a missing field or a field that is not a file upload (FastAPI's validation error)
    503  the device ran out of memory on this batch; the next one is tried afresh

Uploads are bytes only: the service never opens a path a client names, and a file name sent with an upload is
only its label (its last part) in the answer.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from face_match_age.detection.imaging import ImageLoadError, ImageTooLargeError, NotAnImageError, load_image
from face_match_age.service.batching import DEFAULT_MAX_PHOTOS, DEFAULT_MAX_WAIT_S, MicroBatcher
from face_match_age.service.upload_limit import UploadLimit

if TYPE_CHECKING:
    from PIL import Image

    from face_match_age.inference.analyzer import FaceAnalyzer, PhotoAnalysis
    from face_match_age.match_rule import MatchRule

DEFAULT_MAX_UPLOAD_BYTES = 32 * 2**20  # a request body: both photos of /compare together; phone photos are 2-12 MB
PAGE = "page.html"  # beside this module, in the package (and so in the wheel)


@dataclass(frozen=True)
class ServiceOptions:
    """How the service answers, beyond the analyzer's own config.

    rule: when two faces match (a fixed threshold, or per age gap with --calibration); None: the analyzer's config
    verification_threshold. age_model: the results' age_model field ({"loaded": bool, "reason": str | None});
    None: whether the analyzer has an age model. max_upload_bytes: the largest request body. batch_wait_s and
    max_batch_photos: how long the worker waits for more requests to join a batch, and its most photos."""

    rule: MatchRule | None = None
    age_model: dict | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    batch_wait_s: float = DEFAULT_MAX_WAIT_S
    max_batch_photos: int = DEFAULT_MAX_PHOTOS


def page_html() -> str:
    """The page at /: one HTML file with its script and style inline, no other asset."""
    return resources.files("face_match_age.service").joinpath(PAGE).read_text(encoding="utf-8")


def create_app(analyzer: FaceAnalyzer, options: ServiceOptions | None = None) -> FastAPI:
    """The service's FastAPI app over a loaded `analyzer`, which only the app's worker thread runs from now on.
    The thread ends with the app's lifespan (uvicorn's shutdown, or leaving `with TestClient(app)`)."""
    from contextlib import asynccontextmanager

    options = options or ServiceOptions()
    from face_match_age.match_rule import MatchRule

    rule = options.rule or MatchRule(analyzer.config.verification_threshold)
    age_model = options.age_model or _age_model_of(analyzer)
    batcher = MicroBatcher(analyzer, options.batch_wait_s, options.max_batch_photos)
    models = _models(analyzer)
    page = page_html()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(
        title="face-match-age",
        summary="Compare two photos (same person?) and estimate ages, with the models of face-match-age",
        description=__doc__.split("\n\n", 2)[2] if __doc__ else "",  # "": FastAPI's default, for python -OO
        version=_version(),
        lifespan=lifespan,
    )
    app.add_middleware(UploadLimit, limit=options.max_upload_bytes)
    app.state.batcher = batcher

    async def analyzed(photos: list[Image.Image], names: list[str], all_faces: bool) -> list[PhotoAnalysis]:
        import torch

        try:
            return await asyncio.wrap_future(batcher.submit(photos, names, all_faces))
        except torch.OutOfMemoryError as error:
            from face_match_age.error_messages import out_of_memory_message

            advice = "send fewer photos at once, or restart the service with a lower --inference-batch-size"
            raise HTTPException(503, out_of_memory_message(error, "running the networks", advice)) from None

    @app.get("/", response_class=HTMLResponse, summary="The page: compare two photos or age one")
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Whether the service runs, its models, threshold, limits and batches so far")
    async def health() -> dict:
        return {
            "status": "ok",
            "models": models,
            "age_model": age_model,
            "threshold": _threshold_description(rule),
            "max_upload_bytes": options.max_upload_bytes,
            "batching": {
                "max_wait_ms": options.batch_wait_s * 1000,
                "max_photos": options.max_batch_photos,
                **batcher.stats.to_dict(),
            },
        }

    @app.post("/compare", summary="Two photos: their ages and whether they show the same person")
    async def compare(
        image1: Annotated[UploadFile, File(description="the first photo")],
        image2: Annotated[UploadFile, File(description="the second photo")],
        annotated: Annotated[
            bool, Query(description="also return the annotated comparison picture, a base64 JPEG in annotated_jpeg")
        ] = False,
        all_faces: Annotated[
            bool, Query(description="every face of one photo against every face of the other")
        ] = False,
    ) -> dict:
        from face_match_age.cli import pair_json
        from face_match_age.inference.analyzer import pair_result

        started = time.perf_counter()
        photo_1, name_1 = await _read_photo(image1, "image1")
        photo_2, name_2 = await _read_photo(image2, "image2")
        read = time.perf_counter()
        first, second = await analyzed([photo_1, photo_2], [name_1, name_2], all_faces)
        result = pair_json(pair_result(first, second, rule, files=(name_1, name_2)).to_json(), analyzer, age_model)
        result["timings_ms"] = {"read_photos": _ms(read - started), "analyze": _ms(time.perf_counter() - read)}
        if annotated:
            result["annotated_jpeg"] = await run_in_threadpool(_annotated_jpeg, photo_1, photo_2, result)
        result["timings_ms"]["total"] = _ms(time.perf_counter() - started)
        return result

    @app.post("/age", summary="One photo: every face with its box, age, uncertainty and 90% interval")
    async def age(image: Annotated[UploadFile, File(description="the photo")]) -> dict:
        photo, name = await _read_photo(image, "image")
        (analysis,) = await analyzed([photo], [name], all_faces=True)
        faces = [face.to_json() for face in analysis.face_results()]
        return {
            "file": name,
            "size": list(analysis.size) if analysis.size else None,
            "faces": faces,
            "chosen": analysis.chosen,  # the face the face-selection rule picks, which /compare and /embed use
            "error": analysis.error,
            "age_model": age_model,
            "models": models,
        }

    @app.post("/embed", summary="One photo: the 512-d identity embedding of its chosen face")
    async def embed(image: Annotated[UploadFile, File(description="the photo")]) -> dict:
        photo, name = await _read_photo(image, "image")
        (analysis,) = await analyzed([photo], [name], all_faces=False)
        face, chosen = analysis.face, analysis.chosen_result()
        return {
            "file": name,
            "face": None if chosen is None else chosen.to_json(),
            "embedding": None if face is None else [float(v) for v in face.computed_embedding()],
            "error": analysis.error,
            "models": models,
        }

    return app


async def _read_photo(upload: UploadFile, field: str) -> tuple[Image.Image, str]:
    """The upload decoded by the project's one image loader (in a worker thread: decoding is CPU work), and its
    label: the last part of the file name the client sent, or the field's name."""
    name = Path(upload.filename or field).name or field
    data = await upload.read()  # within the upload limit: UploadLimit stops a larger body as it streams in
    if not data:
        raise HTTPException(400, f"{field} ({name}) is empty: send the photo's bytes")
    try:
        photo = await run_in_threadpool(load_image, data, f"{name} (field {field})")
    except NotAnImageError as error:
        raise HTTPException(415, str(error)) from None
    except ImageTooLargeError as error:
        raise HTTPException(413, str(error)) from None
    except ImageLoadError as error:
        raise HTTPException(400, str(error)) from None
    return photo, name


def _annotated_jpeg(photo_1: Image.Image, photo_2: Image.Image, result: dict) -> str:
    """infer.py's annotated comparison picture for `result`, as base64 JPEG text."""
    from face_match_age.inference.annotate import comparison_image

    buffer = io.BytesIO()
    comparison_image(photo_1, photo_2, result).save(buffer, format="JPEG", quality=92)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _models(analyzer: FaceAnalyzer) -> dict:
    """The `models` block of infer.py's pair JSON (cli.pair_json builds it; one place says what it holds)."""
    from face_match_age.cli import pair_json

    return pair_json({}, analyzer, {})["models"]


def _age_model_of(analyzer: FaceAnalyzer) -> dict:
    loaded = analyzer.age_model is not None
    return {"loaded": loaded, "reason": None if loaded else "the service runs without an age model (--no-age)"}


def _threshold_description(rule: MatchRule) -> dict:
    if rule.by_age_gap:
        return {"kind": "calibrated", "calibration": rule.source}
    return {"kind": "fixed", "value": rule.threshold}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("face-match-age")
    except PackageNotFoundError:
        return "unknown"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
