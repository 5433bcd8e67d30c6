"""Tuned-only checkpoints during training (see :mod:`mmseg_vpt.checkpoint`).
"""
from typing import Optional, Union

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..checkpoint import (BASE_MODULE, TunedPlan, checkpoint_state,
                          is_tuned_checkpoint, plan_tuned, state_bytes,
                          unwrap_model)
from .fsdp import check_unsharded


def _mb(n: int) -> str:
    return f'{n / 2**20:.2f} MB'


@HOOKS.register_module()
class TunedCheckpointHook(Hook):
    """Save only the tuned tensors; load base weights under tuned ones.

    Saving (``before_save_checkpoint``): when ``model.<module>`` has a
    ``Pretrained`` init_cfg and frozen parameters, the checkpoint's
    ``state_dict`` keeps only what :func:`~mmseg_vpt.checkpoint.split_tuned`
    says a task needs (trained tensors, all head state, backbone tensors the
    base file lacks or does not reproduce) and ``meta['vpt_tuned']`` records
    the base file, its SHA-256, the omitted tensors' fingerprints and the
    freeze policy. Optimizer, scheduler and message-hub state stay, so
    ``--resume`` works as before. Otherwise (random init, full fine-tuning)
    checkpoints stay full.

    Loading (``after_load_checkpoint``, i.e. ``load_from``, ``--resume`` and
    ``tools/test.py``): every checkpoint must fit the model exactly (keys and
    shapes; the error lists what does not) unless ``load_partial``. For a
    tuned checkpoint the base weights load first, through the backbone's
    ``init_weights`` (``Runner.test`` never calls it), with the hash checked;
    mmengine then loads the completed state dict
    (:func:`~mmseg_vpt.checkpoint.checkpoint_state`).

    Args:
        module (str): The segmentor attribute the base weights initialise.
            Default: 'backbone'.
        check_base_hash (bool): Refuse a base file whose SHA-256 differs
            from the recorded one (otherwise only warn). Default: True.
        enabled (bool): Write tuned-only checkpoints. Loading them is always
            supported. Default: True.
        load_partial (bool): Load only the tensors of a ``load_from`` /
            test checkpoint that fit the model, logging what was loaded,
            skipped and left to the config's initialisation, instead of
            stopping (``--load-partial``). Never applies to ``--resume``.
            Default: False.
    """

    priority = 'VERY_LOW'  # filter after other hooks have added state

    def __init__(self, module: str = BASE_MODULE,
                 check_base_hash: bool = True, enabled: bool = True,
                 load_partial: bool = False) -> None:
        self.module = module
        self.check_base_hash = check_base_hash
        self.enabled = enabled
        self.load_partial = load_partial
        self._plan: Optional[Union[TunedPlan, str]] = None

    def _get_plan(self, runner) -> Optional[TunedPlan]:
        if not self.enabled:
            return None
        model = unwrap_model(runner.model)
        plan = self._plan
        if isinstance(plan, TunedPlan):
            # frozen tensors cannot change; re-plan only if the freeze did
            params = dict(model.named_parameters())
            if any(k in params and params[k].requires_grad
                   for k in plan.omitted):
                plan = None
        if plan is None:
            plan = self._plan = plan_tuned(model, self.module)
            self._log_plan(runner, plan)
        return plan if isinstance(plan, TunedPlan) else None

    def _log_plan(self, runner, plan: Union[TunedPlan, str]) -> None:
        if isinstance(plan, str):
            runner.logger.info(f'Checkpoints stay full: {plan}.')
            return
        state = unwrap_model(runner.model).state_dict()
        kept = [v for k, v in state.items() if k not in plan.omitted]
        runner.logger.info(
            f'Tuned-only checkpoints: {len(kept)} tensors '
            f'({_mb(state_bytes(kept))}) stored, {len(plan.omitted)} '
            f'({_mb(plan.omitted_bytes)}) come from the base weights '
            f'{plan.base.checkpoint} (sha256 {plan.base_sha256[:12]}...).')
        if plan.differ_from_base:
            runner.logger.warning(
                f'{len(plan.differ_from_base)} frozen tensors of '
                f'model.{self.module} differ from what the base weights load '
                f'({", ".join(plan.differ_from_base[:5])}, ...): they are '
                'stored in every checkpoint. Was the backbone loaded from '
                'another file (load_from, a fine-tuned model)?')

    def before_train(self, runner) -> None:
        # plan up front: problems show before hours of training, not at the
        # first checkpoint
        if self.enabled and is_main_process():
            self._get_plan(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        plan = self._get_plan(runner)
        if plan is not None:
            plan.apply(checkpoint)
        # a frozen tensor sharded by VPTFullyShardedWrapper that the plan
        # keeps would be written as this process's shard
        check_unsharded(checkpoint['state_dict'], 'The checkpoint')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        name = getattr(runner, '_load_from', None) or \
            f'the latest checkpoint in {runner.work_dir}'
        kind = 'tuned checkpoint' if is_tuned_checkpoint(checkpoint) else \
            'checkpoint'
        partial = self.load_partial
        if partial and getattr(runner, '_resume', False):
            runner.logger.warning(
                'load_partial (--load-partial) does not apply to resuming: a '
                'resumed run needs the exact model its optimizer state is '
                'for.')
            partial = False
        checkpoint['state_dict'] = checkpoint_state(
            runner.model, checkpoint, f'{kind} {name}', self.check_base_hash,
            partial=partial)
