"""Sharding the frozen backbone across processes with torch's FSDP2
(``torch.distributed.fsdp.fully_shard``), as an mmengine model wrapper.

With prompt tuning almost every parameter is frozen, so the memory that
grows with the backbone is its frozen weights, held whole by every process
under DDP. :class:`VPTFullyShardedWrapper` shards them instead: each layer of
``model.backbone.layer_modules()`` (transformer blocks, conv stages) becomes
its own FSDP unit, and the backbone itself a last unit for what is left of
it (patch embedding, position embedding, norms, Swin's patch merging). A
unit's weights are all-gathered for its forward (and again for the backward
through it) and freed after, so each of N processes holds about 1/N of the
frozen bytes between layers.

Every trainable parameter (prompts, adapters, tuned biases, neck, heads) is
left out of the units (``ignored_params``): it stays a whole, plain tensor on
every process, with whole optimizer state, and its gradients are averaged
across processes after backward, as DDP does. So FSDP never reduces a
gradient (only trainable parameters are reduced, by
:meth:`VPTFullyShardedWrapper.average_gradients`), torch issue #162338
(FSDP2 on gloo summing instead of averaging) cannot arise, and a checkpoint's
trained tensors and optimizer state are the plain tensors DDP would save.

The units are formed at the first train / val / test step, not when the
runner wraps the model: mmengine initialises the weights (base weights
included) and loads ``load_from`` / ``--resume`` checkpoints after wrapping,
and those loads write plain tensors into plain parameters. Frozen sharded
tensors never reach a checkpoint: tuned-only task files omit them (they come
back from the base file), which is why a training run needs the backbone's
``Pretrained`` base weights.
"""
import logging
import weakref
from contextlib import contextmanager
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dist import (all_gather_object, all_reduce, all_reduce_params,
                           broadcast, get_world_size, is_distributed)
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from ..checkpoint import BASE_MODULE, find_base
from ..utils.params import has_frozen_parameters, unwrap_model

WRAPPER = 'VPTFullyShardedWrapper'

#: Gradients are averaged in buckets of this many MB (DDP's default).
BUCKET_MB = 25


def _mb(n: int) -> str:
    return f'{n / 2**20:.2f} MB'


def _local(param: torch.Tensor) -> torch.Tensor:
    return param.to_local() if isinstance(param, DTensor) else param


def frozen_parameter_bytes(model: nn.Module) -> Tuple[int, int]:
    """``(held, full)``: the bytes of storage this process holds for the
    frozen parameters of ``model`` (a shard's padded local storage for a
    sharded one, each storage counted once), and the bytes of those
    parameters whole."""
    held, full, seen = 0, 0, set()
    for param in unwrap_model(model).parameters():
        if param.requires_grad:
            continue
        full += param.numel() * param.element_size()
        storage = _local(param).untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            held += storage.nbytes()
    return held, full


def check_unsharded(state: Dict[str, Any], source: str) -> None:
    """Refuse a state dict that holds FSDP shards (``DTensor``): only rank 0
    writes checkpoints, so a shard would be saved as if it were the whole
    tensor. ``source`` names what holds ``state``."""
    sharded = [k for k, v in state.items() if isinstance(v, DTensor)]
    if sharded:
        raise RuntimeError(
            f'{source} would hold {len(sharded)} tensors that '
            f'{WRAPPER} shards across the processes ({", ".join(sharded[:5])}'
            f'{", ..." if len(sharded) > 5 else ""}), of which this process '
            'has a part only. A sharded run writes tuned-only task files, '
            'which leave frozen tensors to the base weights; these are kept '
            'because checkpoints are full (no Pretrained base weights, or '
            'TunedCheckpointHook(enabled=False)) or because the base file '
            'does not give their values (see the TunedCheckpointHook log at '
            'the start). Train this model without --fsdp / model_wrapper_cfg, '
            'or from base weights that hold these values.')


