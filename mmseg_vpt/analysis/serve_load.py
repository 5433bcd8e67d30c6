"""Measuring N tasks served from one frozen backbone
(``tools/analysis/serve_benchmark.py``), on this machine in this run:

1. **Backbone forward** (:func:`backbone_ratio`): one mixed batch of N
   tasks against a single-task batch of the same size
   (``MultiTaskSegmentor.backbone_features``), alternating, median of the
   ratios; and the same N samples one by one, as separate segmentors run
   them.
2. **Load** (:func:`measure_server`): concurrent HTTP clients sending
   requests round-robin over the N tasks to a server process of each mode
   of :mod:`.serve_baselines`: throughput, client-side p50/p95 latency,
   answers counted (every request must get one), and the server's
   ``/metrics`` (the batch sizes it formed).
3. **Memory** (:func:`process_memory`): each server's resident memory
   (VmRSS after the load, and its peak VmHWM), reported against one
   segmentor plus the N task files' bytes
   (:func:`.serve_report.format_report`).

The task files are random (:func:`prepare_task_files`): tuned-only, VPT as
the config sets it, class counts differing per task and, optionally,
prompt lengths too. The HTTP client needs ``httpx``.
"""
import asyncio
import copy
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from mmengine.config import ConfigDict

from ..checkpoint.synthetic import random_base_state, random_task_checkpoint
from ..serving import MultiTaskSegmentor
from ..utils.config import read_config
from ..utils.files import save_atomically
from .serve_baselines import task_names

#: class count and prompt length of task ``i`` (cycled past eight tasks)
CLASS_COUNTS = (150, 7, 19, 4, 150, 12, 3, 21)
PROMPT_LENGTHS = (10, 5, 20, 1, 10, 8, 16, 4)

#: ``(mode, port, task files) -> argv`` of a process that serves ``mode``
#: (:func:`.serve_baselines.run_server`) on ``127.0.0.1:port``
ServerCommand = Callable[[str, int, Sequence[str]], List[str]]


# -- task files -------------------------------------------------------------
def _set_classes(model_cfg: ConfigDict, num_classes: int) -> None:
    model_cfg.decode_head.num_classes = num_classes
    aux = model_cfg.get('auxiliary_head')
    for head in (aux if isinstance(aux, list) else [aux] if aux else []):
        head.num_classes = num_classes


def prepare_task_files(config: str, work_dir: str, num_tasks: int,
                       mixed_lengths: bool = False) -> Dict[str, object]:
    """Random base weights for ``config``'s backbone (``base.pth``) and
    ``num_tasks`` tuned-only task files on them (``task{i}.pth``) in
    ``work_dir``; files already there are kept, so reruns measure the same
    files. Task ``i`` has ``CLASS_COUNTS[i % 8]`` classes and, with
    ``mixed_lengths``, ``PROMPT_LENGTHS[i % 8]`` prompts.

    Returns:
        dict: ``base`` (path) and ``files`` (the task files, in order).
    """
    if num_tasks < 1:
        raise ValueError(f'num_tasks must be at least 1, got {num_tasks}')
    os.makedirs(work_dir, exist_ok=True)
    base = osp.join(work_dir, 'base.pth')
    cfg = read_config(config)
    if not osp.isfile(base):
        save_atomically(random_base_state(cfg, seed=0), base)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=base)
    files = []
    for i in range(num_tasks):
        path = osp.join(work_dir, f'task{i}.pth')
        files.append(path)
        if osp.isfile(path):
            continue
        tcfg = copy.deepcopy(cfg)
        classes = CLASS_COUNTS[i % len(CLASS_COUNTS)]
        _set_classes(tcfg.model, classes)
        if mixed_lengths:
            tcfg.model.backbone.prompt_length = PROMPT_LENGTHS[
                i % len(PROMPT_LENGTHS)]
        rng = np.random.default_rng(i)
        meta = dict(classes=[f't{i}-c{c}' for c in range(classes)],
                    palette=rng.integers(0, 256, (classes, 3)).tolist())
        save_atomically(random_task_checkpoint(tcfg, 100 + i, 0.02, meta),
                        path)
        print(f'[{i + 1}/{num_tasks}] wrote {path}', file=sys.stderr)
    return dict(base=base, files=files)


