"""Frozen weights stored in low precision (``frozen_dtype``).

Every VPT backbone stores its frozen parameters in bfloat16 or float16 when
asked, runs under autocast to that type and hands float32 features to the
heads, while what trains (prompts, padding prompts, trainable norms) stays
float32 with float32 gradients and optimizer state. A task file trained so
says so, loads through mmseg's ``init_model`` exactly as the project's own
loader loads it, and loads on a float32 model with a note.
"""
import copy
import logging

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmseg.apis import init_model
from mmseg.registry import MODELS

from mmseg_vpt.checkpoint import (BASE_RECORD_KEY, TUNED_META_KEY,
                                  load_tuned_checkpoint, model_from_config)
from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k
from mmseg_vpt.models.base_weights import _reproduces, tensor_digest

from .test_task_file_loading import VIT_DEMO, base_options, logits, write_base
from .tools_helpers import REPO, read_checkpoint, run, short_schedule, train_cmd
from .vpt_helpers import make_optim_wrapper, randomize_

TIMM_SMALL = dict(img_size=32, depth=2, embed_dim=32, num_heads=2)
BACKBONES = dict(
    vit=dict(type='VPTVisionTransformer', img_size=(32, 32), patch_size=8,
             embed_dims=32, num_layers=2, num_heads=2, out_indices=(1, ),
             prompt_length=3),
    swin=dict(type='VPTSwinTransformer', pretrain_img_size=32,
              embed_dims=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
              strides=(4, 2), out_indices=(0, 1), prompt_length=3),
    timm_vit=dict(type='VPTTimmViT', model_name='vit_small_patch16_224',
                  timm_kwargs=dict(TIMM_SMALL, patch_size=8),
                  prompt_length=3),
    dinov3=dict(type='VPTTimmViT', model_name='vit_small_patch16_dinov3',
                timm_kwargs=dict(TIMM_SMALL, patch_size=8), prompt_length=3),
    resnet=dict(type='VPTResNet', depth=18, prompt_pad=4, img_size=32,
                out_indices=(3, )),
    convnext=dict(type='VPTConvNeXt', arch='atto', prompt_pad=4, img_size=32,
                  gap_before_final_norm=False, out_indices=(3, )),
)


def build(cfg: dict, **kwargs):
    model = MODELS.build(dict(copy.deepcopy(cfg), **kwargs))
    return model


