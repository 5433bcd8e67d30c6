"""Every config under configs/ builds through the registry at its real size,
trains exactly what its file says, and gives prompts their learning rate."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_vpt  # noqa: F401

from .tools_helpers import REPO

# configs/vtab/ are mmpretrain classification configs (tests/test_vtab.py)
CONFIGS = sorted(
    str(p.relative_to(REPO)) for p in (REPO / 'configs').rglob('*.py')
    if '_base_' not in p.parts and 'vtab' not in p.parts)


def build(config: str):
    init_default_scope('mmseg')
    cfg = Config.fromfile(REPO / config)
    return cfg, MODELS.build(cfg.model)


def test_the_paper_rows_and_headline_config_exist():
    names = {Path(c).name for c in CONFIGS}
    for row in ('full', 'head-only', 'bias', 'vpt-deep-10', 'vpt-bias'):
        assert f'setr_vit-l_pup_{row}_ade20k-512x512.py' in names
    assert 'setr_vit-l_mla_vpt-deep-10_ade20k-512x512.py' in names
    assert 'upernet_swin_vpt_ade20k.py' in names
    for row in ('full', 'head-only', 'bias', 'vpt-shallow-10', 'vpt-bias'):
        assert f'upernet_swin-b_{row}_ade20k-512x512.py' in names
    assert 'upernet_swin-t_vpt-deep-10_ade20k-512x512.py' in names


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_and_trains_what_its_row_says(config):
    cfg, model = build(config)
    backbone = cfg.model.backbone
    assert backbone.type in ('VPTVisionTransformer', 'VPTSwinTransformer')
    assert cfg.custom_imports.imports == ['mmseg_vpt']
    assert cfg.default_scope == 'mmseg'

    exclude = list(backbone.frozen_exclude)
    for name, param in model.backbone.named_parameters():
        # empty prompt tensors (Swin stages without prompted blocks) never
        # train: they would get no gradient
        expected = param.numel() > 0 and (
            'all' in exclude or any(e in name for e in exclude))
        assert param.requires_grad == expected, (config, name)
    # the heads always train
    for head in ('decode_head', 'auxiliary_head'):
        if hasattr(model, head):
            assert all(p.requires_grad
                       for p in getattr(model, head).parameters())

    prompts = [n for n, _ in model.backbone.named_parameters()
               if 'prompt' in n]
    assert bool(prompts) == (backbone.prompt_length > 0), config
    if backbone.type == 'VPTVisionTransformer' and prompts:
        assert model.backbone.prompt_embeddings.shape == (
            len(model.backbone.layers), backbone.prompt_length,
            backbone.embed_dims)

    # the optimizer wrapper builds and gives prompts their lr multiplier
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr = cfg.optim_wrapper.optimizer.lr
    mult = cfg.optim_wrapper.get('paramwise_cfg', {}).get(
        'custom_keys', {}).get('prompt', {}).get('lr_mult', 1.0)
    prompt_params = {id(p) for n, p in model.named_parameters()
                     if 'prompt' in n}
    for group in optim.optimizer.param_groups:
        if any(id(p) in prompt_params for p in group['params']):
            assert group['lr'] == pytest.approx(base_lr * mult)


def test_vpt_deep_vit_l_counts_match_the_paper_setting():
    """ViT-L/16 VPT-deep: 24 layers x 10 prompts x 1024 dims trainable in the
    backbone, nothing else of its ~304M parameters."""
    _, model = build('configs/vpt/setr_vit-l_pup_vpt-deep-10_ade20k-512x512.py')
    trainable = {n: p.numel() for n, p in model.backbone.named_parameters()
                 if p.requires_grad}
    assert trainable == {'prompt_embeddings': 24 * 10 * 1024}
    total = sum(p.numel() for p in model.backbone.parameters())
    assert 300e6 < total < 310e6


def test_swin_b_vpt_deep_prompts_follow_stage_widths():
    _, model = build('configs/vpt/upernet_swin_vpt_ade20k.py')
    shapes = [tuple(t.shape) for t in model.backbone.prompt_embeddings]
    assert shapes == [(2, 10, 128), (2, 10, 256), (18, 10, 512),
                      (2, 10, 1024)]


@torch.no_grad()
def test_demo_configs_run_a_forward_pass():
    for config in ('configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py',
                   'configs/demo/upernet_swin-tiny_vpt-deep_synthetic-ade20k.py'
                   ):
        _, model = build(config)
        model.eval()
        logits = model(torch.randn(2, 3, 64, 64), mode='tensor')
        assert logits.shape[:2] == (2, 150)
