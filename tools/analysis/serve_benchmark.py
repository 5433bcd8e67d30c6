"""Serving N tasks from one frozen backbone, against two alternatives, on
loopback.

    python tools/analysis/serve_benchmark.py CONFIG --tasks 8 \
        --work-dir work_dirs/serve_bench [--clients 16 --requests 256]

Writes a random base weights file for CONFIG's backbone and N task files
(tuned-only, VPT as CONFIG sets it; class counts differ per task, and with
``--mixed-lengths`` prompt lengths too), then measures, on this machine in
this run:

1. **Backbone forward**: one mixed batch of N tasks against a single-task
   batch of the same size (``MultiTaskSegmentor.backbone_features``),
   alternating, median of the ratios.
2. **Load**: ``--clients`` concurrent HTTP clients sending ``--requests``
   requests round-robin over the N tasks to a server process (the project's
   FastAPI app and dynamic batcher) in each mode:

   * ``mixed``: one backbone, mixed-task batches (``tools/serve.py``);
   * ``per_task``: one backbone, each batch run task by task;
   * ``separate``: N separate segmentors (``init_segmentor``), each batch
     run per task on that task's segmentor.

   Throughput, client-side p50/p95 latency, answers counted (every request
   must get one), the batch sizes the server formed.
3. **Memory**: each server's resident memory (VmRSS after the load, and its
   peak VmHWM), against one segmentor (a ``separate`` server with one task)
   plus the N task files' bytes.

``--memory-only`` (real-size configs) skips the load and sends one request
per server. Results: a Markdown table on stdout and ``--out`` JSON.
"""
import argparse
import asyncio
import copy
import json
import os
import os.path as osp
import subprocess
import sys
import time
import warnings

warnings.filterwarnings('ignore', category=UserWarning)
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

MODES = ('mixed', 'per_task', 'separate')
CLASS_COUNTS = (150, 7, 19, 4, 150, 12, 3, 21)
PROMPT_LENGTHS = (10, 5, 20, 1, 10, 8, 16, 4)


# --------------------------------------------------------------------------
# task files
# --------------------------------------------------------------------------
def _set_classes(model_cfg, n: int) -> None:
    model_cfg.decode_head.num_classes = n
    aux = model_cfg.get('auxiliary_head')
    for head in (aux if isinstance(aux, list) else [aux] if aux else []):
        head.num_classes = n


def prepare(config: str, work_dir: str, num_tasks: int,
            mixed_lengths: bool) -> dict:
    """The base file and ``num_tasks`` task files (written once)."""
    import numpy as np
    import torch
    from mmengine.config import Config

    from mmseg_vpt.checkpoint.synthetic import (random_base_state,
                                                random_task_checkpoint)
    os.makedirs(work_dir, exist_ok=True)
    base = osp.join(work_dir, 'base.pth')
    cfg = Config.fromfile(config)
    if not osp.isfile(base):
        torch.save(random_base_state(cfg, seed=0), base + '.tmp')
        os.replace(base + '.tmp', base)
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
        torch.save(random_task_checkpoint(tcfg, 100 + i, 0.02, meta),
                   path + '.tmp')
        os.replace(path + '.tmp', path)
        print(f'[{i + 1}/{num_tasks}] wrote {path}', file=sys.stderr)
    return dict(base=base, files=files)


# --------------------------------------------------------------------------
# the alternatives, behind the same app
# --------------------------------------------------------------------------
def per_task_model(first_file: str, device: str):
    from mmseg_vpt.serving import MultiTaskSegmentor

    class PerTask(MultiTaskSegmentor):
        """The shared backbone run once per task of a batch."""

        def predict(self, images, task_names):
            out = [None] * len(images)
            for name in dict.fromkeys(task_names):
                rows = [i for i, n in enumerate(task_names) if n == name]
                for i, r in zip(rows, super().predict(
                        [images[i] for i in rows], name)):
                    out[i] = r
            return out
    return PerTask(first_file, device=device)


