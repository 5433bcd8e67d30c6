"""Config edits behind the ``tools/train.py`` and ``tools/test.py`` flags,
and building the runner.

They live here rather than in the scripts so tests can call them and the
scripts stay thin. Semantics follow mmseg 1.x's own tools unless noted.
"""
import logging
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from ..utils.checkpoints import check_checkpoints_exist
from ..utils.config import read_config
from ..utils.dist import prepare_distributed
from ..utils.files import resolve_last_checkpoint
from .ddp import use_frozen_backbone_ddp
from .memory_options import (configure_activation_checkpointing,
                             format_memory_options, memory_options)

AUTO_RESUME = 'auto'


def load_config(config: str,
                cfg_options: Optional[dict] = None,
                launcher: str = 'none',
                work_dir: Optional[str] = None) -> Config:
    """Load ``config`` (:func:`~mmseg_vpt.utils.config.read_config`) and
    apply the flags every tool shares.

    ``work_dir`` priority is CLI > config > ``./work_dirs/<config name>``.
    """
    cfg = read_config(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    name_dataset_keys(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg


def name_dataset_keys(cfg: Config) -> None:
    """Tell each ``CheckedADE20KDataset`` which dataloader holds it, so
    that its folder errors name the exact config key (a dataset cannot know
    it; without this they name all three)."""
    for name in ('train', 'val', 'test'):
        loader = cfg.get(f'{name}_dataloader')
        dataset = loader.get('dataset') if loader else None
        if dataset is not None and str(dataset.get('type')).endswith(
                'CheckedADE20KDataset'):
            # a copy: test_dataloader may be the same dict as val's
            loader.dataset = dict(
                dataset, config_key=f'{name}_dataloader.dataset')


def enable_amp(cfg: Config) -> None:
    """Switch ``cfg.optim_wrapper`` to mixed precision.

    mmengine's ``AmpOptimWrapper`` asserts a GPU, and CPU autocast only
    supports bfloat16, so without CUDA this uses ``BFloat16OptimWrapper``
    (bfloat16 needs no loss scaling). On CUDA: ``AmpOptimWrapper`` with
    float16 and dynamic loss scaling unless the config sets them.
    """
    wrapper = cfg.optim_wrapper
    if wrapper.get('type') in ('AmpOptimWrapper', 'BFloat16OptimWrapper'):
        print_log('AMP training is already enabled in your config.',
                  logger='current', level=logging.WARNING)
        return
    assert wrapper.get('type', 'OptimWrapper') == 'OptimWrapper', (
        '`--amp` is only supported when the optimizer wrapper type is '
        f'`OptimWrapper` but got {wrapper.type}.')
    if torch.cuda.is_available():
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('dtype', 'float16')
        wrapper.setdefault('loss_scale', 'dynamic')
    else:
        if wrapper.get('dtype', 'bfloat16') != 'bfloat16':
            print_log(f'CPU autocast supports only bfloat16, not '
                      f'{wrapper.dtype}.', logger='current',
                      level=logging.WARNING)
        # registered in mmseg's registry; scoped so that configs with
        # another default_scope (the mmpretrain VTAB configs) find it too
        wrapper.type = ('BFloat16OptimWrapper'
                        if cfg.get('default_scope', 'mmseg') == 'mmseg'
                        else 'mmseg.BFloat16OptimWrapper')
        wrapper.pop('dtype', None)
        wrapper.pop('loss_scale', None)


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``None``: no resume; ``'auto'``: the checkpoint the work dir's
    ``last_checkpoint`` names, read relative to the work dir (none yet:
    train from scratch); anything else: resume from that checkpoint path.

    A config without ``randomness.seed`` takes the checkpoint's seed, which
    the data order depends on (the sampler is built before mmengine reads
    the checkpoint).
    """
    cfg.resume = resume is not None
    if resume is None:
        return
    path = (resolve_last_checkpoint(cfg.work_dir)
            if resume == AUTO_RESUME else resume)
    if path is None:
        return
    cfg.load_from = path
    randomness = dict(cfg.get('randomness') or {})
    if randomness.get('seed') is None:
        seed = _checkpoint_seed(path)
        if seed is not None:
            cfg.randomness = dict(randomness, seed=seed)
            print_log(f'Resuming {path} with its seed {seed} '
                      '(randomness.seed).', logger='current')


def _checkpoint_seed(path: str) -> Optional[int]:
    """``meta.seed`` of a local checkpoint; None if it cannot be read (the
    runner then reports why)."""
    try:
        meta = torch.load(path, map_location='cpu', mmap=True,
                          weights_only=False).get('meta', {})
    except Exception:
        return None
    return meta.get('seed') if isinstance(meta, dict) else None


def configure_exact_resume(cfg: Config) -> None:
    """Use ``ResumableCheckpointHook`` in place of mmengine's
    ``CheckpointHook`` and add ``WorkDirLockHook``, for configs that do not
    (this project's do)."""
    scope = '' if cfg.get('default_scope', 'mmseg') == 'mmseg' else 'mmseg.'
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if checkpoint is not None and checkpoint.get('type') in (
            'CheckpointHook', 'mmengine.CheckpointHook'):
        checkpoint['type'] = scope + 'ResumableCheckpointHook'
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(str(h.get('type')).endswith('WorkDirLockHook')
               for h in hooks):
        hooks.append(dict(type=scope + 'WorkDirLockHook'))
    cfg.custom_hooks = hooks


def configure_tuned_checkpoints(cfg: Config,
                                check_base_hash: bool = True,
                                load_partial: bool = False) -> None:
    """Make sure ``cfg`` has a ``TunedCheckpointHook``, so that a tuned-only
    checkpoint never loads without its base weights and a checkpoint that
    does not fit the model stops the run; ``check_base_hash=False``
    (``--ignore-base-hash``) lets a tuned checkpoint load on a base file
    whose hash differs from the recorded one, ``load_partial=True``
    (``--load-partial``) loads only the tensors that fit."""
    hooks = list(cfg.get('custom_hooks') or [])
    ours = [h for h in hooks if h.get('type') in (
        'TunedCheckpointHook', 'mmseg.TunedCheckpointHook')]
    if not ours:
        hooks.append(dict(type='TunedCheckpointHook'))
        ours = hooks[-1:]
    for hook in ours:
        if not check_base_hash:
            hook['check_base_hash'] = False
        if load_partial:
            hook['load_partial'] = True
    cfg.custom_hooks = hooks


def enable_visualization(cfg: Config, show: bool = False,
                         show_dir: Optional[str] = None,
                         wait_time: float = 2) -> None:
    """Turn on the ``SegVisualizationHook`` for ``--show``/``--show-dir``.

    As in mmseg, ``show_dir`` becomes the visualizer's ``save_dir``, so the
    images land in ``<show_dir>/vis_data/vis_image/`` (relative to the
    current directory, whatever mmseg's help text says).
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks, e.g. '
            "visualization=dict(type='SegVisualizationHook')")
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        cfg.visualizer['save_dir'] = show_dir


def set_test_output(cfg: Config, out: str) -> None:
    """Save test predictions.

    A ``.pkl``/``.pickle`` path adds mmengine's ``DumpResults`` metric (raw
    results). Any other value is a directory, as in mmseg 1.x: the metric
    writes prediction PNGs there for offline evaluation.
    """
    evaluator = cfg.test_evaluator
    if out.endswith(('.pkl', '.pickle')):
        dump = dict(type='DumpResults', out_file_path=out)
        cfg.test_evaluator = (list(evaluator) if isinstance(
            evaluator, (list, tuple)) else [evaluator]) + [dump]
        return
    metric = evaluator[0] if isinstance(evaluator,
                                        (list, tuple)) else evaluator
    metric['output_dir'] = out
    metric['keep_results'] = True


def enable_tta(cfg: Config) -> None:
    """Wrap the model in ``cfg.tta_model`` and use ``cfg.tta_pipeline``."""
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def build_runner(cfg: Config) -> Runner:
    """Check checkpoints, prepare (CPU) distributed, then build the runner
    and log its memory options (one line).

    Honours ``runner_type`` like mmseg's tools; the registry lookup follows
    the config's ``default_scope`` (``mmseg``). A config's
    ``activation_checkpointing`` list is applied by this project's
    non-reentrant wrapper, not by mmengine's (see
    :mod:`~mmseg_vpt.engine.memory_options`).
    """
    check_checkpoints_exist(cfg)
    prepare_distributed(cfg, cfg.get('launcher', 'none'))
    use_frozen_backbone_ddp(cfg)
    configure_activation_checkpointing(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else \
        RUNNERS.build(cfg)
    runner.logger.info(format_memory_options(memory_options(runner.model,
                                                            cfg)))
    return runner
