"""Giant frozen backbones that never exist in float32 (``meta_init``).

A ``VPTTimmViT(meta_init=True)`` is built on the meta device, its weights
deferred, and filled straight from the base file in their stored type. At
toy sizes of the real architectures (DINOv3 ViT-7B/16, DINOv2-g/14 reg4) it
equals, tensor for tensor and output for output, the ordinary backbone that
loads the same file with the same ``frozen_dtype``; no float32 tensor the
size of a weight is ever made; building and loading a bf16 file peaks at the
file's size (a subprocess, at 250M parameters); its tuned-only task file
round-trips through mmseg's ``init_model``, with the base reference read from
the file rather than from a copy; the 1B / 7B config rows follow their
setting; tools/train.py and tools/test.py run the 7B row at test size; and
the memory tool runs end to end.
"""
import copy
import json

import pytest
import timm
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.apis import init_model
from mmseg.registry import MODELS
from torch.utils._python_dispatch import TorchDispatchMode

from mmseg_vpt.analysis.benchmark import random_batch
from mmseg_vpt.analysis.giant_memory import (LOAD_RATIO_TARGET, make_spec,
                                             run_isolated)
from mmseg_vpt.checkpoint import (TUNED_META_KEY, base_reference,
                                  model_from_config, plan_tuned,
                                  tensor_digest)
from mmseg_vpt.models.pretrained import PretrainedReference
from mmseg_vpt.utils.dist import convert_syncbn_to_bn

from .tools_helpers import (PYTHON, REPO, eval_cmd, free_port,
                            metric_values, no_workers, read_checkpoint, run, run_fails,
                            short_schedule, synthetic_workspace, train_cmd)
from .vpt_helpers import assert_outputs_equal, randomize_

# timm model, toy size of the real architecture, input size
TOYS = {
    'dinov3-7b16': ('vit_7b_patch16_dinov3',
                    dict(depth=4, embed_dim=64, num_heads=2, img_size=64),
                    64),
    'dinov2-g14-reg4': ('vit_giant_patch14_reg4_dinov2',
                        dict(depth=4, embed_dim=96, num_heads=2, img_size=56),
                        56),
}
ROWS = {
    'dinov3-7b16': ('vit_7b_patch16_dinov3.lvd1689m', 4096),
    'dinov2-g14-reg4': ('vit_giant_patch14_reg4_dinov2.lvd142m', 1536),
}


def row(token: str, kind: str) -> str:
    return f'configs/vpt_timm/upernet_{token}_mln_{kind}_ade20k-512x512.py'


def write_base(path, name: str, kwargs: dict, dtype=torch.float32,
               seed: int = 0) -> str:
    """A timm-layout base file of ``name`` at toy size, every weight moved
    off its default value, saved in ``dtype``."""
    torch.manual_seed(seed)
    source = randomize_(timm.create_model(name, pretrained=False,
                                          num_classes=0, **kwargs), std=0.2)
    torch.save({k: v.to(dtype) for k, v in source.state_dict().items()},
               path)
    return str(path)


def backbone_cfg(token: str, base, **kwargs) -> dict:
    name, toy, _ = TOYS[token]
    cfg = dict(type='VPTTimmViT', model_name=name, timm_kwargs=dict(toy),
               out_indices=(0, 1, 3), prompt_length=3, frozen_dtype='bf16',
               with_cp=True)
    if base is not None:
        cfg['init_cfg'] = dict(type='Pretrained', checkpoint=base)
    cfg.update(kwargs)
    return cfg


def build(cfg: dict) -> nn.Module:
    init_default_scope('mmseg')
    return MODELS.build(copy.deepcopy(cfg))


def all_tensors(module: nn.Module) -> dict:
    out = dict(module.named_buffers())  # non-persistent ones too
    out.update(module.state_dict())
    return out


