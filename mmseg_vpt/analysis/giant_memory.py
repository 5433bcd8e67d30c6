"""Memory of a giant frozen backbone (``meta_init``): writing a random base
file, building and loading it, and one training step, each in a fresh
process (``tools/analysis/giant_memory.py`` is the command line).

* :func:`write_random_base`: a random base file for a config's backbone in
  its stored type (``frozen_dtype``), in timm's layout, written without the
  model ever existing in float32: the backbone is built with ``meta_init``
  and timm's init draws it a block at a time
  (:func:`~mmseg_vpt.models.deferred.init_deferred`).
* :func:`measure_load`: build the backbone, move it to the device, load the
  file (``init_weights``) and read every weight once, as a forward pass or a
  copy to the GPU would. Peak memory above the process's memory before the
  build, against the file's bytes: the load holds the model once, in the
  stored type, so the ratio is about 1.
* :func:`measure_step`: the whole segmentor of the config with its
  optimizer, one training step (``train_step``: forward, losses, backward,
  optimizer step) on a random batch at the config's crop size. Peak memory:
  resident memory of the whole process on the CPU (what the machine must
  have), ``torch.cuda.max_memory_allocated`` on a GPU; and the norm of the
  prompts' gradient, which must not be zero.

Memory is what :class:`~mmseg_vpt.analysis.benchmark.PeakMemory` reads: on
the CPU the process's peak resident set (``ru_maxrss``), which counts the
pages of a file-backed (``mmap``) weight once they are read.
"""
import json
import os
import os.path as osp
import sys
from typing import Any, Dict, List, Optional

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from ..checkpoint import model_from_config
from ..engine.runner_config import load_config
from ..utils.dist import convert_syncbn_to_bn
from ..utils.files import save_atomically
from .benchmark import (PeakMemory, random_batch, resolve_device,
                        run_in_fresh_process)

Spec = Dict[str, Any]
KINDS = ('write', 'load', 'step')
DEFAULT_SPEC: Spec = dict(config=None, cfg_options=None, base=None,
                          batch_size=1, device='auto', threads=None, seed=0,
                          meta_init=True)
# the targets for the 7B row
LOAD_RATIO_TARGET = 1.1
STEP_BYTES_TARGET = 20 * 10**9
TIMM_PREFIX = 'timm_model.'


def make_spec(**kwargs) -> Spec:
    unknown = set(kwargs) - set(DEFAULT_SPEC)
    if unknown:
        raise ValueError(f'unknown giant_memory settings: {sorted(unknown)}')
    return dict(DEFAULT_SPEC, **kwargs)


def giant_config(spec: Spec) -> Config:
    """The config of ``spec`` as measured: BN for SyncBN (one process), the
    backbone loading ``spec['base']``, built on the meta device unless
    ``spec['meta_init']`` is False (the ordinary build, for comparison).

    Raises:
        ValueError: the config's backbone does not set ``meta_init=True``.
    """
    cfg = load_config(spec['config'], spec['cfg_options'])
    convert_syncbn_to_bn(cfg.model)
    backbone = cfg.model.backbone
    if not backbone.get('meta_init', False):
        raise ValueError(
            f"{spec['config']}: model.backbone ({backbone.get('type')}) "
            'does not set meta_init=True; this tool measures backbones built '
            'on the meta device (VPTTimmViT(meta_init=True))')
    backbone.meta_init = bool(spec['meta_init'])
    if spec['base'] is not None:
        backbone.init_cfg = dict(type='Pretrained', checkpoint=spec['base'])
    return cfg


def _quiet() -> None:
    # mmengine logs every parameter's init and lr; a new instance becomes
    # its current logger
    MMLogger.get_instance(f'mmseg_vpt.giant_memory.{os.getpid()}',
                          log_level='ERROR')


def _setup(spec: Spec) -> torch.device:
    _quiet()
    if spec['threads']:
        torch.set_num_threads(spec['threads'])
    torch.manual_seed(spec['seed'])
    return resolve_device(spec['device'])