def features(model, x):
    out = model(x)
    return [o for o in out if isinstance(o, torch.Tensor)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize('name', list(BACKBONES))
def test_bf16_frozen_weights_keep_training_in_float32(name):
    torch.manual_seed(0)
    ref = build(BACKBONES[name])
    ref.init_weights()
    randomize_(ref, std=0.05)
    low = build(BACKBONES[name], frozen_dtype='bf16')
    low.load_state_dict(ref.state_dict())
    assert low.frozen_dtype == 'bfloat16'
    for (n, p), (_, q) in zip(low.named_parameters(), ref.named_parameters()):
        if p.requires_grad:
            assert p.dtype == torch.float32, n
            assert torch.equal(p, q), n
        elif p.is_floating_point():
            assert p.dtype == torch.bfloat16, n
            # the stored value is the float32 one rounded to bfloat16
            assert torch.equal(p, q.to(torch.bfloat16)), n
    frozen_bytes = sum(p.numel() * p.element_size()
                       for p in low.parameters() if not p.requires_grad)
    ref_bytes = sum(p.numel() * p.element_size()
                    for p in ref.parameters() if not p.requires_grad)
    assert frozen_bytes * 2 == ref_bytes

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    low.train()
    ref.train()
    outs_low, outs_ref = features(low, x), features(ref, x)
    for a, b in zip(outs_low, outs_ref):
        assert a.dtype == torch.float32  # what the heads get
        assert rel_err(a, b) < 0.05, (name, rel_err(a, b))
    sum(o.square().mean() for o in outs_low).backward()
    sum(o.square().mean() for o in outs_ref).backward()
    for (n, p), (_, q) in zip(low.named_parameters(), ref.named_parameters()):
        if p.requires_grad and p.numel():
            assert p.grad.dtype == torch.float32, n
            assert rel_err(p.grad, q.grad) < 0.1, (n, rel_err(p.grad,
                                                              q.grad))
        else:
            assert p.grad is None, n

    # an optimizer step: fp32 state for what trains, frozen bytes untouched
    frozen = {n: p.clone() for n, p in low.named_parameters()
              if not p.requires_grad}
    optim = make_optim_wrapper(low.parameters(), lr=1e-2)
    optim.step()
    for group in optim.optimizer.param_groups:
        for p in group['params']:
            for value in optim.optimizer.state.get(p, {}).values():
                if value.is_floating_point() and value.dim():
                    assert value.dtype == torch.float32
    for n, p in low.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n


def test_a_norm_with_a_trainable_parameter_stays_float32():
    """Bias tuning: a norm's weight and bias share a type (CPU kernels need
    it), a Linear's frozen weight is bf16 beside its float32 bias."""
    model = build(BACKBONES['vit'], prompt_length=0, frozen_exclude=['bias'],
                  frozen_dtype='bf16')
    model.init_weights()
    layer = model.layers[0]
    assert layer.ln1.weight.dtype == torch.float32
    assert layer.ln1.bias.requires_grad
    assert layer.ffn.layers[0][0].weight.dtype == torch.bfloat16
    assert layer.ffn.layers[0][0].bias.dtype == torch.float32
    model.train()
    out = model(torch.randn(1, 3, 32, 32))[0]
    out.mean().backward()
    assert layer.ffn.layers[0][0].bias.grad.abs().sum() > 0


@pytest.mark.parametrize('value', ['int8', 'bf8', 3, torch.int8])
def test_an_unknown_frozen_dtype_is_refused_naming_the_argument(value):
    with pytest.raises(ValueError, match='frozen_dtype must be None'):
        build(BACKBONES['vit'], frozen_dtype=value)


def test_float32_spellings_leave_the_backbone_as_it_was():
    torch.manual_seed(0)
    a = build(BACKBONES['vit'])
    torch.manual_seed(0)
    b = build(BACKBONES['vit'], frozen_dtype='fp32')
    assert b.frozen_dtype is None
    for (n, p), (_, q) in zip(a.state_dict().items(),
                              b.state_dict().items()):
        assert p.dtype == q.dtype and torch.equal(p, q), n


# --------------------------------------------------------------------------
# task files
# --------------------------------------------------------------------------
def vit_cfg(frozen_dtype=None) -> Config:
    cfg = Config.fromfile(str(REPO / VIT_DEMO))
    cfg.model.backbone.frozen_dtype = frozen_dtype
    return cfg


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> dict:
    """One iteration of the demo ViT by tools/train.py with bf16 frozen
    weights, and one in float32, on the same base file."""
    root = tmp_path_factory.mktemp('frozen_dtype')
    make_synthetic_ade20k(root / 'data/synthetic_ade20k', num_train=4,
                          num_val=2, img_size=64, show_progress=False)
    torch.manual_seed(0)
    base = write_base(VIT_DEMO, root / 'bases/vit.pth')
    files = dict(base=base)
    for name, dtype in (('bf16', ['model.backbone.frozen_dtype=bf16']),
                        ('fp32', [])):
        run(train_cmd(VIT_DEMO, root / name, '--cfg-options',
                      *short_schedule(1), *base_options(base), *dtype),
            cwd=root)
        files[name] = root / name / 'iter_1.pth'
    return files


class LogLines(logging.Handler):

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def warnings_log():
    handler = LogLines()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


@pytest.mark.slow
def test_a_bf16_task_file_says_so_and_loads_through_init_model(trained):
    saved = read_checkpoint(trained['bf16'])
    meta = saved['meta'][TUNED_META_KEY]
    assert meta['policy']['frozen_dtype'] == 'bfloat16'
    record = saved['state_dict']._metadata['backbone'][BASE_RECORD_KEY]
    assert record['frozen_dtype'] == 'bfloat16'
    # only what trained is stored, in float32
    for key, value in saved['state_dict'].items():
        assert value.dtype != torch.bfloat16, key

    model = init_model(vit_cfg('bf16'), str(trained['bf16']), device='cpu')
    ref = model_from_config(vit_cfg('bf16'), base_path=str(trained['base']))
    load_tuned_checkpoint(ref, str(trained['bf16']))
    for (k, a), (_, b) in zip(model.state_dict().items(),
                              ref.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    assert model.backbone.layers[0].ln1.weight.dtype == torch.bfloat16
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(logits(model, x), logits(ref.eval(), x))


@pytest.mark.slow
def test_a_bf16_task_file_on_a_float32_model_loads_with_a_note(
        trained, warnings_log):
    model = init_model(vit_cfg(None), str(trained['bf16']), device='cpu')
    notes = [line for line in warnings_log
             if 'trained with frozen weights in bfloat16' in line]
    assert len(notes) == 1, warnings_log
    assert 'equal the base file\'s values rounded to bfloat16' in notes[0]
    # the float32 model holds the base file's own values
    base = torch.load(trained['base'], map_location='cpu')
    state = model.backbone.state_dict()
    for key, value in base.items():
        if key in state and 'prompt' not in key:
            assert state[key].dtype == torch.float32
            assert torch.equal(state[key], value), key
    low = init_model(vit_cfg('bf16'), str(trained['bf16']), device='cpu')
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert rel_err(logits(model, x), logits(low, x)) < 0.05


@pytest.mark.slow
def test_a_float32_task_file_on_a_bf16_model_loads_with_a_note(
        trained, warnings_log):
    meta = read_checkpoint(trained['fp32'])['meta'][TUNED_META_KEY]
    assert meta['policy']['frozen_dtype'] is None
    model = init_model(vit_cfg('bf16'), str(trained['fp32']), device='cpu')
    notes = [line for line in warnings_log
             if 'trained with frozen weights in float32' in line]
    assert len(notes) == 1, warnings_log
    assert 'SHA-256 only' in notes[0]
    assert model.backbone.layers[0].ln1.weight.dtype == torch.bfloat16
    # and with matching types there is no note
    warnings_log.clear()
    init_model(vit_cfg(None), str(trained['fp32']), device='cpu')
    assert not [line for line in warnings_log if 'frozen weights' in line]


def test_task_file_dtype_rule_refuses_other_values():
    """A base tensor that differs beyond bf16 rounding is still refused."""
    t = torch.randn(16)
    digest = tensor_digest(t.to(torch.bfloat16))
    assert _reproduces(t, digest, 'bfloat16', None) == 'rounded'
    assert _reproduces(t + 0.1, digest, 'bfloat16', None) is False
    assert _reproduces(t.to(torch.bfloat16), digest, 'bfloat16',
                       'bfloat16') is True
    assert _reproduces(t.to(torch.bfloat16), tensor_digest(t), None,
                       'bfloat16') == 'unchecked'
    assert _reproduces(t.to(torch.bfloat16), tensor_digest(t), None,
                       None) is False