@pytest.mark.parametrize('file_dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('token', list(TOYS))
def test_meta_built_backbone_equals_the_ordinary_one_loading_the_file(
        tmp_path, token, file_dtype):
    base = write_base(tmp_path / 'base.pth', *TOYS[token][:2], file_dtype)
    cfg = backbone_cfg(token, base)
    torch.manual_seed(0)
    ordinary = build(cfg)
    ordinary.init_weights()
    meta = build(dict(cfg, meta_init=True))
    assert meta.deferred_weights
    params = dict(meta.named_parameters())
    meta.init_weights()
    assert not meta.deferred_weights
    # the same Parameter objects, now holding the file's values
    assert all(p is params[n] for n, p in meta.named_parameters())
    # prompts are drawn after timm's random init in the ordinary build, so
    # from another point of the random stream
    with torch.no_grad():
        meta.prompt_embeddings.copy_(ordinary.prompt_embeddings)

    a, b = all_tensors(ordinary), all_tensors(meta)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key
    frozen = [(n, p) for n, p in meta.named_parameters()
              if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for _, p in frozen)

    size = TOYS[token][2]
    x = torch.randn(2, 3, size, size)
    ordinary.train()
    meta.train()
    outs = [ordinary(x), meta(x)]
    assert_outputs_equal(*outs)
    for out in outs:
        sum(o.square().mean() for o in out).backward()
    assert torch.equal(ordinary.prompt_embeddings.grad,
                       meta.prompt_embeddings.grad)
    assert meta.prompt_embeddings.grad.abs().sum() > 0


class Float32Weights(TorchDispatchMode):
    """Records every float32 tensor of at least ``numel`` elements that an
    operation returns on a real device."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 \
                    and not t.is_meta and t.numel() >= self.numel:
                self.seen.append((str(func), tuple(t.shape)))
        return out


@pytest.mark.parametrize('token', list(TOYS))
def test_building_and_loading_makes_no_float32_weight(tmp_path, token):
    """Not one float32 tensor as large as the smallest weight matrix is made
    while a meta-built backbone is built and loads a bf16 file; the
    ordinary build makes one for every weight."""
    name, toy, _ = TOYS[token]
    base = write_base(tmp_path / 'base.pth', name, toy, torch.bfloat16)
    cfg = backbone_cfg(token, base)
    smallest = toy['embed_dim'] ** 2  # e.g. attn.proj.weight
    with Float32Weights(smallest) as meta_run:
        build(dict(cfg, meta_init=True)).init_weights()
    assert meta_run.seen == []
    with Float32Weights(smallest) as ordinary_run:
        build(cfg).init_weights()
    weights = [p for n, p in timm.create_model(
        name, num_classes=0, **toy).named_parameters()
        if p.numel() >= smallest]
    assert len(ordinary_run.seen) >= len(weights)


@pytest.mark.parametrize('token', list(TOYS))
def test_without_a_file_timm_init_draws_the_weights_in_float32(token):
    """Random weights of a meta-built backbone: every tensor set, stored in
    bf16, distributed as timm's own init (a per-tensor standard deviation
    within 15% of the ordinary build's; drawing in bf16 directly would put
    0.2% of the values at timm's +-2 clamp)."""
    name, toy, _ = TOYS[token]
    torch.manual_seed(0)
    meta = build(backbone_cfg(token, None, meta_init=True))
    meta.init_weights()
    assert not meta.deferred_weights
    ordinary = timm.create_model(name, num_classes=0, **toy)
    ordinary.init_weights()
    reference = ordinary.state_dict()
    for key, value in meta.timm_model.state_dict().items():
        assert value.dtype == torch.bfloat16, key
        assert torch.isfinite(value.float()).all(), key
        ref = reference[key].float()
        if value.dim() == 2 and value.numel() >= 1024 and ref.std() > 0:
            std = value.float().std()
            assert abs(std - ref.std()) < 0.15 * ref.std(), key
            assert value.float().abs().max() < 8 * ref.std(), key


def test_deferred_weights_wait_for_their_values(tmp_path):
    name, toy, _ = TOYS['dinov3-7b16']
    ordinary = build(backbone_cfg('dinov3-7b16', None))
    meta = build(backbone_cfg('dinov3-7b16', None, meta_init=True))
    # the same keys, shapes and stored types, in 2 bytes per tensor
    shapes = {k: (v.shape, v.dtype) for k, v in ordinary.state_dict().items()}
    assert {k: (v.shape, v.dtype) for k, v in meta.state_dict().items()} == \
        shapes
    for key in meta.deferred_weights:
        tensor = meta.get_parameter(key)
        assert tensor.untyped_storage().nbytes() == tensor.element_size()
    # prompts are real from the start
    assert meta.prompt_embeddings.untyped_storage().nbytes() == \
        meta.prompt_embeddings.numel() * 4
    # a move records where the weights will load; they stay placeholders
    meta.to(torch.device('cpu'), dtype=torch.float32)
    assert meta.deferred_device == torch.device('cpu')
    assert meta.get_parameter(meta.deferred_weights[0]).stride() == (0, ) * \
        meta.get_parameter(meta.deferred_weights[0]).dim()
    with pytest.raises(RuntimeError, match='has not loaded .* init_weights'):
        meta(torch.randn(1, 3, 64, 64))

    # a file lacking a tensor: all or nothing, and the backbone still
    # refuses to run
    state = timm.create_model(name, num_classes=0, **toy).state_dict()
    state.pop('blocks.1.mlp.fc2.weight')
    torch.save(state, tmp_path / 'short.pth')
    short = build(backbone_cfg('dinov3-7b16', str(tmp_path / 'short.pth'),
                               meta_init=True))
    with pytest.raises(ValueError, match='do not provide 1 parameters.*'
                       'blocks.1.mlp.fc2.weight'):
        short.init_weights()
    assert short.deferred_weights == ['timm_model.blocks.1.mlp.fc2.weight']
    with pytest.raises(RuntimeError, match='has not loaded 1 of its weights'):
        short(torch.randn(1, 3, 64, 64))


def tiny_segmentor_cfg(token: str, base: str, **backbone) -> Config:
    """The 1B / 7B row at test size: same file and pipeline, a toy backbone
    (4 blocks) and narrow heads, BN for SyncBN, 64 px."""
    _, toy, size = TOYS[token]
    width = toy['embed_dim']
    cfg = Config.fromfile(REPO / row(token, 'vpt-deep-10'))
    cfg.merge_from_dict({
        'model.backbone.timm_kwargs': dict(drop_path_rate=0., **toy),
        'model.backbone.out_indices': [0, 1, 2, 3],
        'model.backbone.init_cfg': dict(type='Pretrained', checkpoint=base),
        'model.neck.in_channels': [width] * 4, 'model.neck.out_channels': 32,
        'model.decode_head.in_channels': [32] * 4,
        'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 32,
        'model.auxiliary_head.channels': 8,
        'model.data_preprocessor.size': (size, size),
        'model.test_cfg': dict(mode='whole')})
    cfg.model.backbone.update(backbone)
    convert_syncbn_to_bn(cfg.model)
    return cfg


@pytest.mark.parametrize('token', list(TOYS))
def test_tuned_only_task_file_round_trips_through_init_model(tmp_path,
                                                             token):
    base = write_base(tmp_path / 'base.pth', *TOYS[token][:2])
    cfg = tiny_segmentor_cfg(token, base)
    torch.manual_seed(0)
    model = model_from_config(cfg)
    assert model.backbone.meta_init and model.backbone.deferred_weights
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.init_weights()  # after the optimizer, as mmengine's runner does
    model.train()
    model.train_step(random_batch(cfg, 2), optim_wrapper)

    # the base reference is read from the file, not from a copy, and gives
    # the digests that the copy of an ordinary backbone gives
    reference = base_reference(model.backbone, base)
    assert isinstance(reference, PretrainedReference)
    plan = plan_tuned(model, require=True)
    ordinary = model_from_config(copy.deepcopy(cfg), cfg_options={
        'model.backbone.meta_init': False})
    ordinary.load_state_dict(model.state_dict())
    assert not isinstance(base_reference(ordinary.backbone, base),
                          PretrainedReference)
    assert plan_tuned(ordinary, require=True).omitted == plan.omitted
    frozen = {f'backbone.{n}' for n, p in model.backbone.named_parameters()
              if not p.requires_grad}
    assert frozen and frozen <= set(plan.omitted)

    cfg.dump(str(tmp_path / 'config.py'))
    checkpoint = plan.apply({'meta': dict(cfg=cfg.pretty_text),
                             'state_dict': model.state_dict()})
    torch.save(checkpoint, tmp_path / 'task.pth')
    saved = read_checkpoint(tmp_path / 'task.pth')
    assert not set(plan.omitted) & set(saved['state_dict'])
    assert saved['meta'][TUNED_META_KEY]['omitted'].keys() == \
        plan.omitted.keys()

    loaded = init_model(str(tmp_path / 'config.py'),
                        str(tmp_path / 'task.pth'), device='cpu')
    assert loaded.backbone.meta_init and not loaded.backbone.deferred_weights
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), \
            key
    model.eval()
    size = TOYS[token][2]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), loaded(x, mode='tensor'))


