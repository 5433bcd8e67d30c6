"""Memory options: checkpointed backbone layers (``with_cp``), checkpointed
head modules (a config's ``activation_checkpointing``) and the one line
that says which options a run has on.

Checkpointing must change memory only: gradients, outputs and BatchNorm
statistics equal an unwrapped step's, bit for bit. Memory is measured
deterministically as the peak of live tensor bytes created during a step
(:class:`PeakLiveBytes`), not as process RSS.
"""
import copy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger
from mmseg.registry import MODELS
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mmseg_vpt.analysis.benchmark import _current_rss, make_spec, measure
from mmseg_vpt.analysis.param_report import format_report, param_report
from mmseg_vpt.checkpoint import model_from_config
from mmseg_vpt.engine.memory_options import (
    CheckpointedForward, checkpointed_modules,
    configure_activation_checkpointing, format_memory_options,
    memory_options, turn_on_activation_checkpointing)
from mmseg_vpt.utils.config import read_config

from .tools_helpers import REPO, run, short_schedule, train_cmd
from .vpt_helpers import make_batch

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
HEADS = ['decode_head', 'auxiliary_head']
HEAD_LOSSES = ['decode_head.loss', 'auxiliary_head.loss']

BACKBONES = {
    'VPTVisionTransformer': dict(
        img_size=64, patch_size=8, embed_dims=64, num_layers=4, num_heads=2,
        out_indices=(1, 3)),
    'VPTSwinTransformer': dict(
        pretrain_img_size=64, embed_dims=32, depths=[2, 2], num_heads=[2, 4],
        window_size=4, strides=(4, 2), out_indices=(0, 1)),
    'VPTTimmViT': dict(
        model_name='vit_tiny_patch16_224',
        timm_kwargs=dict(img_size=64, patch_size=8, depth=4),
        out_indices=(1, 3)),
}


@pytest.fixture(autouse=True, scope='module')
def _quiet_mmengine():
    # mmengine logs every parameter's initialisation otherwise
    MMLogger.get_instance('test_memory_options', log_level='ERROR')


class PeakLiveBytes(TorchDispatchMode):
    """The most bytes of tensor storage alive at once among the storages
    that operators create while the mode is on (forward, backward and
    recomputation; parameters made before are not counted)."""

    def __init__(self):
        super().__init__()
        self.live = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, storage.nbytes())
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            del self.live[key]
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def build_backbone(kind: str, **kwargs):
    torch.manual_seed(0)
    backbone = MODELS.build(dict(type=kind, prompt_length=4,
                                 **BACKBONES[kind], **kwargs))
    backbone.init_weights()
    backbone.train()
    return backbone


