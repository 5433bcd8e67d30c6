"""An HTTP server for a :class:`MultiTaskSegmentor` (FastAPI on uvicorn).

Endpoints (``tools/serve.py`` starts it):

=========================  ====================================================
``GET /``                  a web page: upload an image, pick a task, see the
                           overlay and the class legend
``GET /health``            liveness, the loaded tasks
``GET /metrics``           requests by status, batches, batch sizes, latency
``GET /tasks``             the tasks with their class names and palettes
``POST /tasks``            add a task: JSON ``{"name": ..., "checkpoints":
                           [paths on the server], "config": optional}``
``DELETE /tasks/{name}``   remove a task
``POST /predict``          ``?task=NAME&format=png|json|overlay``; the body is
                           the image file (raw, or multipart field ``image``)
=========================  ====================================================

Requests of every task go through one :class:`DynamicBatcher`, so
concurrent requests share backbone passes. Bad requests get a 4xx with a
message saying what was wrong, and the server goes on.
"""
import collections
import contextlib
import io
import os.path as osp
import threading
import time
from typing import List, Optional

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from ..apis.inference import overlay, save_label_png
from ..checkpoint import TunedCheckpointError
from ..utils.checkpoints import CheckpointFileError
from .batching import DynamicBatcher
from .multitask import (FrozenWeightsChanged, MultiTaskSegmentor,
                        TaskConflict, TaskError, TaskExists, UnknownTask)

FORMATS = ('png', 'json', 'overlay')
STATIC = osp.join(osp.dirname(osp.abspath(__file__)), 'static')


class NewTask(BaseModel):
    name: str = Field(description='task name (no "/")')
    checkpoints: List[str] = Field(
        min_length=1, description='task file(s) on the server; several: a '
        'prompt ensemble')
    config: Optional[str] = Field(
        None, description='config file overriding the one the files carry')


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def decode_image(body: bytes, max_pixels: int) -> np.ndarray:
    """The request body as a BGR image, or a 4xx naming the problem. The
    size is read from the file's header before anything is decoded, so a
    small file that would decode to a huge image is refused cheaply."""
    from PIL import Image
    if not body:
        raise _error(400, 'empty request body: send an image file (PNG, '
                     'JPEG, BMP, TIFF or WebP) as the body or as the '
                     'multipart field "image"')
    not_image = _error(415, f'the body ({len(body)} bytes) is not an image '
                       'that can be decoded (PNG, JPEG, BMP, TIFF or WebP)')
    try:
        with Image.open(io.BytesIO(body)) as header:
            width, height = header.size
    except Image.DecompressionBombError as err:
        raise _error(413, f'image refused as too large: {err}')
    except Exception:  # noqa: BLE001 - PIL's many "not an image" errors
        raise not_image
    if width * height > max_pixels:
        raise _error(413, f'image of {width}x{height} pixels is larger than '
                     f'the limit of {max_pixels} pixels (--max-image-pixels)')
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise not_image
    return img


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode('.png', array)
    if not ok:
        raise RuntimeError('PNG encoding failed')
    return buf.tobytes()