# -- backbone forward -------------------------------------------------------
def backbone_ratio(files: Sequence[str], size: int, device: str = 'cpu',
                   threads: Optional[int] = None, iters: int = 10,
                   warmup: int = 2) -> dict:
    """Backbone time of one batch holding one sample of each task in
    ``files`` against a batch of the same size for one task, and against
    the samples one by one (``size`` px inputs; ``threads``: intra-op
    threads of this process, if given). Medians over ``iters`` rounds that
    alternate the three."""
    if threads is not None:
        torch.set_num_threads(threads)
    model = MultiTaskSegmentor(files[0], device=device)
    names = task_names(len(files))
    for name, path in zip(names, files):
        model.add_task(name, path)
    members = [model.task(name).members[0] for name in names]
    x = torch.randn(len(files), 3, size, size, device=device)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    single = [members[0]] * len(files)
    times = {'mixed': [], 'single': [], 'one_by_one': []}

    def one_by_one():  # what N separate segmentors do: batch 1 each
        for i, m in enumerate(members):
            model.backbone_features(x[i:i + 1], [m])

    runs = (('single', lambda: model.backbone_features(x, single)),
            ('mixed', lambda: model.backbone_features(x, members)),
            ('one_by_one', one_by_one))
    with torch.no_grad():
        for _ in range(warmup):
            for _, fn in runs:
                fn()
        for _ in range(iters):
            for name, fn in runs:
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - t0)
    ratios = [m / s for m, s in zip(times['mixed'], times['single'])]
    gains = [o / m for o, m in zip(times['one_by_one'], times['mixed'])]
    return dict(batch=len(files), input=size,
                single_ms=1000 * float(np.median(times['single'])),
                mixed_ms=1000 * float(np.median(times['mixed'])),
                one_by_one_ms=1000 * float(np.median(times['one_by_one'])),
                ratio=float(np.median(ratios)),
                ratios=[round(r, 3) for r in ratios],
                batching_gain=float(np.median(gains)))


# -- load -------------------------------------------------------------------
@dataclass
class LoadSettings:
    """The client side of a load test.

    Args:
        clients (int): concurrent HTTP clients.
        requests (int): requests in all, round-robin over the tasks.
        image_size (int): side of the random square PNG images sent.
        timeout (float): per-request client timeout (s).
        start_timeout (float): how long a server may take to answer
            ``/health`` (s).
    """
    clients: int = 16
    requests: int = 256
    image_size: int = 128
    timeout: float = 300.0
    start_timeout: float = 600.0


def random_png(size: int, seed: int) -> bytes:
    """A ``size`` x ``size`` PNG of uniform random colours (seeded)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.imencode('.png', img)[1].tobytes()


def process_memory(pid: int) -> Dict[str, int]:
    """Resident (``VmRSS``) and peak resident (``VmHWM``) bytes of process
    ``pid``, from Linux's ``/proc/PID/status``."""
    out = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                out[key] = int(value.split()[0]) * 1024
    return out


