"""Distributed training without a GPU.

mmengine's ``init_dist`` always calls ``torch.cuda.set_device`` and its DDP
wrapper passes ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only machine.
The Runner skips its own initialisation when a process group already exists,
so :func:`prepare_distributed` creates a gloo group first and patches the
config so that the rest of mmengine's distributed path works unchanged.
With a GPU present mmengine's normal path runs. On both, a collective
timeout and :class:`~mmseg_vpt.engine.RankWatchdogHook` are set when the
config has none, so a rank that stops answering ends the job.
"""
import datetime
import logging
import os
import shutil
import subprocess
from typing import Any, Dict, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

#: Seconds a collective waits for the other ranks when the config sets no
#: ``env_cfg.dist_cfg.timeout`` (gloo's own default is 30 min, NCCL's 10).
COLLECTIVE_TIMEOUT = 600


def _first_slurm_host(node_list: str) -> str:
    """First host of a SLURM node list, expanded by ``scontrol`` as mmengine
    does; a plain single hostname also works without ``scontrol``."""
    if shutil.which('scontrol'):
        result = subprocess.run(['scontrol', 'show', 'hostnames', node_list],
                                capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.split():
            return result.stdout.split()[0]
    if not any(c in node_list for c in ',[]'):
        return node_list
    raise RuntimeError(f'Cannot expand SLURM_NODELIST={node_list!r}: '
                       'scontrol failed; set MASTER_ADDR explicitly.')


def _env_for_launcher(launcher: str) -> Tuple[int, int]:
    """Fill RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* from the launcher's variables.

    Mirrors what mmengine does for each launcher, minus the CUDA calls.
    Returns ``(rank, world_size)``.
    """
    env = os.environ
    if launcher == 'slurm':
        if 'MASTER_ADDR' not in env:
            env['MASTER_ADDR'] = _first_slurm_host(env['SLURM_NODELIST'])
        env['WORLD_SIZE'] = env['SLURM_NTASKS']
        env['RANK'] = env['SLURM_PROCID']
        env['LOCAL_RANK'] = env.get('SLURM_LOCALID', '0')
    elif launcher == 'mpi':
        if 'MASTER_ADDR' not in env:
            raise KeyError('The environment variable MASTER_ADDR is not set')
        env['WORLD_SIZE'] = env['OMPI_COMM_WORLD_SIZE']
        env['RANK'] = env['OMPI_COMM_WORLD_RANK']
        env['LOCAL_RANK'] = env['OMPI_COMM_WORLD_LOCAL_RANK']
    elif launcher != 'pytorch':
        raise ValueError(f'Invalid launcher type: {launcher}')
    env.setdefault('MASTER_ADDR', '127.0.0.1')
    env.setdefault('MASTER_PORT', '29500')  # torch.distributed's default
    return int(env['RANK']), int(env['WORLD_SIZE'])


def init_cpu_dist(launcher: str, timeout: Any = None) -> None:
    """Initialise a gloo process group from the launcher's env variables.

    ``timeout`` is in seconds, as in ``env_cfg.dist_cfg.timeout``.
    """
    if torch_dist.is_initialized():
        return
    rank, world_size = _env_for_launcher(launcher)
    kwargs: Dict[str, Any] = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend='gloo', rank=rank, world_size=world_size, **kwargs)


def convert_syncbn_to_bn(cfg_node: Any, path: str = 'model') -> list:
    """Replace every ``type='SyncBN'`` dict under ``cfg_node`` with ``BN``.

    SyncBatchNorm refuses CPU modules under DDP ("SyncBatchNorm layers only
    work with GPU modules"), and mmengine reverts it only when *not*
    distributed. Returns the key paths that were changed.
    """
    changed = []
    if isinstance(cfg_node, dict):
        if cfg_node.get('type') == 'SyncBN':
            cfg_node['type'] = 'BN'
            changed.append(path)
        for key, value in cfg_node.items():
            changed += convert_syncbn_to_bn(value, f'{path}.{key}')
    elif isinstance(cfg_node, (list, tuple)):
        for i, value in enumerate(cfg_node):
            changed += convert_syncbn_to_bn(value, f'{path}.{i}')
    return changed


def set_collective_timeout(cfg: Config) -> float:
    """Default ``env_cfg.dist_cfg.timeout`` to :data:`COLLECTIVE_TIMEOUT`
    and check it; returns the timeout in seconds.

    It bounds how long a collective waits for the other ranks, for gloo
    (set up here) and NCCL (set up by mmengine).
    """
    # ConfigDict.setdefault returns a detached copy, so assign explicitly.
    cfg.env_cfg = cfg.get('env_cfg') or {}
    cfg.env_cfg.dist_cfg = cfg.env_cfg.get('dist_cfg') or {}
    timeout = cfg.env_cfg.dist_cfg.get('timeout')
    if timeout is None:
        timeout = cfg.env_cfg.dist_cfg.timeout = COLLECTIVE_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or timeout <= 0:
        raise ValueError('env_cfg.dist_cfg.timeout must be a number of '
                         f'seconds > 0, got {timeout!r}')
    return timeout


def add_rank_watchdog(cfg: Config) -> None:
    """Append ``RankWatchdogHook`` to ``cfg.custom_hooks`` unless the config
    has one already (``timeout=0`` there turns it off)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('RankWatchdogHook', 'mmseg.RankWatchdogHook')
               for h in hooks):
        hooks.append(dict(type='mmseg.RankWatchdogHook'))
    cfg.custom_hooks = hooks


def prepare_distributed(cfg: Config, launcher: str) -> None:
    """Make ``cfg`` runnable under ``launcher`` on the current hardware.

    Call this before ``Runner.from_cfg``. With a launcher other than
    ``'none'`` it sets a collective timeout and the rank watchdog when the
    config has none. On CPU it also initialises gloo, sets
    ``device_ids=None`` for DDP, turns SyncBN into BN and drops
    ``cfg.sync_bn``.
    """
    if launcher == 'none':
        return
    timeout = set_collective_timeout(cfg)
    add_rank_watchdog(cfg)
    if torch.cuda.is_available():
        return
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    init_cpu_dist(launcher, timeout)

    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    # Same defaults as mmengine's wrap_model when no wrapper cfg is given.
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper

    changed = convert_syncbn_to_bn(cfg.model)
    if changed:
        print_log(
            'SyncBN does not work with CPU DDP; using BN instead in: '
            + ', '.join(changed), logger='current', level=logging.WARNING)
    if cfg.get('sync_bn') is not None:
        print_log(f'Ignoring cfg.sync_bn={cfg.sync_bn!r} on CPU.',
                  logger='current', level=logging.WARNING)
        cfg.sync_bn = None


def finish_distributed() -> None:
    """Wait for every rank, then destroy the process group
    (``RankWatchdogHook`` has stopped its threads in ``after_run``).

    Left to interpreter exit, a gloo group's threads may still be running
    when the process tears down; one rank then aborts ("terminate called
    without an active exception") after a finished run, and the launcher
    reports the whole job as failed.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
