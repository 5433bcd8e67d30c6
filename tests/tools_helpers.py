"""Helpers for tests that run the command-line tools as users do."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def run(cmd: Sequence[str], cwd: Path, timeout: int = 900,
        env: Optional[dict] = None) -> str:
    """Run ``cmd`` and return its combined output; fail with the output."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    full_env.update(env or {})
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=full_env, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, (
        f'{" ".join(map(str, cmd))} exited with {proc.returncode}:\n'
        f'{proc.stdout[-6000:]}')
    return proc.stdout


def run_fails(cmd: Sequence[str], cwd: Path, timeout: int = 900,
              env: Optional[dict] = None) -> str:
    """Run ``cmd``, which must fail; return :func:`run`'s failure message
    (the command, its exit code and the end of its output)."""
    try:
        run(cmd, cwd, timeout, env)
    except AssertionError as err:
        return str(err)
    raise AssertionError(f'{" ".join(map(str, cmd))} should have failed')


def read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


def train_cmd(config: str, work_dir: Path, *extra: str) -> List[str]:
    return [PYTHON, REPO / 'tools/train.py', REPO / config, '--work-dir',
            work_dir, *extra]


def eval_cmd(config: str, checkpoint: Path, work_dir: Path,
             *extra: str) -> List[str]:
    return [PYTHON, REPO / 'tools/test.py', REPO / config, checkpoint,
            '--work-dir', work_dir, *extra]


def metric_values(log: str, name: str = 'mIoU') -> List[float]:
    """Every value of ``name`` that mmengine's logger printed."""
    return [float(v) for v in re.findall(rf'\b{name}: ([\d.]+)', log)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def no_workers() -> List[str]:
    """--cfg-options loading data in the main process (no worker startup)."""
    return [f'{loader}_dataloader.{key}'
            for loader in ('train', 'val', 'test')
            for key in ('num_workers=0', 'persistent_workers=False')]


def short_schedule(iters: int, batch_size: int = 2) -> List[str]:
    """--cfg-options for a few-iteration run of any of our configs on CPU."""
    return [
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}',
        'default_hooks.logger.interval=1',
        f'train_dataloader.batch_size={batch_size}',
    ] + no_workers()


def synthetic_workspace(tmp_path_factory, name: str) -> Path:
    """A temporary folder holding a small generated ADE20K-layout dataset at
    ``data/synthetic_ade20k`` (8 training, 3 validation images of 64 px),
    where the demo configs look for it when run from that folder."""
    from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k
    root = tmp_path_factory.mktemp(name)
    make_synthetic_ade20k(
        root / 'data/synthetic_ade20k', num_train=8, num_val=3, img_size=64,
        show_progress=False)
    return root
