"""The three servers the serving benchmark compares, each a model that
:func:`mmseg_vpt.serving.server.create_app` serves:

* ``mixed``: one frozen backbone, mixed-task batches
  (:class:`~mmseg_vpt.serving.MultiTaskSegmentor` itself);
* ``per_task``: one frozen backbone, each batch run task by task
  (:class:`PerTaskSegmentor`);
* ``separate``: one full segmentor per task, each batch run per task on
  that task's segmentor (:class:`SeparateSegmentors`).
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmseg.structures import SegDataSample

from ..apis import init_segmentor
from ..apis.inference import inference_pipeline
from ..serving import MultiTaskSegmentor, UnknownTask
from ..utils.config import read_config

SERVER_MODES = ('mixed', 'per_task', 'separate')


def task_names(num_tasks: int) -> List[str]:
    """The names the benchmark gives its task files, in order."""
    return [f'task{i}' for i in range(num_tasks)]


def _rows_by_task(names: Sequence[str]) -> Iterator[Tuple[str, List[int]]]:
    """Each task of a batch (first-seen order) with its sample indices."""
    for name in dict.fromkeys(names):
        yield name, [i for i, n in enumerate(names) if n == name]


class PerTaskSegmentor(MultiTaskSegmentor):
    """A :class:`MultiTaskSegmentor` that runs the shared backbone once per
    task of a batch instead of once for the whole mixed batch."""

    def predict(self, images: Sequence[np.ndarray],
                task_names: Sequence[str]) -> List[SegDataSample]:
        out = [None] * len(images)
        for name, rows in _rows_by_task(task_names):
            results = super().predict([images[i] for i in rows], name)
            for i, result in zip(rows, results):
                out[i] = result
        return out


@dataclass(frozen=True)
class TaskLabels:
    """What the server's ``/predict`` reads of a task: its class names and
    colours."""
    classes: Sequence[str]
    palette: Sequence[Sequence[int]]


class SeparateSegmentors:
    """One full segmentor per task file, as N separate deployments would
    hold them: mmseg's ``test_step`` on each task's own model, a batch split
    per task. Serves the part of the :class:`MultiTaskSegmentor` interface
    that the server's ``/health``, ``/tasks`` and ``/predict`` use.

    Args:
        files (Sequence[str]): the task files (each carries its config).
        names (Sequence[str]): the task name of each file.
        device (str): where the models run. Defaults to ``'cpu'``.
    """

    def __init__(self, files: Sequence[str], names: Sequence[str],
                 device: str = 'cpu') -> None:
        if len(files) != len(names):
            raise ValueError(f'{len(files)} task files but {len(names)} '
                             'names')
        self.models: Dict[str, torch.nn.Module] = {}
        self.pipelines = {}
        for name, path in zip(names, files):
            cfg = read_config(path, key=f'task file of {name!r}')
            self.models[name] = init_segmentor(cfg, path, device=device)
            self.pipelines[name] = inference_pipeline(cfg)
        self.tasks = dict.fromkeys(names)
        self.device = torch.device(device)

    def task(self, name: str) -> TaskLabels:
        if name not in self.models:
            raise UnknownTask(f'unknown task {name!r}')
        meta = self.models[name].dataset_meta
        return TaskLabels(classes=meta['classes'], palette=meta['palette'])

    def tasks_info(self) -> List[dict]:
        return [dict(name=n) for n in self.models]

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray],
                task_names: Sequence[str]) -> List[SegDataSample]:
        out = [None] * len(images)
        for name, rows in _rows_by_task(task_names):
            data = [self.pipelines[name](dict(img=images[i])) for i in rows]
            results = self.models[name].test_step(dict(
                inputs=[d['inputs'] for d in data],
                data_samples=[d['data_samples'] for d in data]))
            for i, result in zip(rows, results):
                out[i] = result
        return out


ServerModel = Union[MultiTaskSegmentor, SeparateSegmentors]


def server_model(mode: str, files: Sequence[str],
                 device: str = 'cpu') -> ServerModel:
    """The model of server ``mode`` (one of :data:`SERVER_MODES`) holding
    ``files`` as tasks named by :func:`task_names`; the first file's config
    builds the shared backbone of ``mixed`` and ``per_task``."""
    if mode not in SERVER_MODES:
        raise ValueError(f'mode must be one of {SERVER_MODES}, got {mode!r}')
    if not files:
        raise ValueError('files: at least one task file is needed')
    names = task_names(len(files))
    if mode == 'separate':
        return SeparateSegmentors(files, names, device)
    cls = PerTaskSegmentor if mode == 'per_task' else MultiTaskSegmentor
    model = cls(files[0], device=device)
    for name, path in zip(names, files):
        model.add_task(name, path)
    return model


def run_server(mode: str, files: Sequence[str], port: int,
               device: str = 'cpu', threads: Optional[int] = None,
               max_batch_size: int = 8, max_wait_ms: float = 10.0) -> None:
    """Serve :func:`server_model` on ``127.0.0.1:port`` until stopped, with
    the project's FastAPI app and dynamic batcher (needs the ``serve``
    extra); ``threads``: intra-op threads of this process, if given."""
    # FastAPI and uvicorn are the optional ``serve`` extra: imported only by
    # the process that serves
    from ..serving.server import create_app, serve
    if threads is not None:
        torch.set_num_threads(threads)
    model = server_model(mode, files, device)
    app = create_app(model, max_batch_size, max_wait_ms)
    serve(app, '127.0.0.1', port, 'warning')


__all__ = ['PerTaskSegmentor', 'SERVER_MODES', 'SeparateSegmentors',
           'ServerModel', 'TaskLabels', 'run_server', 'server_model',
           'task_names']
