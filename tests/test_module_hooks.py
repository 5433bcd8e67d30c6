"""Modules stay modules: every mmseg module the prompted forward uses is
called through ``__call__``, on the fused and the plain path, with and
without prompts, so forward hooks fire and a hook or a swapped submodule
changes the result; VPT combines with LoRA (mmpretrain's ``LoRALinear``)
and trains only prompts, LoRA weights and the head; and mmengine's FLOP
count (mmseg's ``get_flops.py``) counts the fused attention."""
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.analysis import get_model_complexity_info
from mmpretrain.models.peft.lora import LoRALinear
from torch.nn.utils import parametrize

from mmseg_vpt.analysis import PromptAttentionRecorder
from mmseg_vpt.models import VPTSwinTransformer, VPTVisionTransformer

from .tools_helpers import PYTHON, REPO, run
from .vpt_helpers import (build_segmentor, check_frozen_training, fcn_head,
                          randomize_, trainable, uper_head)

VIT = dict(img_size=32, patch_size=8, embed_dims=32, num_layers=2,
           num_heads=4, mlp_ratio=2, out_indices=(0, 1))
# 40 x 48 px: 10 x 12 tokens in padded 4 x 4 windows, then 5 x 6; every
# stage has a plain and a shifted block
SWIN = dict(pretrain_img_size=32, embed_dims=16, patch_size=4, window_size=4,
            depths=(2, 2), num_heads=(2, 4), strides=(4, 2), out_indices=(0, 1),
            mlp_ratio=2)
SIZE = (40, 48)


def build(backbone: str, prompt_length: int, fused: bool) -> nn.Module:
    cls, cfg = ((VPTVisionTransformer, VIT) if backbone == 'vit' else
                (VPTSwinTransformer, SWIN))
    model = cls(**cfg, prompt_length=prompt_length, fused_attn=fused,
                frozen_exclude=['prompt'] if prompt_length else [])
    randomize_(model)
    model.eval()
    return model


def listed_modules(model: nn.Module) -> list:
    """Names of the mmseg modules the forward must call: blocks, attention
    wrappers and their projections (and Swin's stages and merging)."""
    names = []
    if isinstance(model, VPTSwinTransformer):
        for s, stage in enumerate(model.stages):
            names.append(f'stages.{s}')
            for b in range(len(stage.blocks)):
                block = f'stages.{s}.blocks.{b}'
                names += [block, f'{block}.attn', f'{block}.attn.w_msa',
                          f'{block}.attn.w_msa.qkv',
                          f'{block}.attn.w_msa.proj']
            if stage.downsample is not None:
                names.append(f'stages.{s}.downsample')
    else:
        for i in range(len(model.layers)):
            names += [f'layers.{i}', f'layers.{i}.attn', f'layers.{i}.attn.attn']
            if model.fused_attn:
                # torch's own attention (the plain path) reads out_proj's
                # weight instead of calling it: see the TypeError test
                names.append(f'layers.{i}.attn.attn.out_proj')
    return names


CASES = [(b, f, p) for b in ('vit', 'swin') for f in (True, False)
         for p in (0, 3)]
IDS = [f'{b}-{"fused" if f else "plain"}-P{p}' for b, f, p in CASES]


@pytest.mark.parametrize('backbone, fused, prompt_length', CASES, ids=IDS)
def test_forward_hooks_fire_on_blocks_attention_and_projections(
        backbone, fused, prompt_length):
    model = build(backbone, prompt_length, fused)
    modules = dict(model.named_modules())
    names = listed_modules(model)
    calls = Counter()
    handles = [modules[n].register_forward_hook(
        lambda mod, args, out, n=n: calls.update([n])) for n in names]
    with torch.no_grad():
        model(torch.randn(2, 3, *SIZE))
    for h in handles:
        h.remove()
    assert [n for n in names if not calls[n]] == []


def perturbed(out):
    """A module output with every tensor in it changed."""
    if isinstance(out, torch.Tensor):
        return out * 1.1 + 0.1
    if isinstance(out, tuple):
        return tuple(perturbed(o) for o in out)
    return out


@pytest.mark.parametrize('backbone, fused, prompt_length', CASES, ids=IDS)
def test_a_hook_replacing_a_module_output_changes_the_backbone_output(
        backbone, fused, prompt_length):
    """What a swapped submodule does: if a module's output were read
    around (its weights used directly), the change would be ignored."""
    model = build(backbone, prompt_length, fused)
    modules = dict(model.named_modules())
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        base = model(x)
    ignored = []
    for name in listed_modules(model):
        handle = modules[name].register_forward_hook(
            lambda mod, args, out: perturbed(out))
        with torch.no_grad():
            out = model(x)
        handle.remove()
        if all(torch.equal(a, b) for a, b in zip(out, base)):
            ignored.append(name)
    assert ignored == []


