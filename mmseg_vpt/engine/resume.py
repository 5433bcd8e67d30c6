"""Checkpoints that resume exactly: kill a run at any moment, ``--resume``,
and it ends at the same weights, bit for bit, as if never interrupted.

mmengine already restores the weights, optimizer, schedulers and message
hub, and skips the batches already trained on (the sampler's order is a
function of its seed). What it loses is randomness:

* the main process's RNGs (torch: dropout and prompt dropout; numpy and
  random: augmentations when ``num_workers=0``; the device's) restart from
  the seed instead of where the run was;
* dataloader workers are re-seeded, and restart their augmentation
  randomness, when mmengine skips batches without loading them;
* validation draws from the same RNGs, so even an uninterrupted run's
  training randomness depends on when it validated.

:class:`ResumableCheckpointHook` records every rank's RNG states in each
checkpoint and restores them right before the first batch after a resume,
replays the skipped batches through the workers, and runs validation on
its own copy of the RNG states. It also writes checkpoints atomically (see
:mod:`.work_dir`).
"""
import os
import os.path as osp
import random
from glob import glob
from typing import List, Optional

import numpy as np
import torch
from mmengine.device import get_device
from mmengine.dist import all_gather_object, get_dist_info, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..utils.files import (LAST_CHECKPOINT, PARTIAL_SUFFIX, partial_name,
                          replace_atomically, resolve_last_checkpoint,
                          write_text_atomically)

#: checkpoint key: one :func:`capture_rng_state` dict per rank
RNG_KEY = 'rng_states'


def _device_module():
    """``torch.cuda`` (or npu, mlu, ...) when training on one, else None."""
    name = get_device()
    module = getattr(torch, name, None) if name != 'cpu' else None
    return module if hasattr(module, 'get_rng_state') else None


def capture_rng_state() -> dict:
    """This process's global RNG states, as plain tensors, ints and lists
    (they load with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=(kind, keys.tolist(), pos, has_gauss, gauss),
        random=random.getstate())
    device = _device_module()
    if device is not None:
        state['device'] = (get_device(), list(
            device.get_rng_state_all() if hasattr(
                device, 'get_rng_state_all') else [device.get_rng_state()]))
    return state


def restore_rng_state(state: dict) -> None:
    """Set the global RNGs to a :func:`capture_rng_state` result (its
    tensors may have been loaded onto the GPU: mmengine resumes with
    ``map_location`` the device)."""
    torch.set_rng_state(state['torch'].cpu())
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state(
        (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state['random']
    random.setstate((version, tuple(internal), gauss_next))
    if 'device' not in state:
        return
    name, device_states = state['device']
    device_states = [s.cpu() for s in device_states]
    device = _device_module()
    if device is None or name != get_device():
        print_log(
            f'The checkpoint holds {name} RNG states but this run is on '
            f'{get_device()}: its device randomness starts afresh.',
            logger='current', level='WARNING')
    elif hasattr(device, 'set_rng_state_all') and len(device_states) == len(
            device.get_rng_state_all()):
        device.set_rng_state_all(device_states)
    else:
        device.set_rng_state(device_states[0])


class _ResumeIterator:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` until the
    first batch after a resume.

    ``skip_iter`` skips the batches already trained on; with workers, it
    loads them (``replay``), because a worker's augmentation randomness
    continues from the batches it produced before. The first ``next`` then
    restores the checkpoint's RNG states and hands the loop its own
    iterator back.
    """

    def __init__(self, loop, rng_state: dict, replay: bool) -> None:
        self._loop = loop
        self._inner = loop.dataloader_iterator
        self._rng_state = rng_state
        self._replay = replay

    def __iter__(self):
        return self

    def skip_iter(self, num_iters: int) -> None:
        if not self._replay:
            self._inner.skip_iter(num_iters)
            return
        print_log(
            f'Replaying the {num_iters} batches already trained on through '
            'the dataloader workers, so that their augmentation randomness '
            'continues exactly (ResumableCheckpointHook(replay_workers='
            'False) skips them without loading).', logger='current')
        for _ in range(num_iters):
            next(self._inner)

    def __next__(self):
        # Creating the data iterator draws from torch's RNG (the workers'
        # base seed); the interrupted run did that at its first batch, long
        # before the states were recorded. So create it, then restore.
        ensure = getattr(self._inner, '_ensure_iterator', None)
        if ensure is not None:
            ensure()
        restore_rng_state(self._rng_state)
        self._loop.dataloader_iterator = self._inner
        return next(self._inner)