class SeparateSegmentors:
    """One full segmentor per task (mmseg's test_step, batched per task)."""

    def __init__(self, files, names, device: str = 'cpu') -> None:
        import torch
        from mmengine.config import Config

        from mmseg_vpt.apis import init_segmentor
        from mmseg_vpt.apis.inference import inference_pipeline
        from mmseg_vpt.checkpoint import read_checkpoint
        self.models, self.pipelines = {}, {}
        for name, path in zip(names, files):
            cfg = Config.fromstring(read_checkpoint(path)['meta']['cfg'],
                                    file_format='.py')
            self.models[name] = init_segmentor(cfg, path, device=device)
            self.pipelines[name] = inference_pipeline(cfg)
        self.tasks = dict.fromkeys(names)
        self.device = torch.device(device)

    def task(self, name):
        from mmseg_vpt.serving import UnknownTask
        if name not in self.models:
            raise UnknownTask(f'unknown task {name!r}')
        meta = self.models[name].dataset_meta
        return argparse.Namespace(classes=meta['classes'],
                                  palette=meta['palette'])

    def tasks_info(self):
        return [dict(name=n) for n in self.models]

    def predict(self, images, task_names):
        import torch
        out = [None] * len(images)
        with torch.no_grad():
            for name in dict.fromkeys(task_names):
                rows = [i for i, n in enumerate(task_names) if n == name]
                data = [self.pipelines[name](dict(img=images[i]))
                        for i in rows]
                results = self.models[name].test_step(dict(
                    inputs=[d['inputs'] for d in data],
                    data_samples=[d['data_samples'] for d in data]))
                for i, r in zip(rows, results):
                    out[i] = r
        return out


def serve_main(args) -> None:
    """``--serve MODE``: the server process of one mode."""
    import torch
    torch.set_num_threads(args.threads)
    import mmseg_vpt  # noqa: F401
    from mmseg_vpt.serving import MultiTaskSegmentor
    from mmseg_vpt.serving.server import create_app, serve
    files = args.task_files
    names = [f'task{i}' for i in range(len(files))]
    if args.serve == 'separate':
        model = SeparateSegmentors(files, names, args.device)
    else:
        model = per_task_model(files[0], args.device) if \
            args.serve == 'per_task' else \
            MultiTaskSegmentor(files[0], device=args.device)
        for name, path in zip(names, files):
            model.add_task(name, path)
    app = create_app(model, args.max_batch_size, args.max_wait_ms)
    serve(app, '127.0.0.1', args.port, 'warning')


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------
def _memory(pid: int) -> dict:
    out = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                out[key] = int(value.split()[0]) * 1024
    return out


def _image(size: int, seed: int) -> bytes:
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.imencode('.png', img)[1].tobytes()