# ---------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------
def add_lora(model: nn.Module, suffix: str, rank: int = 2) -> list:
    """Wrap every Linear named ``*suffix`` in mmpretrain's LoRALinear (its
    ``lora_up`` starts at zero) and make the LoRA weights trainable; returns
    the wrapped names."""
    names = [n for n, m in model.named_modules()
             if n.endswith(suffix) and isinstance(m, nn.Linear)]
    for name in names:
        parent, _, child = name.rpartition('.')
        owner = model.get_submodule(parent)
        setattr(owner, child, LoRALinear(getattr(owner, child), alpha=rank,
                                         rank=rank))
    for name, p in model.named_parameters():
        if '.lora_' in name:
            p.requires_grad_(True)
    assert names
    return names


def merged_lora_weights(model: nn.Module) -> dict:
    """state_dict of the unwrapped model with each LoRA update folded into
    its layer's weight (W + scaling * up @ down)."""
    state = {}
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            W = m.original_layer.weight + m.scaling * (
                m.lora_up.weight @ m.lora_down.weight)
            state[f'{name}.weight'] = W.detach()
            if m.original_layer.bias is not None:
                state[f'{name}.bias'] = m.original_layer.bias.detach()
    for k, v in model.state_dict().items():
        if '.lora_' not in k and '.original_layer.' not in k:
            state[k] = v
    return state


LORA_TARGETS = dict(swin='attn.w_msa.qkv', vit='attn.attn.out_proj')
LORA_CASES = [(b, f, p) for b, f, p in CASES if b == 'swin' or f]


@pytest.mark.parametrize('backbone, fused, prompt_length', LORA_CASES,
                         ids=[i for c, i in zip(CASES, IDS)
                              if c in LORA_CASES])