def _state_bytes(module: torch.nn.Module) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for t in module.state_dict().values():
        key = str(t.dtype).replace('torch.', '')
        out[key] = out.get(key, 0) + t.numel() * t.element_size()
    return out


def write_random_base(spec: Spec, out: str) -> Dict[str, Any]:
    """Write random base weights for the backbone of ``spec['config']`` to
    ``out`` (timm's layout, the config's ``frozen_dtype``; seeded)."""
    _setup(spec)
    cfg = giant_config(dict(spec, base=None, meta_init=True))
    cfg.model.backbone.update(prompt_length=0, frozen_exclude=[],
                              init_cfg=None, with_cp=False)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    state = {k[len(TIMM_PREFIX):]: v for k, v in backbone.state_dict().items()
             if k.startswith(TIMM_PREFIX)}
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    save_atomically(state, out)
    return dict(kind='write', base=out, file_bytes=osp.getsize(out),
                tensors=len(state),
                values=sum(v.numel() for v in state.values()),
                state_bytes=_state_bytes(backbone))


def read_every_weight(module: torch.nn.Module) -> int:
    """Read each byte of every tensor of ``module``'s state once (a
    reduction, no copy); returns the bytes read."""
    total = 0
    for t in module.state_dict().values():
        flat = t.detach().reshape(-1)
        if flat.numel():
            flat.view(torch.uint8).max()
        total += flat.numel() * flat.element_size()
    return total


def measure_load(spec: Spec) -> Dict[str, Any]:
    """Build the backbone, load ``spec['base']`` and read every weight."""
    device = _setup(spec)
    cfg = giant_config(spec)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    file_bytes = osp.getsize(spec['base'])
    memory = PeakMemory(device)
    backbone = MODELS.build(cfg.model.backbone)
    backbone.to(device)  # before the weights, as mmengine's runner does
    backbone.init_weights()
    read = read_every_weight(backbone)
    result = dict(memory.read())
    frozen = [p for p in backbone.parameters() if not p.requires_grad]
    result.update(
        kind='load', config=spec['config'], base=spec['base'],
        device=str(device), file_bytes=file_bytes, bytes_read=read,
        load_ratio=result['peak_mem'] / file_bytes,
        load_ratio_target=LOAD_RATIO_TARGET,
        meta_init=backbone.meta_init,
        deferred_left=len(backbone.deferred_weights),
        frozen_params=sum(p.numel() for p in frozen),
        frozen_float32_bytes=sum(p.numel() * 4 for p in frozen
                                 if p.dtype == torch.float32),
        state_bytes=_state_bytes(backbone))
    return result


def _eval_batch_norms(model: torch.nn.Module) -> List[str]:
    """Put the heads' BatchNorm layers in eval mode (running statistics): a
    batch of one has a single value per channel at a 1x1 map (UPerHead's
    pool scale 1), which training-mode BatchNorm refuses."""
    names = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            names.append(name)
    return names


def measure_step(spec: Spec) -> Dict[str, Any]:
    """One training step of the whole segmentor loading ``spec['base']``."""
    device = _setup(spec)
    cfg = giant_config(spec)
    memory = PeakMemory(device)
    model = model_from_config(cfg)
    model.to(device)  # before the weights, as mmengine's runner does
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    eval_bn = _eval_batch_norms(model) if spec['batch_size'] == 1 else []
    prompts = [p for n, p in model.backbone.named_parameters()
               if 'prompt' in n and p.requires_grad]
    grads: Dict[int, float] = {}  # the last accumulation is the gradient
    for i, p in enumerate(prompts):
        p.register_post_accumulate_grad_hook(
            lambda t, i=i: grads.__setitem__(i, float(t.grad.float().norm())))
    data = random_batch(cfg, spec['batch_size'], spec['seed'])
    losses = model.train_step(data, optim_wrapper)
    result = dict(memory.read())
    backbone = model.backbone
    result.update(
        kind='step', config=spec['config'], base=spec['base'],
        device=str(device), batch_size=spec['batch_size'],
        crop_size=list(cfg.model.data_preprocessor.size),
        losses={k: float(v) for k, v in losses.items()},
        prompt_tensors=len(prompts),
        prompt_grad_norm=(sum(g * g for g in grads.values()) ** 0.5
                          if grads else None),
        step_target_bytes=STEP_BYTES_TARGET,
        trainable_params=sum(p.numel() for p in model.parameters()
                             if p.requires_grad),
        frozen_dtype=getattr(backbone, 'frozen_dtype', None),
        with_cp=bool(getattr(backbone, 'with_cp', False)),
        batch_norm_eval=len(eval_bn),
        threads=torch.get_num_threads())
    return result