def _replay_epochs(loader, num_epochs: int) -> None:
    """Load (and discard) ``num_epochs`` epochs, each in its own order."""
    print_log(
        f'Replaying the {num_epochs} epochs already trained on through the '
        'persistent dataloader workers, so that their augmentation '
        'randomness continues exactly (ResumableCheckpointHook('
        'replay_workers=False) skips this).', logger='current')
    sampler = loader.sampler if hasattr(loader.sampler, 'set_epoch') else \
        getattr(loader.batch_sampler, 'sampler', None)
    for epoch in range(num_epochs):
        if hasattr(sampler, 'set_epoch'):  # as DistSamplerSeedHook does
            sampler.set_epoch(epoch)
        for _ in loader:
            pass


@HOOKS.register_module()
class ResumableCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments), whose checkpoints
    resume exactly and are never left half-written.

    * Each checkpoint stores every rank's RNG states under ``'rng_states'``
      (gathered from all ranks; only rank 0 writes). On resume they are
      restored right before the first new batch is fetched, after the
      skipped batches (see :class:`_ResumeIterator`).
    * Validation gets its own RNG states: training's are put back after it,
      so validating does not change how training continues.
    * Local checkpoints are written under a hidden ``.NAME.partial`` name,
      fsynced and renamed; ``last_checkpoint`` likewise. Checkpoints beyond
      ``max_keep_ckpts`` are deleted after the new one is in place (mmengine
      deletes first, so a kill in between left ``last_checkpoint`` naming a
      deleted file). Leftover ``.partial`` files are removed at start.
    * Auto-resume (``resume=True`` without ``load_from``, mmseg's
      ``tools/train.py --resume``) reads ``last_checkpoint`` relative to the
      work dir that holds it (:func:`~mmseg_vpt.utils.files.resolve_last_checkpoint`).

    Args:
        replay_workers (bool): With ``num_workers > 0`` (iteration-based
            loops) or persistent workers (epoch-based loops), load and
            discard the batches already trained on when resuming, so that
            the workers' augmentation randomness continues exactly. False
            skips them without loading (faster for long runs; augmentations
            then differ from the uninterrupted run's). Default: True.
        *args, **kwargs: ``CheckpointHook``'s.
    """

    def __init__(self, *args, replay_workers: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.replay_workers = replay_workers
        self._rng_to_save: Optional[List[dict]] = None
        self._rng_before_val: Optional[dict] = None
        self._rng_loaded: Optional[List[dict]] = None
        self._rng_at_first_epoch: Optional[dict] = None

    # ------------------------------------------------------------ resuming
    def before_run(self, runner) -> None:
        # runs before Runner.load_or_resume reads last_checkpoint itself
        if runner._resume and runner._load_from is None:
            resolved = resolve_last_checkpoint(runner.work_dir)
            if resolved is not None:
                runner._load_from = resolved

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # also called for load_from; before_train tells them apart
        self._rng_loaded = checkpoint.get(RNG_KEY)
        seed = checkpoint.get('meta', {}).get('seed')
        if runner._resume and seed is not None and seed != runner.seed:
            # the sampler was seeded when the runner built it
            runner.logger.warning(
                f'The data order of this run was seeded with {runner.seed}, '
                f'the resumed run\'s with {seed}: it does not continue as '
                f'the interrupted run would have. Set randomness.seed={seed} '
                '(tools/train.py --resume does when the config sets none).')

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            self._remove_partial_files(runner)
        states, self._rng_loaded = self._rng_loaded, None
        if runner.iter == 0 and runner.epoch == 0:
            return  # a fresh run, or load_from
        state = self._state_of_this_rank(runner, states)
        if state is None:
            return
        loop = runner.train_loop
        loader = loop.dataloader
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop
            replay = self.replay_workers and loader.num_workers > 0
            loop.dataloader_iterator = _ResumeIterator(loop, state, replay)
            return
        # Epoch-based: restored when the next epoch starts. Persistent
        # workers keep their RNG from epoch to epoch, so replay the epochs
        # trained on; that also creates the data iterator, which the
        # interrupted run did (drawing from torch's RNG) at its first epoch.
        if self.replay_workers and getattr(loader, 'persistent_workers',
                                           False):
            _replay_epochs(loader, runner.epoch)
        self._rng_at_first_epoch = state

    def before_train_epoch(self, runner) -> None:
        if self._rng_at_first_epoch is not None:
            restore_rng_state(self._rng_at_first_epoch)
            self._rng_at_first_epoch = None

    def _state_of_this_rank(self, runner,
                            states: Optional[List[dict]]) -> Optional[dict]:
        rank, world_size = get_dist_info()
        if not states:
            runner.logger.warning(
                'The resumed checkpoint has no RNG states (it was not saved '
                'by ResumableCheckpointHook): weights, optimizer, schedule '
                'and data order continue, but dropout and augmentation '
                'randomness do not continue as in the interrupted run.')
            return None
        if len(states) != world_size:
            runner.logger.warning(
                f'The resumed checkpoint holds RNG states of {len(states)} '
                f'processes, this run has {world_size}: randomness does not '
                'continue as in the interrupted run.')
            return None
        runner.logger.info(
            f'Restoring the RNG states of iteration {runner.iter} before '
            'the next batch: training continues as the interrupted run '
            'would have.')
        return states[rank]

    # ---------------------------------------------------------- validation
    def before_val(self, runner) -> None:
        self._rng_before_val = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._rng_before_val is not None:
            restore_rng_state(self._rng_before_val)
            self._rng_before_val = None

    # -------------------------------------------------------------- saving
    def _gather_rng_states(self) -> List[dict]:
        # during validation (save_best), record training's states
        return all_gather_object(self._rng_before_val or capture_rng_state())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._rng_to_save is not None:
            checkpoint[RNG_KEY] = self._rng_to_save

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        # Every rank runs this (only rank 0 writes), so gather here. Also
        # called from validation, to re-save with the new best score.
        self._rng_to_save = self._gather_rng_states()
        expired = self._keep_ckpt_bookkeeping(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        atomic = isinstance(self.file_backend, LocalBackend)
        runner.save_checkpoint(
            self.out_dir,
            partial_name(filename) if atomic else filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        self._rng_to_save = None
        if not is_main_process():
            return
        if atomic:
            replace_atomically(
                osp.join(self.out_dir, partial_name(filename)),
                self.last_ckpt)
        write_text_atomically(
            osp.join(runner.work_dir, LAST_CHECKPOINT), self.last_ckpt)
        for old in expired:
            self._remove_checkpoint(self.filename_tmpl.format(old))

    def _keep_ckpt_bookkeeping(self, runner, step) -> List[int]:
        """mmengine's ``max_keep_ckpts`` bookkeeping; returns the steps whose
        files to delete once the new checkpoint is saved."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return []
        expired = []
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            expired.append(self.keep_ckpt_ids.popleft())
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
        return expired

    def _remove_checkpoint(self, filename: str) -> None:
        path = self.file_backend.join_path(self.out_dir, filename)
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed saves directories
            self.file_backend.rmtree(path)

    def _remove_partial_files(self, runner) -> None:
        """Files of saves that a kill interrupted (nothing else writes them:
        :class:`~.work_dir.WorkDirLockHook` keeps other runs out)."""
        dirs = {self.out_dir, runner.work_dir}
        for path in sorted(p for d in dirs
                           for p in glob(osp.join(d, f'.*{PARTIAL_SUFFIX}'))):
            runner.logger.info(f'Removing {path}, left by an interrupted '
                               'save.')
            os.remove(path)
