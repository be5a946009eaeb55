"""The web page of an index: FastAPI app with a JSON API and one HTML page (plain JS).

    app = create_app(Searcher("photos.index"))          # then: uvicorn.run(app, port=8000)

API (every answer JSON; an error is ``{"detail": "..."}`` with a 4xx status):
- ``GET /api/search?text=...&k=10`` and ``POST /api/search?k=10`` (multipart field ``image``):
  ``{"results": [{"path": ..., "score": ...}, ...]}``, paths relative to the indexed folder;
- ``GET /api/similar?path=...&k=10``: "more like this" for an indexed image;
- ``POST /api/classify`` (multipart ``image`` and ``classes``, e.g. ``cat, dog, car``):
  ``{"labels": [{"label": ..., "score": ...}, ...]}``, best first;
- ``GET /api/info``: the index's size, version and model, and whether captions/questions work;
- ``GET /api/caption?path=...``, ``POST /api/ask`` (form ``path``, ``question``): with ``--captioner``.

``/images/PATH`` and ``/thumbs/PATH`` serve only files the index holds (anything else: 404; a
path that leads outside the indexed folder, e.g. through a link: 403). Thumbnails are written
once into ``INDEX/thumbs/`` by content hash. An upload larger than ``max_upload_bytes`` gets 413,
one that is no image 400; the server carries on. Each request first looks for a newer version of
the index (``vlkit index update``) and keeps answering from the one in memory while it reads it.
"""

import contextlib
import io
from importlib import resources
from pathlib import Path
from typing import Annotated

from PIL import Image

from ..data.images import ImageError, load_image
from ..files import write_file
from .extras import require
from .query import Hit, Searcher
from .store import THUMBS_FOLDER

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_K = 200
THUMB_SIZE = 256


def _results(hits: list[Hit]) -> dict:
    return {"results": [h.to_dict() for h in hits]}


def create_app(searcher: Searcher, *, assistant=None, max_upload_bytes: int = MAX_UPLOAD_BYTES):
    """The FastAPI app serving ``searcher``'s index (module docstring); ``assistant``
    (:class:`vlkit.search.assist.Assistant`) adds captions and questions."""
    try:
        require("python_multipart", "python-multipart")
    except ImportError:  # python-multipart before 0.0.13
        require("multipart", "python-multipart")
    fastapi = require("fastapi")
    from fastapi import File, Form, HTTPException, Query, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    app = fastapi.FastAPI(title="vlkit search", docs_url=None, redoc_url=None)
    page = resources.files("vlkit.search").joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(ValueError)
    async def _bad_input(request: Request, error: ValueError):  # a query the model cannot take
        return JSONResponse({"detail": str(error).splitlines()[0]}, status_code=400)

    @app.middleware("http")
    async def _refresh(request: Request, call_next):
        if request.url.path.startswith(("/api/", "/images/", "/thumbs/")):
            with contextlib.suppress(OSError, ValueError):  # the index moved or is damaged: keep the one in memory
                await run_in_threadpool(searcher.refresh)
        return await call_next(request)

    def check_k(k: int) -> int:
        if not 1 <= k <= MAX_K:
            raise HTTPException(400, f"k must be between 1 and {MAX_K}, got {k}")
        return k

    async def read_upload(request: Request, image: UploadFile) -> Image.Image:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            raise HTTPException(413, f"upload too large: over {max_upload_bytes} bytes")
        data = await image.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload too large: over {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "the uploaded file is empty")
        try:
            return load_image(io.BytesIO(data))
        except ImageError as e:
            raise HTTPException(400, f"{image.filename or 'upload'} is not a readable image ({e.reason})") from None

    def indexed_file(path: str) -> tuple[Path, str]:
        """The file of the indexed image ``path`` and its content hash, or 404/403."""
        data = searcher.data
        row = data.positions.get(path)
        if row is None:
            raise HTTPException(404, "no such image in the index")
        root = data.root.resolve()
        full = (root / path).resolve()
        if not full.is_relative_to(root):
            raise HTTPException(403, "outside the indexed folder")
        if not full.is_file():
            raise HTTPException(404, "the image file is gone (run `vlkit index update`)")
        return full, data.entries[row].sha256

    @app.get("/", response_class=HTMLResponse)
    def index_page():
        return page

    @app.get("/api/info")
    def info():
        data = searcher.data
        return {
            "images": len(data.entries),
            "version": data.version,
            "model": data.info.get("model"),
            "ann": data.info.get("ann"),
            "captions": assistant is not None or any(e.caption is not None for e in data.entries),
            "questions": assistant is not None and assistant.can_answer,
        }

    @app.get("/api/search")
    def search_text(text: Annotated[str, Query(max_length=1000)], k: int = 10):
        return _results(searcher.search_text(text, check_k(k)))

    @app.post("/api/search")
    async def search_image(request: Request, image: Annotated[UploadFile, File()], k: int = 10):
        k = check_k(k)
        picture = await read_upload(request, image)
        return _results(await run_in_threadpool(searcher.search_image, picture, k))

    @app.get("/api/similar")
    def similar(path: str, k: int = 10):
        if path not in searcher.data.positions:
            raise HTTPException(404, "no such image in the index")
        return _results(searcher.similar(path, check_k(k)))

    @app.post("/api/classify")
    async def classify(
        request: Request, image: Annotated[UploadFile, File()], classes: Annotated[str, Form(max_length=2000)]
    ):
        names = [c.strip() for c in classes.split(",") if c.strip()]
        if len(names) < 2:
            raise HTTPException(400, "give at least two comma-separated classes")
        picture = await read_upload(request, image)
        hits = await run_in_threadpool(searcher.classify, picture, names)
        return {"labels": [{"label": h.path, "score": h.score} for h in hits]}

    def need_assistant(what: str):
        if assistant is None:
            raise HTTPException(404, f"{what} needs a captioning model: start the server with --captioner")
        return assistant

    @app.get("/api/caption")
    def caption(path: str):
        full, _ = indexed_file(path)
        stored = searcher.data.entries[searcher.data.positions[path]].caption
        if assistant is None and stored is not None:  # written by `vlkit index build --captioner`
            return {"path": path, "caption": stored}
        helper = need_assistant("captioning")
        return {"path": path, "caption": helper.caption(load_image(full))}

    @app.post("/api/ask")
    def ask(path: Annotated[str, Form()], question: Annotated[str, Form(max_length=500)]):
        helper = need_assistant("asking")
        full, _ = indexed_file(path)
        return {"path": path, "question": question, "answer": helper.ask(load_image(full), question)}

    @app.get("/images/{path:path}")
    def image_file(path: str):
        full, _ = indexed_file(path)
        return FileResponse(full)

    @app.get("/thumbs/{path:path}")
    def thumbnail(path: str):
        full, sha = indexed_file(path)
        thumb = searcher.folder / THUMBS_FOLDER / f"{sha}-{THUMB_SIZE}.jpg"
        if not thumb.is_file():
            picture = load_image(full)
            picture.thumbnail((THUMB_SIZE, THUMB_SIZE))
            thumb.parent.mkdir(exist_ok=True)
            write_file(thumb, lambda tmp: picture.save(tmp, format="JPEG", quality=85))
        return FileResponse(thumb, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    return app
