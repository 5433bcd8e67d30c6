"""Serving N tasks from one frozen backbone, against two alternatives, on
loopback.

    python tools/analysis/serve_benchmark.py CONFIG --tasks 8 \
        --work-dir work_dirs/serve_bench [--clients 16 --requests 256]

Writes random base weights and N task files for CONFIG, then measures the
backbone of a mixed batch against a single-task one, and load and memory
of a server per ``--modes``: ``mixed`` (one backbone, mixed-task batches),
``per_task`` (one backbone, task by task), ``separate`` (N segmentors).
What each number means: :mod:`mmseg_vpt.analysis.serve_load`.
``--memory-only`` (real-size configs) sends one request per task instead
of the load. Results: a Markdown table on stdout, ``--out`` JSON (and the
table beside it as ``.md``).
"""
import argparse
import functools
import os.path as osp
import sys
import warnings
from typing import List, Sequence

# before the imports below: mmseg and mmengine warn while importing
warnings.filterwarnings('ignore', category=UserWarning)

from mmseg_vpt.analysis.serve_baselines import (  # noqa: E402
    SERVER_MODES, run_server)
from mmseg_vpt.analysis.serve_load import (  # noqa: E402
    PROMPT_LENGTHS, LoadSettings, backbone_ratio, measure_servers,
    prepare_task_files)
from mmseg_vpt.analysis.serve_report import (  # noqa: E402
    format_report, prompts_label, unanswered_modes, write_results)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('--tasks', type=int, default=8)
    p.add_argument('--work-dir', default='work_dirs/serve_bench')
    p.add_argument('--mixed-lengths', action='store_true',
                   help=f'prompt lengths {PROMPT_LENGTHS} across tasks')
    p.add_argument('--modes', nargs='+', default=list(SERVER_MODES),
                   choices=SERVER_MODES)
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
    # the server subprocess this tool starts for each mode
    p.add_argument('--serve', choices=SERVER_MODES, help=argparse.SUPPRESS)
    p.add_argument('--port', type=int, help=argparse.SUPPRESS)
    p.add_argument('--task-files', nargs='+', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def server_command(args, mode: str, port: int,
                   files: Sequence[str]) -> List[str]:
    """This tool again, as the ``--serve`` process of ``mode``."""
    return [sys.executable, osp.abspath(__file__), args.config, '--serve',
            mode, '--port', str(port), '--threads', str(args.threads),
            '--device', args.device, '--max-batch-size',
            str(args.max_batch_size), '--max-wait-ms', str(args.max_wait_ms),
            '--task-files', *files]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve:
        run_server(args.serve, args.task_files, args.port, args.device,
                   args.threads, args.max_batch_size, args.max_wait_ms)
        return 0
    made = prepare_task_files(args.config, args.work_dir, args.tasks,
                              args.mixed_lengths)
    files = made['files']
    result = dict(
        config=args.config, tasks=len(files),
        prompts=prompts_label(args.config, args.tasks, args.mixed_lengths),
        threads=args.threads, image_size=args.image_size,
        clients=args.clients, requests=args.requests,
        max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        task_file_bytes=sum(osp.getsize(f) for f in files),
        base_bytes=osp.getsize(made['base']))
    if not args.no_backbone:
        result['backbone'] = backbone_ratio(
            files, args.backbone_size or args.image_size, args.device,
            args.threads, args.backbone_iters, args.backbone_warmup)
        print(f'backbone: {result["backbone"]}', file=sys.stderr)
    settings = LoadSettings(args.clients, args.requests, args.image_size,
                            args.timeout, args.start_timeout)
    result.update(measure_servers(functools.partial(server_command, args),
                                  args.modes, files, settings,
                                  load=not args.memory_only))
    table = format_report(result)
    print(table)
    if args.out:
        write_results(result, table, args.out)
    lost = unanswered_modes(result)
    if lost:
        print(f'error: requests without an answer in {lost}',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