@pytest.mark.parametrize('token', list(ROWS))
def test_the_giant_rows_follow_their_setting(token):
    """Frozen bf16 weights built on the meta device, checkpointed blocks,
    the DINOv3 release's four even intervals of 40 blocks, the neck from the
    backbone's width to the ViT-L rows' 1024 channels, and the ViT-L rows'
    heads, schedule and optimizer; head-only differs in what trains."""
    name, width = ROWS[token]
    vpt = Config.fromfile(REPO / row(token, 'vpt-deep-10'))
    head = Config.fromfile(REPO / row(token, 'head-only'))
    large = Config.fromfile(
        REPO / row('dinov3-l16' if 'dinov3' in token else 'dinov2-l14-reg4',
                   'vpt-deep-10'))
    backbone = vpt.model.backbone
    assert backbone.model_name == name and timm.is_model(name)
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=f'timm://{name}')
    assert (backbone.meta_init, backbone.frozen_dtype, backbone.with_cp) == \
        (True, 'bf16', True)
    assert backbone.out_indices == (9, 19, 29, 39)
    assert (backbone.prompt_length, backbone.prompt_layers,
            backbone.frozen_exclude) == (10, 'deep', ['prompt'])
    assert (head.model.backbone.prompt_length,
            head.model.backbone.frozen_exclude) == (0, [])
    assert vpt.model.neck.in_channels == [width] * 4
    assert vpt.model.neck.out_channels == large.model.neck.out_channels
    for key in ('decode_head', 'auxiliary_head', 'data_preprocessor',
                'test_cfg'):
        assert vpt.model[key] == large.model[key], key
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                'train_dataloader'):
        assert vpt[key] == large[key], key
    text = (REPO / row(token, 'vpt-deep-10')).read_text()
    for source in ("This project's choice", 'FOUR_EVEN_INTERVALS',
                   'lr 6e-5', 'ViT-L rows'):
        assert source in text, source
    if 'dinov3' in token:
        assert 'config-ade20k-linear-training.yaml' in text

    # at full size: 40 blocks, built in no time and no memory
    init_default_scope('mmseg')
    model = MODELS.build(vpt.model)
    assert len(model.backbone.timm_model.blocks) == 40
    assert model.backbone.timm_model.embed_dim == width
    assert len(model.backbone.deferred_weights) == len(
        model.backbone.timm_model.state_dict())
    assert all(p.untyped_storage().nbytes() <= 4
               for n, p in model.backbone.named_parameters()
               if not p.requires_grad)