RUNNERS = dict(load=measure_load, step=measure_step)


def run_isolated(kind: str, spec: Spec,
                 out: Optional[str] = None) -> Dict[str, Any]:
    """``kind`` ('write' with ``out``, 'load' or 'step') in a fresh Python
    process (its progress goes to this process's stderr)."""
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    return run_in_fresh_process(
        'mmseg_vpt.analysis.giant_memory', [kind, json.dumps(spec)],
        [out] if out else [], what=f'giant_memory {kind} of {spec["config"]}')


def check_targets(load: Dict[str, Any], step: Optional[Dict[str, Any]]
                  ) -> List[str]:
    """The targets a result misses (empty when all are met)."""
    missed = []
    if load['load_ratio'] > LOAD_RATIO_TARGET:
        missed.append(f"building and loading peaked at {load['load_ratio']:.3f}"
                      f'x the file bytes (target <= {LOAD_RATIO_TARGET}x)')
    if load['deferred_left']:
        missed.append(f"{load['deferred_left']} weights were not loaded")
    if step is not None:
        peak = step['peak_raw'] if step['mem_kind'].startswith('cpu') \
            else step['peak_mem']
        if peak > STEP_BYTES_TARGET:
            missed.append(f'the training step peaked at {peak / 1e9:.2f} GB '
                          f'(target <= {STEP_BYTES_TARGET / 1e9:.0f} GB)')
        if not step['prompt_grad_norm']:
            missed.append('the prompts got no gradient')
    return missed


def _gb(n: float) -> str:
    return f'{n / 1e9:.3f}'


def format_report(load: Dict[str, Any],
                  step: Optional[Dict[str, Any]]) -> str:
    """A Markdown table of the measurements, with the targets."""
    lines = ['| measurement | value | target |', '|---|---|---|',
             f"| base file | {_gb(load['file_bytes'])} GB | |",
             f"| build + load, peak above the process before it "
             f"({load['mem_kind']}) | {_gb(load['peak_mem'])} GB = "
             f"{load['load_ratio']:.3f}x the file | <= "
             f'{LOAD_RATIO_TARGET}x |',
             f"| frozen weights stored in float32 | "
             f"{_gb(load['frozen_float32_bytes'])} GB | |"]
    if step is not None:
        cpu = step['mem_kind'].startswith('cpu')
        peak = step['peak_raw'] if cpu else step['peak_mem']
        what = 'resident, whole process' if cpu else 'max_memory_allocated'
        lines += [
            f"| training step, batch {step['batch_size']}, "
            f"{step['crop_size'][0]}x{step['crop_size'][1]}, peak ({what}) "
            f'| {_gb(peak)} GB | <= {STEP_BYTES_TARGET / 1e9:.0f} GB |',
            f"| prompts' gradient norm ({step['prompt_tensors']} tensors) | "
            f"{step['prompt_grad_norm']:.3g} | > 0 |"]
    return '\n'.join(lines)


def _main(argv: List[str]) -> int:
    kind, spec, result_file = argv[0], json.loads(argv[1]), argv[2]
    if kind == 'write':
        result = write_random_base(spec, argv[3])
    else:
        result = RUNNERS[kind](spec)
    with open(result_file, 'w') as f:
        json.dump(result, f)
    return 0


if __name__ == '__main__':
    sys.exit(_main(sys.argv[1:]))