async def send_load(port: int, names: Sequence[str],
                    images: Sequence[bytes], clients: int, requests: int,
                    timeout: float) -> dict:
    """``requests`` POSTs to ``127.0.0.1:port/predict``, request ``i`` for
    task ``names[i % N]`` with ``images[i % M]``, from ``clients``
    concurrent clients. A request that gets no HTTP answer counts as lost
    (the first five errors are kept).

    Returns:
        dict: ``sent``, ``answered``, ``ok`` (status 200), ``statuses``,
        ``errors``, ``lost``, ``seconds`` (wall), ``throughput`` (ok / s),
        ``p50_ms`` and ``p95_ms`` (client-side latency of the answered).
    """
    import httpx  # the benchmark's own client: not a library dependency
    url = f'http://127.0.0.1:{port}/predict'
    jobs = asyncio.Queue()
    for i in range(requests):
        jobs.put_nowait(i)
    latencies, statuses, errors = [], {}, []

    async def client(http):
        while True:
            try:
                i = jobs.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                res = await http.post(
                    url, params=dict(task=names[i % len(names)],
                                     format='json'),
                    content=images[i % len(images)], timeout=timeout)
                statuses[res.status_code] = statuses.get(res.status_code,
                                                         0) + 1
                latencies.append(time.perf_counter() - t0)
            except Exception as err:  # noqa: BLE001 - counted as lost
                errors.append(f'{type(err).__name__}: {err}')

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    return dict(sent=requests, answered=int(sum(statuses.values())),
                ok=int(statuses.get(200, 0)),
                statuses={str(k): v for k, v in statuses.items()},
                errors=errors[:5], lost=len(errors), seconds=wall,
                throughput=statuses.get(200, 0) / wall,
                p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
                p95_ms=float(np.percentile(lat, 95)) if lat.size else None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_until_healthy(proc: subprocess.Popen, mode: str, port: int,
                        start_timeout: float) -> float:
    """Seconds until the server answers ``/health``; a clear error if it
    exits or takes longer than ``start_timeout``."""
    import httpx
    t0 = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f'{mode} server exited: '
                               f'{proc.stderr.read()[-3000:]}')
        try:
            if httpx.get(f'http://127.0.0.1:{port}/health',
                         timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t0 > start_timeout:
            raise RuntimeError(f'{mode} server did not start within '
                               f'{start_timeout} s')
        time.sleep(0.5)


def measure_server(command: ServerCommand, mode: str, files: Sequence[str],
                   settings: LoadSettings, load: bool = True) -> dict:
    """Start ``command(mode, port, files)`` on a free port, send every task
    one warm-up request, then (with ``load``) the load of ``settings``, and
    read the server's memory; the server is stopped on return.

    Returns:
        dict: ``mode``, ``tasks``, ``startup_seconds``; with ``load`` also
        ``load`` (:func:`send_load`) and ``server_metrics`` (its
        ``/metrics``); ``memory`` (:func:`process_memory`).
    """
    import httpx
    port = free_port()
    proc = subprocess.Popen(command(mode, port, files),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        startup = _wait_until_healthy(proc, mode, port,
                                      settings.start_timeout)
        names = task_names(len(files))
        images = [random_png(settings.image_size, s) for s in range(8)]
        warm = asyncio.run(send_load(port, names, images, 1, len(names),
                                     settings.timeout))
        if warm['ok'] != len(names):
            raise RuntimeError(f'{mode} warm-up failed: {warm}')
        result = dict(mode=mode, tasks=len(files), startup_seconds=startup)
        if load:
            result['load'] = asyncio.run(send_load(
                port, names, images, settings.clients, settings.requests,
                settings.timeout))
            result['server_metrics'] = httpx.get(
                f'http://127.0.0.1:{port}/metrics', timeout=10).json()
        result['memory'] = process_memory(proc.pid)
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure_servers(command: ServerCommand, modes: Sequence[str],
                    files: Sequence[str], settings: LoadSettings,
                    load: bool = True) -> dict:
    """:func:`measure_server` for each of ``modes`` with all ``files``
    (progress on stderr), then a ``separate`` server of the first file
    alone without load, the memory reference of the report
    (:func:`.serve_report.format_report`).

    Returns:
        dict: ``servers`` (one result per mode) and ``one_segmentor``.
    """
    servers = []
    for mode in modes:
        r = measure_server(command, mode, files, settings, load)
        print(f'{mode}: {json.dumps(r.get("load"))} {r["memory"]}',
              file=sys.stderr)
        servers.append(r)
    one = measure_server(command, 'separate', files[:1], settings,
                         load=False)
    return dict(servers=servers, one_segmentor=one)


__all__ = ['CLASS_COUNTS', 'LoadSettings', 'PROMPT_LENGTHS',
           'ServerCommand', 'backbone_ratio', 'free_port', 'measure_server',
           'measure_servers', 'prepare_task_files', 'process_memory',
           'random_png', 'send_load']