async def _load(port: int, names, images, clients: int, requests: int,
                timeout: float) -> dict:
    import httpx
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
    import numpy as np
    lat = np.asarray(latencies) * 1000
    return dict(sent=requests, answered=int(sum(statuses.values())),
                ok=int(statuses.get(200, 0)),
                statuses={str(k): v for k, v in statuses.items()},
                errors=errors[:5], lost=len(errors), seconds=wall,
                throughput=statuses.get(200, 0) / wall,
                p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
                p95_ms=float(np.percentile(lat, 95)) if lat.size else None)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def measure_server(args, mode: str, files, load: bool) -> dict:
    import httpx
    port = _free_port()
    cmd = [sys.executable, osp.abspath(__file__), args.config, '--serve',
           mode, '--port', str(port), '--threads', str(args.threads),
           '--device', args.device,
           '--max-batch-size', str(args.max_batch_size), '--max-wait-ms',
           str(args.max_wait_ms), '--task-files', *files]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f'{mode} server exited: '
                                   f'{proc.stderr.read()[-3000:]}')
            try:
                if httpx.get(f'http://127.0.0.1:{port}/health',
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > args.start_timeout:
                raise RuntimeError(f'{mode} server did not start within '
                                   f'{args.start_timeout} s')
            time.sleep(0.5)
        startup = time.perf_counter() - t0
        names = [f'task{i}' for i in range(len(files))]
        images = [_image(args.image_size, s) for s in range(8)]
        # warm-up: every task once
        warm = asyncio.run(_load(port, names, images, 1, len(names),
                                 args.timeout))
        if warm['ok'] != len(names):
            raise RuntimeError(f'{mode} warm-up failed: {warm}')
        result = dict(mode=mode, tasks=len(files), startup_seconds=startup)
        if load:
            result['load'] = asyncio.run(_load(
                port, names, images, args.clients, args.requests,
                args.timeout))
            result['server_metrics'] = httpx.get(
                f'http://127.0.0.1:{port}/metrics', timeout=10).json()
        result['memory'] = _memory(proc.pid)
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def backbone_ratio(args, files) -> dict:
    """Mixed batch of N tasks / single-task batch, backbone only."""
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    from mmseg_vpt.serving import MultiTaskSegmentor
    model = MultiTaskSegmentor(files[0], device=args.device)
    for i, path in enumerate(files):
        model.add_task(f'task{i}', path)
    members = [model.task(f'task{i}').members[0] for i in range(len(files))]
    size = args.backbone_size or args.image_size
    x = torch.randn(len(files), 3, size, size, device=args.device)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    mixed, single = members, [members[0]] * len(files)
    times = {'mixed': [], 'single': [], 'one_by_one': []}

    def one_by_one():  # what N separate segmentors do: batch 1 each
        for i, m in enumerate(members):
            model.backbone_features(x[i:i + 1], [m])

    runs = (('single', lambda: model.backbone_features(x, single)),
            ('mixed', lambda: model.backbone_features(x, mixed)),
            ('one_by_one', one_by_one))
    with torch.no_grad():
        for _ in range(args.backbone_warmup):
            for _, fn in runs:
                fn()
        for _ in range(args.backbone_iters):
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


def report(result: dict) -> str:
    mb = 1 / 2**20
    lines = [f'Serving {result["tasks"]} tasks of `{result["config"]}` '
             f'({result["prompts"]}), {result["threads"]} thread(s)', '']
    b = result.get('backbone')
    if b:
        lines += [
            f'Backbone forward, batch {b["batch"]} at {b["input"]} px: '
            f'single task {b["single_ms"]:.1f} ms, {b["batch"]} tasks '
            f'{b["mixed_ms"]:.1f} ms, ratio **{b["ratio"]:.3f}** (goal <= '
            f'1.15; per pair {b["ratios"]})',
            f'The same {b["batch"]} samples one by one (batch 1, as '
            f'separate segmentors run them): {b["one_by_one_ms"]:.1f} ms, '
            f'so batching them gains {b["batching_gain"]:.2f}x on this '
            'device: the most that sharing the backbone pass can add to '
            'throughput.', '']
    base = result['one_segmentor']['memory']['VmRSS']
    files = result['task_file_bytes']
    lines += ['| server | throughput (req/s) | p50 ms | p95 ms | answered '
              '/ sent | mean batch | RSS MB | peak MB | RSS / (one '
              'segmentor + task files) |', '|---|---|---|---|---|---|---|'
              '---|---|']
    for r in result['servers']:
        load = r.get('load')
        m = r.get('server_metrics') or {}
        ratio = r['memory']['VmRSS'] / (base + files)
        cells = ['-'] * 5 if not load else [
            f'{load["throughput"]:.2f}', f'{load["p50_ms"]:.0f}',
            f'{load["p95_ms"]:.0f}', f'{load["answered"]} / {load["sent"]}',
            f'{m.get("mean_batch_size", float("nan")):.2f}']
        lines.append(' | '.join(
            [f'| {r["mode"]}', *cells, f'{r["memory"]["VmRSS"] * mb:.0f}',
             f'{r["memory"]["VmHWM"] * mb:.0f}', f'{ratio:.2f} |']))
    lines += ['', f'One segmentor (a `separate` server with one task): RSS '
              f'{base * mb:.0f} MB; the {result["tasks"]} task files: '
              f'{files * mb:.1f} MB.']
    t = {r['mode']: (r.get('load') or {}).get('throughput')
         for r in result['servers']}
    if t.get('mixed') and t.get('separate'):
        lines.append(f'Throughput mixed / separate: '
                     f'**{t["mixed"] / t["separate"]:.2f}x** (goal >= 3); '
                     f'mixed / per_task: {t["mixed"] / t["per_task"]:.2f}x.'
                     if t.get('per_task') else '')
    mixed = next((r for r in result['servers'] if r['mode'] == 'mixed'),
                 None)
    if mixed:
        lines.append(f'Memory mixed / (one segmentor + task files): '
                     f'**{mixed["memory"]["VmRSS"] / (base + files):.2f}** '
                     '(goal <= 1.2).')
    return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('--tasks', type=int, default=8)
    p.add_argument('--work-dir', default='work_dirs/serve_bench')
    p.add_argument('--mixed-lengths', action='store_true',
                   help=f'prompt lengths {PROMPT_LENGTHS} across tasks')
    p.add_argument('--modes', nargs='+', default=list(MODES), choices=MODES)
    p.add_argument('--clients', type=int, default=16)
    p.add_argument('--requests', type=int, default=256)
    p.add_argument('--image-size', type=int, default=128)
    p.add_argument('--max-batch-size', type=int, default=8)
    p.add_argument('--max-wait-ms', type=float, default=10.0)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--timeout', type=float, default=300.0,
                   help='per-request client timeout (s)')
    p.add_argument('--start-timeout', type=float, default=600.0)
    p.add_argument('--backbone-size', type=int, default=None,
                   help='input size of the backbone comparison (default: '
                   '--image-size)')
    p.add_argument('--backbone-iters', type=int, default=10)
    p.add_argument('--backbone-warmup', type=int, default=2)
    p.add_argument('--no-backbone', action='store_true')
    p.add_argument('--memory-only', action='store_true',
                   help='no load test: one request per task per server')
    p.add_argument('--out', help='JSON results file')
    # the server subprocess
    p.add_argument('--serve', choices=MODES, help=argparse.SUPPRESS)
    p.add_argument('--port', type=int, help=argparse.SUPPRESS)
    p.add_argument('--task-files', nargs='+', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve_main(args)
        return 0
    import mmseg_vpt  # noqa: F401
    from mmengine.config import Config
    made = prepare(args.config, args.work_dir, args.tasks,
                   args.mixed_lengths)
    files = made['files']
    cfg = Config.fromfile(args.config)
    prompts = f'prompt lengths {list(PROMPT_LENGTHS[:args.tasks])}' if \
        args.mixed_lengths else \
        f'prompt_length {cfg.model.backbone.get("prompt_length", 10)}'
    result = dict(config=args.config, tasks=len(files), prompts=prompts,
                  threads=args.threads, image_size=args.image_size,
                  clients=args.clients, requests=args.requests,
                  max_batch_size=args.max_batch_size,
                  max_wait_ms=args.max_wait_ms,
                  task_file_bytes=sum(osp.getsize(f) for f in files),
                  base_bytes=osp.getsize(made['base']))
    if not args.no_backbone:
        result['backbone'] = backbone_ratio(args, files)
        print(f'backbone: {result["backbone"]}', file=sys.stderr)
    result['servers'] = []
    for mode in args.modes:
        r = measure_server(args, mode, files, not args.memory_only)
        print(f'{mode}: {json.dumps(r.get("load"))} {r["memory"]}',
              file=sys.stderr)
        result['servers'].append(r)
    result['one_segmentor'] = measure_server(args, 'separate', files[:1],
                                             False)
    lost = [r['mode'] for r in result['servers']
            if r.get('load') and r['load']['answered'] != r['load']['sent']]
    table = report(result)
    print(table)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
        with open(osp.splitext(args.out)[0] + '.md', 'w') as f:
            f.write(table + '\n')
    if lost:
        print(f'error: requests without an answer in {lost}',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
