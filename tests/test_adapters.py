"""The paper's Adapter baseline on every backbone: an untrained adapter is
the identity, exactly the adapters train, base weights and task files work
as for prompts, and bad arguments are named."""
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_vpt.checkpoint import plan_tuned

from .vpt_helpers import (build_segmentor, check_frozen_training, fcn_head,
                          randomize_, uper_head)

VIT = dict(type='VPTVisionTransformer', img_size=(32, 32), patch_size=8,
           embed_dims=32, num_layers=3, num_heads=2, out_indices=(1, 2),
           init_cfg=None)
SWIN = dict(type='VPTSwinTransformer', pretrain_img_size=32, embed_dims=16,
            depths=[2, 2], num_heads=[1, 2], window_size=4,
            out_indices=(0, 1), strides=(4, 2), init_cfg=None)
TIMM = dict(type='VPTTimmViT', model_name='vit_large_patch16_dinov3',
            timm_kwargs=dict(depth=3, embed_dim=32, num_heads=2),
            out_indices=(1, 2))
BACKBONES = {'vit': VIT, 'swin': SWIN, 'timm_dinov3': TIMM}
ADAPTER = dict(prompt_length=0, frozen_exclude=['adapter'],
               adapter_reduction=4)


def build(cfg: dict, **kwargs):
    model = MODELS.build(dict(cfg, **kwargs))
    model.init_weights()
    return model


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return [o for o in model(x)]


@pytest.mark.parametrize('kind', BACKBONES)
def test_untrained_adapters_give_the_backbones_features_exactly(kind):
    """Zero-initialised up-projections: bit-identical outputs to the same
    weights without adapters, after the backbone's own init too."""
    plain = build(BACKBONES[kind], prompt_length=0, frozen_exclude=['all'])
    randomize_(plain)
    adapted = build(BACKBONES[kind], **ADAPTER)
    missing, unexpected = adapted.load_state_dict(plain.state_dict(),
                                                  strict=False)
    assert not unexpected and missing and all('.adapter.' in k
                                              for k in missing)
    assert all(torch.equal(a.up.weight, torch.zeros_like(a.up.weight))
               for a in adapted.adapters)
    x = torch.randn(2, 3, 32, 48)
    for a, b in zip(outputs(adapted, x), outputs(plain, x)):
        assert torch.equal(a, b)
    # one trained step away from zero, they are not the identity any more
    with torch.no_grad():
        adapted.adapters[-1].up.bias.add_(0.1)
    assert not torch.equal(outputs(adapted, x)[-1], outputs(plain, x)[-1])


@pytest.mark.parametrize('kind', BACKBONES)
def test_exactly_the_adapters_train_and_frozen_weights_stay(kind):
    cfg = BACKBONES[kind]
    backbone = build(cfg, **ADAPTER)
    blocks = 3 if kind != 'swin' else 4
    assert len(backbone.adapters) == blocks
    trainable = {n for n, p in backbone.named_parameters()
                 if p.requires_grad}
    assert trainable and all('.adapter.' in n for n in trainable)
    # per adapter: down C x C/r + C/r, up C/r x C + C
    widths = [32] * 3 if kind != 'swin' else [16, 16, 32, 32]
    expected = sum(2 * c * (c // 4) + c // 4 + c for c in widths)
    assert sum(p.numel() for p in backbone.parameters()
               if p.requires_grad) == expected
    head = fcn_head(32) if kind != 'swin' else uper_head([16, 32])
    if kind != 'swin':
        head.update(in_index=1)
    seg = build_segmentor(dict(cfg, **ADAPTER), head)
    check_frozen_training(seg, steps=3)


def test_adapters_are_not_in_base_files_and_are_in_task_files(tmp_path):
    """A base file (no adapters) loads all or nothing as for prompts; a
    tuned-only task file stores the adapters and omits the frozen
    weights."""
    base = build(VIT, prompt_length=0, frozen_exclude=['all'])
    randomize_(base)
    path = tmp_path / 'base.pth'
    torch.save(base.state_dict(), path)
    cfg = dict(VIT, **ADAPTER, init_cfg=dict(type='Pretrained',
                                             checkpoint=str(path)))
    seg = build_segmentor(cfg, fcn_head(32) | dict(in_index=1))
    state = seg.backbone.state_dict()
    for key, value in base.state_dict().items():
        assert torch.equal(state[key], value), key
    plan = plan_tuned(seg, require=True)
    stored = set(seg.state_dict()) - set(plan.omitted)
    assert {k for k in stored if k.startswith('backbone.')} == {
        f'backbone.layers.{i}.ffn.adapter.{m}.{t}' for i in range(3)
        for m in ('down', 'up') for t in ('weight', 'bias')}


@pytest.mark.parametrize('reduction', [5, 0, -2, 2.0, True])
def test_a_reduction_that_does_not_divide_the_width_is_named(reduction):
    with pytest.raises(ValueError, match=r'adapter_reduction must be a '
                       r'positive int dividing the layer width 32'):
        MODELS.build(dict(VIT, **dict(ADAPTER, adapter_reduction=reduction)))


def test_frozen_adapters_warn():
    with pytest.warns(UserWarning, match="freezes the adapters"):
        MODELS.build(dict(VIT, prompt_length=0, frozen_exclude=[],
                          adapter_reduction=4))


# --------------------------------------------------------------------------
# Partial-k: the last k layers and the final norm train
# --------------------------------------------------------------------------
PARTIAL = {  # kind -> (k, prefixes that must train, exactly)
    'vit': (1, ('layers.2.', 'ln1.')),
    'swin': (3, ('stages.0.blocks.1.', 'stages.1.blocks.', 'norm0.',
                 'norm1.')),
    'timm_dinov3': (2, ('timm_model.blocks.1.', 'timm_model.blocks.2.')),
}


@pytest.mark.parametrize('kind', BACKBONES)
def test_partial_k_trains_the_last_k_layers_and_final_norm(kind):
    k, prefixes = PARTIAL[kind]
    cfg = dict(BACKBONES[kind], prompt_length=0, frozen_exclude=[],
               partial_k=k)
    if kind == 'vit':
        cfg.update(final_norm=True)
    backbone = build(cfg)
    for name, param in backbone.named_parameters():
        assert param.requires_grad == name.startswith(prefixes), name
    head = fcn_head(32) if kind != 'swin' else uper_head([16, 32])
    if kind != 'swin':
        head.update(in_index=1)
    check_frozen_training(build_segmentor(cfg, head), steps=2)


@pytest.mark.parametrize('k', [4, -1, 1.0])
def test_partial_k_beyond_the_depth_is_named(k):
    with pytest.raises(ValueError, match=r'partial_k must be an int in '
                       r'\[0, 3\] \(the backbone has 3 layers'):
        MODELS.build(dict(VIT, prompt_length=0, frozen_exclude=[],
                          partial_k=k))