def create_app(model: MultiTaskSegmentor, max_batch_size: int = 8,
               max_wait_ms: float = 10.0,
               max_image_bytes: int = 20 << 20,
               max_image_pixels: int = 4096 * 4096,
               allow_task_changes: bool = True) -> FastAPI:
    """The ASGI app serving ``model`` (run it with uvicorn)."""
    batcher = DynamicBatcher(model.predict, max_batch_size, max_wait_ms)
    statuses = collections.Counter()
    status_lock = threading.Lock()
    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title='mmseg_vpt segmentation server', lifespan=lifespan,
                  description='Many VPT tasks on one frozen backbone.')
    app.state.model = model
    app.state.batcher = batcher

    @app.middleware('http')
    async def count_statuses(request: Request, call_next):
        response = await call_next(request)
        with status_lock:
            statuses[str(response.status_code)] += 1
        return response

    @app.get('/', include_in_schema=False)
    async def page():
        return FileResponse(osp.join(STATIC, 'index.html'))

    @app.get('/health')
    async def health():
        return dict(status='ok', tasks=list(model.tasks),
                    device=str(model.device))

    @app.get('/metrics')
    async def metrics():
        with status_lock:
            by_status = dict(statuses)
        return dict(uptime_seconds=round(time.time() - started, 1),
                    responses_by_status=by_status, queued=batcher.queued,
                    max_batch_size=batcher.max_batch_size,
                    max_wait_ms=batcher.max_wait * 1000.0,
                    **batcher.stats.snapshot())

    @app.get('/tasks')
    async def tasks():
        return model.tasks_info()

    @app.post('/tasks', status_code=201)
    def add_task(spec: NewTask):  # a thread: reads files, builds heads
        if not allow_task_changes:
            raise _error(403, 'task changes are disabled (--read-only)')
        missing = [p for p in spec.checkpoints + [spec.config or '']
                   if p and not osp.isfile(p)]
        if missing:
            raise _error(400, f'no such file on the server: {missing}')
        try:
            task = model.add_task(spec.name, spec.checkpoints, spec.config)
        except (TaskExists, TunedCheckpointError) as err:
            # the name is taken, or the file was tuned on other base weights
            raise _error(409, str(err))
        except (FrozenWeightsChanged, TaskConflict) as err:
            raise _error(422, str(err))
        except (TaskError, CheckpointFileError, OSError) as err:
            raise _error(400, str(err))
        return task.describe()

    @app.delete('/tasks/{name}')
    def remove_task(name: str):
        if not allow_task_changes:
            raise _error(403, 'task changes are disabled (--read-only)')
        try:
            model.remove_task(name)
        except UnknownTask as err:
            raise _error(404, str(err))
        return dict(removed=name, tasks=list(model.tasks))

    @app.post('/predict')
    async def predict(request: Request, task: str, format: str = 'png'):
        if format not in FORMATS:
            raise _error(400, f'format must be one of {list(FORMATS)}, got '
                         f'{format!r}')
        try:
            info = model.task(task)
        except UnknownTask as err:
            raise _error(404, str(err))
        body = await _read_body(request, max_image_bytes)
        img = decode_image(body, max_image_pixels)
        t0 = time.perf_counter()
        try:
            result = await batcher.submit(img, task)
        except UnknownTask as err:  # removed while queued
            raise _error(404, str(err))
        seconds = time.perf_counter() - t0
        label = result.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
        if format == 'json':
            ids, counts = np.unique(label, return_counts=True)
            return JSONResponse(dict(
                task=task, height=int(label.shape[0]),
                width=int(label.shape[1]), seconds=round(seconds, 4),
                classes=[dict(id=int(i), name=info.classes[i]
                              if i < len(info.classes) else str(i),
                              color=info.palette[i]
                              if i < len(info.palette) else None,
                              pixels=int(c),
                              fraction=round(float(c) / label.size, 5))
                         for i, c in zip(ids, counts)]))
        if format == 'overlay':
            return Response(_png(overlay(img, label, info.palette)),
                            media_type='image/png')
        buf = io.BytesIO()
        save_label_png(label, info.palette, buf)
        return Response(buf.getvalue(), media_type='image/png')

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The image bytes: the raw body, or a multipart form's ``image``
    field; 413 past ``limit`` bytes (read no further)."""
    size = request.headers.get('content-length')
    if size is not None and size.isdigit() and int(size) > limit + 65536:
        raise _error(413, f'request body of {int(size)} bytes is larger '
                     f'than the limit of {limit} bytes (--max-image-bytes)')
    ctype = request.headers.get('content-type', '')
    if ctype.startswith('multipart/form-data'):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get('image')
        if upload is None or isinstance(upload, str):
            raise _error(400, 'multipart body without a file field "image"')
        body = await upload.read(limit + 1)
    else:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                break
            chunks.append(chunk)
        body = b''.join(chunks) if total <= limit else None
    if body is None or len(body) > limit:
        raise _error(413, f'image larger than the limit of {limit} bytes '
                     '(--max-image-bytes)')
    return body


def serve(app: FastAPI, host: str = '127.0.0.1', port: int = 8000,
          log_level: str = 'info') -> None:
    import uvicorn
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ['create_app', 'decode_image', 'serve', 'FORMATS']
