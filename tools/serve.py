"""Serve many VPT tasks from one frozen backbone over HTTP.

    python tools/serve.py CONFIG_OR_BASE \
        --task ade=work_dirs/ade/iter_160000.pth \
        --task roads=seed0.pth,seed1.pth,seed2.pth [--port 8000]

CONFIG_OR_BASE is a config whose backbone's init_cfg names the pretrained
weights (or a task file carrying such a config); the backbone is loaded once.
Each ``--task NAME=FILE`` adds a task from a tuned-only task file or a full
checkpoint (several comma-separated files: a prompt ensemble). Tasks can be
added and removed while the server runs (``POST /tasks``,
``DELETE /tasks/NAME``). Open http://HOST:PORT/ for the web page; the API is
described at /docs. Needs the ``serve`` extra (FastAPI, uvicorn), which
``make install`` installs.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmengine.logging import MMLogger, print_log  # noqa: E402

import mmseg_vpt  # noqa: E402,F401  (registers modules)
from mmseg_vpt.apis.args import add_device  # noqa: E402
from mmseg_vpt.serving import MultiTaskSegmentor, TaskError  # noqa: E402
from mmseg_vpt.serving.server import create_app, serve  # noqa: E402


def task_spec(text: str):
    name, sep, files = text.partition('=')
    if not sep or not name or not files:
        raise argparse.ArgumentTypeError(
            f'--task must be NAME=FILE[,FILE...], got {text!r}')
    return name, [f for f in files.split(',') if f]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument('base', metavar='CONFIG_OR_BASE',
                        help='config (or task file with its config) whose '
                        'backbone names the base weights')
    parser.add_argument('--task', type=task_spec, action='append',
                        default=[], metavar='NAME=FILE[,FILE...]',
                        help='a task to serve (repeat for more)')
    parser.add_argument('--base-weights', help='base weights file instead '
                        "of the config's init_cfg checkpoint")
    add_device(parser)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8000)
    parser.add_argument('--max-batch-size', type=int, default=8,
                        help='most requests in one forward pass (default 8)')
    parser.add_argument('--max-wait-ms', type=float, default=10.0,
                        help='how long the first request of a batch waits '
                        'for others (default 10)')
    parser.add_argument('--max-image-bytes', type=int, default=20 << 20)
    parser.add_argument('--max-image-pixels', type=int,
                        default=4096 * 4096)
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch\'s)')
    parser.add_argument('--read-only', action='store_true',
                        help='refuse adding and removing tasks over HTTP')
    parser.add_argument('--log-level', default='info',
                        choices=['critical', 'error', 'warning', 'info',
                                 'debug'])
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    MMLogger.get_instance('mmseg_vpt_serve', log_level='INFO')
    try:
        model = MultiTaskSegmentor(args.base, args.base_weights, args.device)
        for i, (name, files) in enumerate(args.task, 1):
            task = model.add_task(name, files)
            print_log(f'[{i}/{len(args.task)}] task {name!r}: '
                      f'{task.num_classes} classes, '
                      f'{len(task.members)} prompt set(s) from {files}',
                      logger='current')
    except (TaskError, OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    app = create_app(model, args.max_batch_size, args.max_wait_ms,
                     args.max_image_bytes, args.max_image_pixels,
                     allow_task_changes=not args.read_only)
    print_log(f'serving {len(model.tasks)} task(s) on one backbone at '
              f'http://{args.host}:{args.port}/', logger='current')
    serve(app, args.host, args.port, args.log_level)
    return 0


if __name__ == '__main__':
    sys.exit(main())