def require_base_weights(model: nn.Module) -> None:
    """Refuse to train ``model`` sharded when its backbone has frozen
    parameters but no ``Pretrained`` base weights: its checkpoints would
    have to hold the frozen weights, which a sharded run cannot gather
    (only rank 0 writes)."""
    backbone = getattr(unwrap_model(model), BASE_MODULE, None)
    if backbone is None or not has_frozen_parameters(backbone) or \
            find_base(model) is not None:
        return
    raise ValueError(
        f'{WRAPPER}: training with a sharded backbone needs its base '
        f"weights, model.{BASE_MODULE}.init_cfg=dict(type='Pretrained', "
        'checkpoint=...): checkpoints hold only what trains and the frozen '
        'weights come back from that file, since sharded frozen weights are '
        'never gathered into a checkpoint. This model is randomly '
        'initialised; train it with DDP (no --fsdp / model_wrapper_cfg) or '
        'give it base weights (tools/model_converters/random_base.py writes '
        'random ones).')


# mmengine's own registry: Runner.wrap_model looks the type up there (a
# child scope's registry is not searched), and every scope finds it as a
# parent
@MODEL_WRAPPERS.register_module()
class VPTFullyShardedWrapper(nn.Module):
    """Train, validate and test with the frozen backbone sharded across the
    processes by torch's FSDP2, prompts and heads kept whole.

    Select it in a config with ``model_wrapper_cfg=dict(
    type='VPTFullyShardedWrapper')`` or with ``tools/train.py --fsdp``, and
    start the processes with ``tools/dist_train.sh`` (or any launcher). On
    CPU the processes talk over gloo (:func:`~mmseg_vpt.utils.dist.
    prepare_distributed`).

    Units: each layer of ``model.backbone.layer_modules()`` that has frozen
    parameters, then ``model.backbone`` for the frozen parameters outside
    them, each parameter split along its first dimension over a 1-D device
    mesh of all processes (the model's device type: ``cpu`` with gloo,
    ``cuda`` with NCCL). Trainable parameters are ignored by FSDP: they stay
    whole on every process and :meth:`average_gradients` averages their
    gradients (sum, then divide by the number of processes) before each
    optimizer step, with gradient accumulation as in mmengine's
    ``OptimWrapper.update_params``. A trainable parameter that got no
    gradient on some process gets zeros there, so every process steps the
    same parameters.

    The units are formed at the first step (see the module's docstring);
    parameters the optimizer was built with are swapped for their shards
    then, so that the whole frozen tensors are freed. One log line reports
    the frozen bytes each process holds.

    Validation and testing run sharded when each process runs the backbone
    once per batch (``test_cfg.mode='whole'``). With ``mode='slide'`` the
    number of crops, and so of forward passes, depends on each process's
    images; every unit is then gathered whole for the step (frozen weights
    whole during that step only), since a unit's all-gather needs every
    process.

    Args:
        module (nn.Module): The segmentor (or classifier); it must have a
            ``backbone`` with ``layer_modules()`` (every VPT backbone has).
        reshard_after_forward (bool): Free each unit's gathered weights after
            its forward and gather them again for the backward (True), or
            keep them until the backward is through the unit (False: less
            communication, more memory). Default: True.
        broadcast_buffers (bool): Broadcast rank 0's buffers (BN running
            statistics) before each training forward, as DDP's option of the
            name. Default: False (mmengine's default for DDP).
        find_unused_parameters (bool): Accepted for DDP configs; parameters
            without a gradient are always handled. Default: False.
        device_ids (list, optional): Accepted for DDP configs (mmengine and
            ``tools/train.py`` set it); the mesh uses the model's device.
    """

    def __init__(self,
                 module: nn.Module,
                 reshard_after_forward: bool = True,
                 broadcast_buffers: bool = False,
                 find_unused_parameters: bool = False,
                 device_ids: Optional[List[Union[int, torch.device]]] = None
                 ) -> None:
        super().__init__()
        if not isinstance(reshard_after_forward, bool):
            raise TypeError(f'{WRAPPER}: reshard_after_forward must be True '
                            f'or False, got {reshard_after_forward!r}')
        net = unwrap_model(module)
        backbone = getattr(net, BASE_MODULE, None)
        if backbone is None or not callable(
                getattr(backbone, 'layer_modules', None)):
            found = 'no backbone' if backbone is None else \
                f'a {type(backbone).__name__} backbone without layer_modules()'
            raise TypeError(
                f'{WRAPPER} shards model.{BASE_MODULE} layer by layer (its '
                f'layer_modules(), which every VPT backbone has); the '
                f'{type(net).__name__} it was given has {found}')
        self.module = module
        self.reshard_after_forward = reshard_after_forward
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.device_ids = device_ids
        self._units: List[nn.Module] = []
        self._sharded = False
        # id(unsharded parameter) -> (weakref to it, its shard), to swap an
        # optimizer's references and to see whether anything else holds one
        self._replaced: Dict[int, Tuple[weakref.ref, nn.Parameter]] = {}
        self._optimizers_swapped: set = set()
        self._reported: Optional[str] = None  # 'train' or 'eval'
        self._warned_gather = False

    # ------------------------------------------------------------ sharding
    @property
    def units(self) -> List[nn.Module]:
        """The FSDP units, innermost first (empty before the first step)."""
        return list(self._units)

    def shard(self) -> None:
        """Form the FSDP units (once; every process must call it)."""
        if self._sharded:
            return
        self._sharded = True
        if not is_distributed() or get_world_size() < 2:
            print_log(f'{WRAPPER}: one process, nothing to shard.',
                      logger='current', level=logging.WARNING)
            return
        backbone = getattr(unwrap_model(self.module), BASE_MODULE)
        device = next(backbone.parameters()).device
        mesh = init_device_mesh(device.type, (get_world_size(), ))
        candidates = list(backbone.layer_modules()) + [backbone]
        for unit in candidates:
            if not has_frozen_parameters(unit):
                continue
            before = self._direct_params(unit)
            fully_shard(
                unit,
                mesh=mesh,
                reshard_after_forward=self.reshard_after_forward,
                ignored_params={
                    p
                    for p in unit.parameters() if p.requires_grad
                })
            for (owner, name), old in before.items():
                new = owner._parameters[name]
                if new is not old:
                    self._replaced[id(old)] = (weakref.ref(old), new)
            self._units.append(unit)

    @staticmethod
    def _direct_params(unit: nn.Module) -> Dict[Tuple[nn.Module, str],
                                                 nn.Parameter]:
        # the frozen parameters fully_shard replaces; units already formed
        # hold DTensors, which it leaves as they are
        return {(owner, name): p
                for owner in unit.modules()
                for name, p in owner._parameters.items()
                if p is not None and not p.requires_grad
                and not isinstance(p, DTensor)}

    def _swap_optimizer_params(self, optim_wrapper: OptimWrapper) -> None:
        """Point an optimizer built before sharding at the shards, so that it
        does not keep the whole frozen tensors alive (it never steps them:
        they get no gradient)."""
        optimizer = getattr(optim_wrapper, 'optimizer', None)
        if optimizer is None or id(optimizer) in self._optimizers_swapped:
            return
        self._optimizers_swapped.add(id(optimizer))
        for group in optimizer.param_groups:
            params = group['params']
            for i, param in enumerate(params):
                entry = self._replaced.get(id(param))
                if entry is not None and entry[0]() is param:
                    params[i] = entry[1]

    def _report(self, step: str) -> None:
        """Log the frozen bytes each process holds, once (again at the first
        training step if an evaluation came first: the optimizer's
        references are swapped then)."""
        if not self._units or self._reported in (step, 'train'):
            return
        self._reported = step
        held, full = frozen_parameter_bytes(self.module)
        leaked = {}
        for ref, _ in self._replaced.values():
            old = ref()
            if old is not None:
                leaked[old.untyped_storage().data_ptr()] = \
                    old.untyped_storage().nbytes()
        held += sum(leaked.values())
        counts = all_gather_object((held, full, len(leaked)))
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        per_rank = ', '.join(
            f'rank {r}: {h:,} of {f:,} bytes ({100 * h / max(f, 1):.1f}%)'
            for r, (h, f, _) in enumerate(counts))
        print_log(
            f'{WRAPPER}: model.{BASE_MODULE} sharded over {len(counts)} '
            f'processes in {len(self._units)} FSDP units; {len(trainable)} '
            'trainable tensors '
            f'({_mb(sum(p.numel() * p.element_size() for p in trainable))}) '
            'stay whole on every process, their gradients averaged. '
            f'Frozen parameters held per process: {per_rank}.',
            logger='current')
        stuck = sum(n for _, _, n in counts)
        if stuck and step == 'train':
            print_log(
                f'{WRAPPER}: {stuck} whole frozen parameters are still '
                'referenced after sharding (by something other than the '
                'optimizer, whose references are swapped for the shards): '
                'their memory is not freed.',
                logger='current', level=logging.WARNING)

    # ------------------------------------------------------------ gradients
    def average_gradients(self) -> None:
        """Average the gradients of the trainable parameters across the
        processes (each process must call it, at the same step)."""
        if not is_distributed():
            return
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            return
        # which parameters got a gradient on some process
        has_grad = torch.tensor([p.grad is not None for p in params],
                                dtype=torch.uint8, device=params[0].device)
        all_reduce(has_grad, op='max')
        grads = []
        for param, any_grad in zip(params, has_grad.tolist()):
            if not any_grad:
                continue
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grads.append(param.grad)
        all_reduce_params(grads, bucket_size_mb=BUCKET_MB, op='mean')

    def _broadcast_buffers(self) -> None:
        for buffer in self.module.buffers():
            broadcast(buffer, 0)

    # ---------------------------------------------------------------- steps
    def forward(self, *args, **kwargs) -> Any:
        return self.module(*args, **kwargs)

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """mmengine's ``MMDistributedDataParallel.train_step``, with the
        trainable parameters' gradients averaged before the optimizer
        steps."""
        if not self._sharded:
            require_base_weights(self.module)
            self.shard()
        self._swap_optimizer_params(optim_wrapper)
        self._report('train')
        if self.broadcast_buffers:
            self._broadcast_buffers()
        with optim_wrapper.optim_context(self):
            data = self.module.data_preprocessor(data, training=True)
            losses = self._run_forward(data, mode='loss')
        parsed_loss, log_vars = self.module.parse_losses(losses)
        # OptimWrapper.update_params, with the average between backward and
        # step (where DDP's all-reduce has finished)
        optim_wrapper.backward(optim_wrapper.scale_loss(parsed_loss))
        if optim_wrapper.should_update():
            self.average_gradients()
            optim_wrapper.step()
            optim_wrapper.zero_grad()
        return log_vars

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        with self._eval_context():
            return self.module.val_step(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        with self._eval_context():
            return self.module.test_step(data)

    def _run_forward(self, data: Union[dict, tuple, list], mode: str) -> Any:
        if isinstance(data, dict):
            return self(**data, mode=mode)
        if isinstance(data, (list, tuple)):
            return self(*data, mode=mode)
        raise TypeError('Output of `data_preprocessor` should be list, tuple '
                        f'or dict, but got {type(data)}')

    def _forwards_vary(self) -> bool:
        """Whether processes may run the backbone a different number of
        times in one step (slide inference: crops depend on image size)."""
        test_cfg = getattr(unwrap_model(self.module), 'test_cfg', None)
        return bool(test_cfg) and test_cfg.get('mode') == 'slide'

    @contextmanager
    def _eval_context(self):
        self.shard()
        self._report('eval')
        if not self._units or not self._forwards_vary():
            yield
            return
        if not self._warned_gather:
            self._warned_gather = True
            print_log(
                f"{WRAPPER}: test_cfg.mode='slide' runs the backbone once "
                'per crop, as many times as each process\'s images need; '
                'each evaluation step gathers the frozen weights whole '
                '(training stays sharded).', logger='current')
        for unit in self._units:
            unit.unshard()
            unit.set_reshard_after_forward(False)
        try:
            yield
        finally:
            for unit in self._units:
                unit.reshard()
                unit.set_reshard_after_forward(self.reshard_after_forward)


def enable_fsdp(cfg: Config) -> None:
    """Select :class:`VPTFullyShardedWrapper` as ``cfg.model_wrapper_cfg``
    (``tools/train.py --fsdp``), keeping its other settings."""
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    current = wrapper.get('type')
    if current not in (None, WRAPPER):
        raise ValueError(
            f'--fsdp selects model_wrapper_cfg type {WRAPPER}, but the config '
            f'sets model_wrapper_cfg.type={current!r}; remove that setting '
            'or drop --fsdp')
    wrapper['type'] = WRAPPER
    cfg.model_wrapper_cfg = wrapper


__all__ = [
    'VPTFullyShardedWrapper', 'check_unsharded', 'enable_fsdp',
    'frozen_parameter_bytes', 'require_base_weights'
]