TINY_OPTIONS = [
    'model.backbone.timm_kwargs.depth=4',
    'model.backbone.timm_kwargs.embed_dim=64',
    'model.backbone.timm_kwargs.num_heads=2',
    'model.backbone.out_indices=[0,1,2,3]',
    'model.neck.in_channels=[64,64,64,64]', 'model.neck.out_channels=32',
    'model.decode_head.in_channels=[32,32,32,32]',
    'model.decode_head.channels=16', 'model.auxiliary_head.in_channels=32',
    'model.auxiliary_head.channels=8', 'model.data_preprocessor.size=[64,64]',
]
# DINOv3-7B's architecture at 250M parameters: a 0.5 GB bf16 file
LOAD_OPTIONS = {
    'model.backbone.timm_kwargs.depth': 24,
    'model.backbone.timm_kwargs.embed_dim': 1024,
    'model.backbone.timm_kwargs.num_heads': 16,
    'model.backbone.out_indices': [5, 11, 17, 23],
}


@pytest.mark.slow
def test_loading_a_bf16_file_peaks_at_the_file_size(tmp_path):
    """Building and loading a meta-built backbone of 250M parameters, then
    reading every weight once, peaks at <= 1.1x the bytes of its bf16 file
    above the process's memory before the build (a fresh process, resident
    memory; the ordinary build needs twice that: a float32 model first)."""
    spec = make_spec(config=str(REPO / row('dinov3-7b16', 'vpt-deep-10')),
                     cfg_options=LOAD_OPTIONS, base=str(tmp_path / 'b.pth'),
                     threads=1)
    written = run_isolated('write', spec, out=spec['base'])
    assert written['state_bytes'].keys() == {'bfloat16'}
    assert written['values'] > 240e6
    load = run_isolated('load', spec)
    assert load['deferred_left'] == 0 and load['frozen_float32_bytes'] == 0
    assert load['bytes_read'] >= 0.99 * load['file_bytes']
    assert load['load_ratio'] <= LOAD_RATIO_TARGET, load