def backbone_step(backbone, x):
    """Forward and backward of a frozen backbone with prompts; the prompts'
    gradients."""
    out = backbone(x)
    sum(o.float().square().mean() for o in out).backward()
    return [p.grad.clone() for p in backbone.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------
# backbones: with_cp
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('frozen_dtype', [None, 'bf16'])
@pytest.mark.parametrize('kind', sorted(BACKBONES))
def test_with_cp_gives_the_prompts_the_same_gradients(kind, frozen_dtype):
    x = torch.randn(2, 3, 64, 64)
    grads = {}
    for with_cp in (False, True):
        backbone = build_backbone(kind, with_cp=with_cp,
                                  frozen_dtype=frozen_dtype)
        grads[with_cp] = backbone_step(backbone, x)
    assert len(grads[True]) == len(grads[False]) > 0
    for plain, checkpointed in zip(grads[False], grads[True]):
        assert plain.abs().sum() > 0
        assert torch.equal(plain, checkpointed)


@pytest.mark.parametrize('frozen_dtype', [None, 'bf16'])
@pytest.mark.parametrize('kind', sorted(BACKBONES))
def test_with_cp_lowers_the_peak_of_a_frozen_backbone_step(kind,
                                                           frozen_dtype):
    x = torch.randn(2, 3, 64, 64)
    peaks = {}
    for with_cp in (False, True):
        backbone = build_backbone(kind, with_cp=with_cp,
                                  frozen_dtype=frozen_dtype)
        with PeakLiveBytes() as mode:
            backbone_step(backbone, x)
        peaks[with_cp] = mode.peak
    # 4 layers: everything but about one layer's activations is dropped
    assert peaks[True] < 0.8 * peaks[False], peaks


@pytest.mark.parametrize('kind', sorted(BACKBONES))
def test_with_cp_recomputes_every_layer_in_training_only(kind):
    backbone = build_backbone(kind, with_cp=True)
    calls = []
    # the layer's first norm: a checkpoint recomputes the layer's inner
    # function, not its __call__
    for i, layer in enumerate(backbone.layer_modules()):
        layer.norm1.register_forward_pre_hook(
            lambda m, a, i=i: calls.append(i))
    x = torch.randn(1, 3, 64, 64)
    backbone_step(backbone, x)
    layers = len(backbone.layer_modules())
    # each layer runs in the forward and again in the backward
    assert sorted(calls) == sorted(list(range(layers)) * 2)
    calls.clear()
    backbone.eval()
    with torch.no_grad():
        backbone(x)
    assert calls == list(range(layers))


@pytest.mark.parametrize(
    'kind', ['VPTVisionTransformer', 'VPTSwinTransformer', 'VPTTimmViT'])
def test_with_cp_uses_the_non_reentrant_checkpoint(kind):
    backbone = build_backbone(kind, with_cp=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        backbone_step(backbone, torch.randn(1, 3, 64, 64))
    assert not [w for w in caught if 'use_reentrant' in str(w.message)]


# ---------------------------------------------------------------------------
# heads: activation_checkpointing
# ---------------------------------------------------------------------------
def demo_segmentor(options=None):
    cfg = read_config(str(REPO / VIT_DEMO), options)
    torch.manual_seed(0)
    model = model_from_config(cfg)
    model.init_weights()
    model.train()
    return model


def segmentor_step(model, data):
    """Losses, backward; the gradients by name."""
    batch = model.data_preprocessor(copy.copy(data), True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()
            if p.requires_grad}


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if 'running_' in k or 'num_batches_tracked' in k}


def demo_batch():
    torch.manual_seed(1)
    return make_batch(batch_size=2, size=(64, 64), num_classes=4)


@pytest.mark.parametrize('entries', ['forward', 'loss'])
@pytest.mark.parametrize('variant', ['vpt-deep', 'head-only', 'frozen-bf16'])
def test_checkpointed_heads_equal_an_unwrapped_step(variant, entries):
    """Gradients and BatchNorm statistics bit for bit (the recompute does
    not count the batch twice), also when nothing before the heads needs a
    gradient (head-only), where the reentrant checkpoint trains nothing;
    for the heads' forward and for their forward and loss together."""
    options = {
        'vpt-deep': None,
        'head-only': {'model.backbone.prompt_length': 0,
                      'model.backbone.frozen_exclude': []},
        'frozen-bf16': {'model.backbone.frozen_dtype': 'bf16',
                        'model.backbone.with_cp': True},
    }[variant]
    data = demo_batch()
    plain = demo_segmentor(options)
    wrapped = copy.deepcopy(plain)
    heads = ['decode_head', 'auxiliary_head.0', 'auxiliary_head.1']
    if entries == 'forward':
        assert turn_on_activation_checkpointing(wrapped, HEADS) == heads
    else:
        assert turn_on_activation_checkpointing(wrapped, HEAD_LOSSES) == [
            f'{h}.loss' for h in heads]
    assert checkpointed_modules(wrapped) == turn_on_activation_checkpointing(
        wrapped, HEADS if entries == 'forward' else HEAD_LOSSES)
    runs = []
    # (mmseg's heads call self.forward, which module hooks do not see; their
    # classifier is called as a module)
    for name in heads:
        wrapped.get_submodule(name).conv_seg.register_forward_pre_hook(
            lambda m, a, n=name: runs.append(n))
    before = bn_state(plain)
    grads = segmentor_step(plain, data)
    grads_cp = segmentor_step(wrapped, data)
    # every head ran again in the backward
    assert sorted(runs) == sorted(heads * 2)
    assert grads.keys() == grads_cp.keys()
    assert any(k.startswith('decode_head') for k in grads)
    for k in grads:
        assert torch.equal(grads[k], grads_cp[k]), k
    after, after_cp = bn_state(plain), bn_state(wrapped)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for k in after:
        assert torch.equal(after[k], after_cp[k]), k


def test_checkpointed_heads_lower_the_peak_of_a_step():
    """The heads' forward, then their forward and loss: each keeps less
    (the loss's log-probabilities are as large as the logits)."""
    data = demo_batch()
    peaks = []
    for entries in ([], HEADS, HEAD_LOSSES):
        model = demo_segmentor()
        turn_on_activation_checkpointing(model, entries)
        with PeakLiveBytes() as mode:
            segmentor_step(model, data)
        peaks.append(mode.peak)
    assert peaks[1] < 0.9 * peaks[0] and peaks[2] < 0.9 * peaks[1], peaks


def test_checkpointed_forward_skips_the_checkpoint_without_grad():
    model = demo_segmentor()
    turn_on_activation_checkpointing(model, ['decode_head'])
    runs = []
    model.decode_head.conv_seg.register_forward_pre_hook(
        lambda m, a: runs.append(1))
    model.eval()
    batch = model.data_preprocessor(copy.copy(demo_batch()), False)
    with torch.no_grad():
        model.predict(batch['inputs'], batch['data_samples'])
    assert runs == [1]


def test_a_deep_copy_checkpoints_its_own_modules():
    model = demo_segmentor()
    turn_on_activation_checkpointing(model, ['decode_head'])
    twin = copy.deepcopy(model)
    forward = twin.decode_head.forward
    assert isinstance(forward, CheckpointedForward)
    assert forward.module is twin.decode_head
    assert checkpointed_modules(twin) == ['decode_head']
    # applying twice keeps one wrapper
    turn_on_activation_checkpointing(twin, 'decode_head')
    assert twin.decode_head.forward is forward


def test_unknown_module_names_are_refused_with_the_children():
    model = demo_segmentor()
    with pytest.raises(ValueError, match=r"'decode_heads' names no "
                       r"submodule \(or method of one\) of EncoderDecoder"
                       r".*'decode_head'"):
        turn_on_activation_checkpointing(model, ['decode_heads'])
    with pytest.raises(ValueError, match='must be a list of submodule'):
        turn_on_activation_checkpointing(model, 3)


def test_config_key_becomes_the_hook_so_mmengine_does_not_wrap_too():
    cfg = read_config(str(REPO / VIT_DEMO))
    cfg.activation_checkpointing = HEADS
    configure_activation_checkpointing(cfg)
    assert 'activation_checkpointing' not in cfg
    hooks = [h for h in cfg.custom_hooks
             if h['type'] == 'ActivationCheckpointingHook']
    assert hooks == [dict(type='ActivationCheckpointingHook',
                          modules=HEADS)]
    # applied twice (a dumped config started again): still one hook
    cfg.activation_checkpointing = ['decode_head']
    configure_activation_checkpointing(cfg)
    assert [h['modules'] for h in cfg.custom_hooks
            if h['type'] == 'ActivationCheckpointingHook'] == [
                ['decode_head']]


# ---------------------------------------------------------------------------
# saying which options are on
# ---------------------------------------------------------------------------
def test_memory_options_line_names_every_option():
    cfg = read_config(str(REPO / VIT_DEMO), {
        'model.backbone.frozen_dtype': 'bf16',
        'model.backbone.with_cp': True,
        'activation_checkpointing': HEADS,
        'optim_wrapper.type': 'BFloat16OptimWrapper'})
    model = model_from_config(cfg)
    options = memory_options(model, cfg)
    assert options == dict(
        frozen_dtype='bfloat16', backbone_with_cp=True,
        activation_checkpointing=HEADS, amp='bfloat16',
        optim_wrapper='BFloat16OptimWrapper', sharded=False)
    assert format_memory_options(options) == (
        'Memory options: frozen weights bfloat16, backbone with_cp on, '
        'activation checkpointing decode_head, auxiliary_head, AMP '
        'bfloat16 (BFloat16OptimWrapper)')
    # once applied, the modules actually wrapped are named
    turn_on_activation_checkpointing(model, HEADS)
    assert memory_options(model, cfg)['activation_checkpointing'] == [
        'decode_head', 'auxiliary_head.0', 'auxiliary_head.1']
    plain = read_config(str(REPO / VIT_DEMO))
    assert format_memory_options(memory_options(
        model_from_config(plain), plain)) == (
        'Memory options: frozen weights float32, backbone with_cp off, '
        'activation checkpointing off, AMP off')
    plain.model_wrapper_cfg = dict(type='VPTFullyShardedWrapper')
    assert format_memory_options(memory_options(
        model_from_config(plain), plain)).endswith(
            'AMP off, frozen backbone sharded (FSDP)')


def test_param_report_names_the_memory_options():
    row = param_report(str(REPO / VIT_DEMO), optimizer=False, cfg_options={
        'model.backbone.frozen_dtype': 'bf16',
        'model.backbone.with_cp': True,
        'activation_checkpointing': ['decode_head']})
    assert (row['frozen_dtype'], row['backbone_with_cp'],
            row['activation_checkpointing'], row['amp']) == (
                'bfloat16', True, ['decode_head'], None)
    table = format_report([row]).splitlines()
    assert table[0].endswith('| memory options |')
    assert table[2].endswith(
        '| frozen bfloat16; backbone with_cp; checkpointed: decode_head |')
    plain = param_report(str(REPO / VIT_DEMO), optimizer=False)
    assert format_report([plain]).splitlines()[2].endswith('| - |')


def test_benchmark_records_and_applies_the_options():
    spec = make_spec(config=str(REPO / VIT_DEMO), mode='train', batch_size=1,
                     warmup=0, iters=1, threads=1, breakdown=True,
                     cfg_options={'model.backbone.frozen_dtype': 'bf16',
                                  'model.backbone.with_cp': True,
                                  'activation_checkpointing': HEADS})
    result = measure(spec, progress=lambda msg: None)
    assert (result['frozen_dtype'], result['with_cp'],
            result['activation_checkpointing'], result['amp_dtype']) == (
                'bfloat16', True,
                ['decode_head', 'auxiliary_head.0', 'auxiliary_head.1'], None)
    plain = measure(make_spec(config=str(REPO / VIT_DEMO), mode='train',
                              batch_size=1, warmup=0, iters=1, threads=1,
                              breakdown=True), progress=lambda msg: None)
    assert (plain['frozen_dtype'], plain['with_cp'],
            plain['activation_checkpointing']) == (None, False, [])
    # the peak is the iterations'; the build's (float32, then bf16) beside
    # (in this process, memory freed by earlier tests blurs both values)
    assert result['peak_covers_build'] is False
    assert 'build_peak_mem' in result
    # bf16 frozen weights: the backbone's parameters take half the bytes
    assert result['breakdown']['params'] < plain['breakdown']['params']
    assert result['breakdown']['saved_backbone'] < \
        plain['breakdown']['saved_backbone']


@pytest.mark.slow
def test_train_tool_checkpoints_the_heads_of_the_config_key(tmp_path_factory):
    from .tools_helpers import synthetic_workspace
    workspace = synthetic_workspace(tmp_path_factory, 'memory_options')
    work = workspace / 'run'
    log = run(train_cmd(VIT_DEMO, work, '--cfg-options', *short_schedule(2),
                        'model.backbone.frozen_dtype=bf16',
                        'model.backbone.with_cp=True',
                        'activation_checkpointing=[decode_head,'
                        'auxiliary_head]'), cwd=workspace)
    assert ('Memory options: frozen weights bfloat16, backbone with_cp on, '
            'activation checkpointing decode_head, auxiliary_head, AMP off'
            ) in log
    assert ('Activation checkpointing (non-reentrant) of: decode_head, '
            'auxiliary_head.0, auxiliary_head.1') in log
    # mmengine's own (reentrant) wrapper stays off
    assert 'Enabling the "activation_checkpointing" feature' not in log
    dumped = (work / Path(VIT_DEMO).name).read_text()
    assert 'ActivationCheckpointingHook' in dumped


def test_a_measuring_child_reports_its_own_peak_not_its_parents():
    """Linux keeps ``ru_maxrss`` across ``exec``: a benchmark child started
    by a large process (a test worker, a notebook) would report the
    parent's size as its own peak. The peak is the child's ``VmHWM``."""
    held = torch.ones(2**28)  # 1 GiB resident in this process
    parent = _current_rss()
    out = subprocess.run(
        [sys.executable, '-c', 'from mmseg_vpt.analysis.benchmark import '
         '_peak_rss; print(_peak_rss())'], capture_output=True, text=True,
        check=True).stdout
    assert int(out.split()[-1]) < parent - 2**29, (out, parent)
    del held