def test_lora_wrapper_is_exact_at_zero_and_applies_its_update(
        backbone, fused, prompt_length):
    """Swin: ``w_msa.qkv``; ViT: ``out_proj`` (the in-projection is a
    parameter, see the parametrization test). Zero ``lora_up``: exactly the
    unwrapped output; a random one: the output of the merged weights."""
    model = build(backbone, prompt_length, fused)
    reference = build(backbone, prompt_length, fused)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        base = model(x)
        add_lora(model, LORA_TARGETS[backbone])
        assert all(torch.equal(a, b) for a, b in zip(model(x), base))
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_up.weight.normal_(0, 0.5)
        out = model(x)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(out, base))
    reference.load_state_dict(merged_lora_weights(model), strict=True)
    with torch.no_grad():
        for a, b in zip(out, reference(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_vit_plain_path_refuses_a_swapped_out_proj_instead_of_ignoring_it():
    """torch's nn.MultiheadAttention reads out_proj.weight and never calls
    out_proj; the fused path calls it."""
    model = build('vit', 3, fused=False)
    add_lora(model, LORA_TARGETS['vit'])
    with pytest.raises(TypeError, match=r'out_proj is a LoRALinear.*'
                       r'fused_attn=True'):
        model(torch.randn(1, 3, *SIZE))
    model.fused_attn = True
    model(torch.randn(1, 3, *SIZE))


def test_vit_takes_a_swapped_attention_module_and_recorder_names_it():
    """torch's own nn.MultiheadAttention (same weights) swapped in for the
    VPT one runs on the fused path (as torch's attention without weights);
    the prompt-attention recorder, which needs ``attention_probs``, says
    which module it cannot read."""
    model = build('vit', 3, fused=True)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        base = model(x)
        for layer in model.layers:
            vpt_mha = layer.attn.attn
            mha = nn.MultiheadAttention(vpt_mha.embed_dim, vpt_mha.num_heads)
            mha.load_state_dict(vpt_mha.state_dict())
            layer.attn.attn = mha.eval()
        for a, b in zip(model(x), base):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with PromptAttentionRecorder(model, [1]) as rec, torch.no_grad():
        model(x)
    with pytest.raises(TypeError, match='layer 1: the attention module is a '
                       'MultiheadAttention, which cannot give its attention '
                       r'probabilities \(attention_probs\)'):
        rec.maps()


class LowRankDelta(nn.Module):
    """W -> W + up @ down: a LoRA update as a parametrization."""

    def __init__(self, out_features: int, in_features: int, rank: int = 2):
        super().__init__()
        self.down = nn.Parameter(torch.randn(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.up @ self.down


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'plain'])
def test_vit_in_projection_takes_a_parametrization_on_both_paths(fused):
    """The ViT's qkv projection is nn.MultiheadAttention's in_proj_weight, a
    parameter read by the attention module's own forward on every path: a
    parametrization of it takes effect."""
    model = build('vit', 3, fused)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        base = model(x)
        deltas = []
        for layer in model.layers:
            mha = layer.attn.attn
            deltas.append(LowRankDelta(*mha.in_proj_weight.shape))
            parametrize.register_parametrization(mha, 'in_proj_weight',
                                                 deltas[-1])
        assert all(torch.equal(a, b) for a, b in zip(model(x), base))
        for d in deltas:
            d.up.normal_(0, 0.5)
        out = model(x)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(out, base))


@pytest.mark.parametrize('backbone', ['vit', 'swin'])
def test_prompt_attention_maps_follow_a_wrapped_qkv_projection(backbone):
    """The recorder asks the attention modules for their probabilities, so
    a LoRA update of the qkv projection (Swin: LoRALinear on ``qkv``; ViT:
    a parametrization of ``in_proj_weight``) shows in the maps."""
    model = build(backbone, 3, fused=True)
    x = torch.randn(2, 3, *SIZE)

    def image_to_prompt():
        with PromptAttentionRecorder(model, [0]) as rec, torch.no_grad():
            model(x)
        return rec.maps()[0].image_to_prompt

    base = image_to_prompt()
    if backbone == 'swin':
        add_lora(model, LORA_TARGETS['swin'])
        ups = [m.lora_up.weight for m in model.modules()
               if isinstance(m, LoRALinear)]
    else:
        ups = []
        for layer in model.layers:
            mha = layer.attn.attn
            delta = LowRankDelta(*mha.in_proj_weight.shape)
            parametrize.register_parametrization(mha, 'in_proj_weight', delta)
            ups.append(delta.up)
    assert torch.equal(image_to_prompt(), base)
    with torch.no_grad():
        for up in ups:
            up.normal_(0, 0.5)
    assert (image_to_prompt() - base).abs().max() > 1e-3


@pytest.mark.parametrize('backbone', ['vit', 'swin'])
def test_vpt_with_lora_trains_only_prompts_lora_and_head(backbone):
    """AdamW over all parameters of a segmentor built from mmseg's registry:
    prompts, LoRA weights and the head change, every other backbone tensor
    stays bit-identical and gets no optimizer state."""
    if backbone == 'vit':
        cfg = dict(VIT, type='VPTVisionTransformer', prompt_length=3,
                   out_indices=(1, ))
        head = fcn_head(32)
    else:
        cfg = dict(SWIN, type='VPTSwinTransformer', prompt_length=3)
        head = uper_head([16, 32])
    seg = build_segmentor(cfg, head)
    randomize_(seg.backbone)
    wrapped = add_lora(seg.backbone, LORA_TARGETS[backbone])
    lora = {f'backbone.{n}.lora_{ud}.weight' for n in wrapped
            for ud in ('down', 'up')}
    prompts = {n for n in trainable(seg) if 'prompt' in n}
    head_params = {n for n in trainable(seg) if n.startswith('decode_head')}
    assert prompts and head_params
    assert trainable(seg) == prompts | lora | head_params
    check_frozen_training(seg, steps=3)


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------
def flops(model: nn.Module, x: torch.Tensor) -> int:
    return get_model_complexity_info(model, inputs=(x, ), show_table=False,
                                     show_arch=False)['flops']


@pytest.mark.parametrize('backbone, prompt_length', [
    ('vit', 0), ('vit', 10), ('swin', 0), ('swin', 16)])
def test_flop_count_of_the_fused_path_equals_the_plain_path(
        backbone, prompt_length):
    """mmengine counts the plain path's two attention matmuls; the fused
    path's scaled_dot_product_attention must count the same. (Swin with 16
    prompts and 4 x 4 windows has 32 keys per window: other counts are
    padded to a multiple of 16 with masked keys, which the fused kernel does
    compute and the count includes.)"""
    x = torch.randn(1, 3, 64, 64)
    fused = flops(build(backbone, prompt_length, True), x)
    plain = flops(build(backbone, prompt_length, False), x)
    assert fused == plain


@pytest.mark.slow
def test_mmseg_get_flops_counts_the_fused_attention(tmp_path):
    """mmseg's own tools/analysis/get_flops.py on the demo ViT config: the
    default (fused) path gives the plain path's figure within 1%."""
    import mmseg
    tool = (Path(mmseg.__file__).parent / '.mim' / 'tools' /
            'analysis_tools' / 'get_flops.py')
    config = REPO / 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
    result = {}
    for fused in ('True', 'False'):
        out = run([PYTHON, tool, config, '--shape', '64', '--cfg-options',
                   f'model.backbone.fused_attn={fused}'], tmp_path,
                  env={'PYTHONPATH': str(REPO)})
        value, unit = re.search(r'Flops: ([\d.]+)([KMGT]?)', out).groups()
        result[fused] = float(value) * 1000**' KMGT'.index(unit or ' ')
    assert abs(result['True'] / result['False'] - 1) < 0.01, result