@pytest.mark.slow
def test_the_memory_tool_runs_end_to_end(tmp_path):
    """tools/analysis/giant_memory.py on the 7B row at test size: writes a
    random bf16 base file, measures the load and one VPT-deep step at batch
    1, whose prompts get a gradient, and writes its results; --check fails
    on the load ratio, which at this size is the interpreter's noise over a
    0.2 MB file."""
    out = tmp_path / 'result.json'
    log = run_fails([PYTHON, REPO / 'tools/analysis/giant_memory.py',
                     REPO / row('dinov3-7b16', 'vpt-deep-10'),
                     '--base', tmp_path / 'base.pth', '--out', out,
                     '--threads', '1', '--check',
                     '--cfg-options', *TINY_OPTIONS], cwd=tmp_path)
    assert 'exited with 1' in log and 'missed: building and loading' in log
    assert 'wrote' in log and '| training step, batch 1, 64x64' in log
    result = json.loads(out.read_text())
    assert (tmp_path / 'base.pth').stat().st_size == \
        result['write']['file_bytes']
    assert result['write']['state_bytes'].keys() == {'bfloat16'}
    assert result['load']['deferred_left'] == 0
    step = result['step']
    assert step['prompt_grad_norm'] > 0 and step['prompt_tensors'] == 1
    assert step['frozen_dtype'] == 'bfloat16' and step['with_cp']
    assert step['batch_size'] == 1 and step['batch_norm_eval'] > 0
    assert result['missed'] == [m[len('missed: '):] for m in log.splitlines()
                                if m.startswith('missed: ')]


def tiny_7b_workspace(tmp_path_factory, name: str):
    """A data folder (``data/ade``, as the row's config names it), a bf16
    base file of the DINOv3-7B architecture at test size and the
    ``--cfg-options`` that shrink the row to it."""
    root = synthetic_workspace(tmp_path_factory, name)
    (root / 'data/ade').symlink_to(root / 'data/synthetic_ade20k')
    model_name, toy, _ = TOYS['dinov3-7b16']
    base = write_base(root / 'base.pth', model_name, toy, torch.bfloat16)
    options = TINY_OPTIONS[:-1] + [
        f'model.backbone.init_cfg.checkpoint={base}'] + no_workers()
    return root, base, options


@pytest.mark.slow
def test_train_and_test_tools_run_the_7b_row(tmp_path_factory):
    """tools/train.py on the DINOv3-7B VPT-deep row at test size (its
    runner moves the model and builds the optimizer before the weights
    load): the tuned-only checkpoint omits every frozen tensor, each equal
    to the bf16 base file's; tools/test.py on it repeats the validation
    mIoU."""
    root, base, options = tiny_7b_workspace(tmp_path_factory, 'giant_tools')
    config = row('dinov3-7b16', 'vpt-deep-10')
    work = root / 'work'
    log = run(train_cmd(config, work, '--cfg-options', *short_schedule(2),
                        *options), cwd=root)
    assert 'frozen weights bfloat16, backbone with_cp on' in log
    checkpoint = read_checkpoint(work / 'iter_2.pth')
    assert [k for k in checkpoint['state_dict'] if k.startswith(
        'backbone.')] == ['backbone.prompt_embeddings']
    omitted = checkpoint['meta'][TUNED_META_KEY]['omitted']
    source = torch.load(base)
    assert len(omitted) == len(source)
    for key, value in source.items():
        assert omitted[f'backbone.timm_model.{key}'] == tensor_digest(value)
    test_log = run(eval_cmd(config, work / 'iter_2.pth', work / 'test',
                            '--cfg-options', *options), cwd=root)
    assert metric_values(test_log) == metric_values(log) != []


@pytest.mark.slow
@pytest.mark.parametrize('wrapper', ['ddp', 'fsdp'])
def test_two_processes_train_the_7b_row(tmp_path_factory, wrapper):
    """tools/dist_train.sh on the DINOv3-7B VPT-deep row at test size: DDP
    (FrozenBackboneDDP, chosen for meta_init backbones, whose weights load
    after mmengine wraps the model) and --fsdp train it, and the task file
    omits every frozen tensor."""
    root, base, options = tiny_7b_workspace(tmp_path_factory, f'giant_{wrapper}')
    config = row('dinov3-7b16', 'vpt-deep-10')
    work = root / 'work'
    log = run(['bash', REPO / 'tools/dist_train.sh', REPO / config, '2',
               '--work-dir', work, '--cfg-options',
               *short_schedule(2), *options]
              + (['--fsdp'] if wrapper == 'fsdp' else []),
              cwd=root, env={'PORT': str(free_port()), 'PYTHON': PYTHON})
    assert 'frozen weights bfloat16, backbone with_cp on' in log
    assert ('frozen backbone sharded (FSDP)' in log) == (wrapper == 'fsdp')
    dumped = Config.fromfile(str(work / config.split('/')[-1]))
    assert dumped.model_wrapper_cfg.type == (
        'FrozenBackboneDDP' if wrapper == 'ddp' else 'VPTFullyShardedWrapper')
    checkpoint = read_checkpoint(work / 'iter_2.pth')
    assert [k for k in checkpoint['state_dict'] if k.startswith(
        'backbone.')] == ['backbone.prompt_embeddings']
    assert torch.isfinite(
        checkpoint['state_dict']['backbone.prompt_embeddings']).all()
    source = torch.load(base)
    omitted = checkpoint['meta'][TUNED_META_KEY]['omitted']
    assert len(omitted) == len(source)
    for key, value in source.items():
        assert omitted[f'backbone.timm_model.{key}'] == tensor_digest(value)
