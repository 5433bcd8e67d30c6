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

# configs/vtab/ and configs/fgvc/ are mmpretrain classification configs
# (tests/test_vtab.py, tests/test_fgvc.py)
CONFIGS = sorted(
    str(p.relative_to(REPO)) for p in (REPO / 'configs').rglob('*.py')
    if '_base_' not in p.parts and 'vtab' not in p.parts
    and 'fgvc' not in p.parts)


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
    assert backbone.type in ('VPTVisionTransformer', 'VPTSwinTransformer',
                             'VPTTimmViT', 'VPTResNetV1c', 'VPTConvNeXt')
    assert cfg.custom_imports.imports == ['mmseg_vpt']
    assert cfg.default_scope == 'mmseg'

    exclude = list(backbone.frozen_exclude)
    # Partial-k rows also train the last k layers (mmseg ViT layer names)
    k = backbone.get('partial_k', 0)
    partial = tuple(f'layers.{i}.' for i in range(
        len(getattr(model.backbone, 'layers', [])) - k,
        len(getattr(model.backbone, 'layers', [])))) if k else ()
    for name, param in model.backbone.named_parameters():
        # empty prompt tensors (Swin stages without prompted blocks) never
        # train: they would get no gradient
        expected = param.numel() > 0 and (
            'all' in exclude or any(e in name for e in exclude)
            or name.startswith(partial))
        assert param.requires_grad == expected, (config, name)
    # the neck and heads always train
    for head in ('neck', 'decode_head', 'auxiliary_head'):
        if hasattr(model, head):
            assert all(p.requires_grad
                       for p in getattr(model, head).parameters())

    prompts = [n for n, _ in model.backbone.named_parameters()
               if 'prompt' in n]
    # prompt tokens, or a padding border (the ConvNet rows)
    assert bool(prompts) == (backbone.get('prompt_length', 0) > 0
                             or backbone.get('prompt_pad', 0) > 0), config
    if backbone.type == 'VPTVisionTransformer' and prompts:
        layers = 1 if backbone.prompt_layers == 'shallow' else len(
            model.backbone.layers)  # the configs are deep or shallow
        assert model.backbone.prompt_embeddings.shape == (
            layers, backbone.prompt_length, backbone.embed_dims)
    if backbone.type == 'VPTTimmViT' and prompts:
        timm_model = model.backbone.timm_model
        assert model.backbone.prompt_embeddings.shape == (
            len(timm_model.blocks), backbone.prompt_length,
            timm_model.embed_dim)

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


@pytest.mark.parametrize('config', CONFIGS)
def test_config_hooks_build(config):
    from mmseg.registry import HOOKS
    cfg = Config.fromfile(REPO / config)
    for hook in cfg.custom_hooks:
        HOOKS.build(dict(hook))


def test_token_init_row_keeps_the_runtime_hooks():
    runtime = Config.fromfile(REPO / 'configs/_base_/default_runtime.py')
    cfg = Config.fromfile(
        REPO / 'configs/vpt/setr_vit-l_pup_vpt-deep-10-token-init_'
        'ade20k-512x512.py')
    assert cfg.custom_hooks[:-1] == runtime.custom_hooks
    assert cfg.custom_hooks[-1].type == 'PromptTokenInitHook'
    base = Config.fromfile(
        REPO / 'configs/vpt/setr_vit-l_pup_vpt-deep-10_ade20k-512x512.py')
    assert cfg.model == base.model


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


# configs/vpt_timm/: backbone token -> timm model name (with its pretrained
# tag); each has a VPT-deep row and a head-only sibling
TIMM_ROWS = {
    'dinov2-l14-reg4': 'vit_large_patch14_reg4_dinov2.lvd142m',
    'dinov3-l16': 'vit_large_patch16_dinov3.lvd1689m',
    'eva02-l14': 'eva02_large_patch14_224.mim_in22k',
    'clip-l14': 'vit_large_patch14_clip_224.openai',
    'mae-l16': 'vit_large_patch16_224.mae',
}
# the 1B-7B rows (their setting: tests/test_giant_backbones.py)
GIANT_ROWS = {
    'dinov2-g14-reg4': 'vit_giant_patch14_reg4_dinov2.lvd142m',
    'dinov3-7b16': 'vit_7b_patch16_dinov3.lvd1689m',
}


def timm_row(backbone: str, row: str) -> str:
    return f'configs/vpt_timm/upernet_{backbone}_mln_{row}_ade20k-512x512.py'


def test_the_timm_vit_l_rows_exist_and_follow_the_setting():
    import timm
    from timm.models import get_pretrained_cfg
    files = sorted(str(p.relative_to(REPO))
                   for p in (REPO / 'configs/vpt_timm').glob('*.py'))
    assert files == sorted(timm_row(b, r) for b in (*TIMM_ROWS, *GIANT_ROWS)
                           for r in ('vpt-deep-10', 'head-only'))
    assert all(f in CONFIGS for f in files)
    for token, name in TIMM_ROWS.items():
        for row in ('vpt-deep-10', 'head-only'):
            cfg = Config.fromfile(REPO / timm_row(token, row))
            backbone = cfg.model.backbone
            assert backbone.type == 'VPTTimmViT'
            assert backbone.model_name == name and timm.is_model(name)
            assert backbone.init_cfg == dict(type='Pretrained',
                                             checkpoint=f'timm://{name}')
            assert backbone.timm_kwargs == dict(drop_path_rate=0.)
            assert backbone.out_indices == (7, 11, 15, 23)
            assert not backbone.out_norm and not backbone.output_cls_token
            assert backbone.frozen_eval
            # the normalisation timm's pretrained config gives the tag
            pretrained = get_pretrained_cfg(name)
            preprocessor = cfg.model.data_preprocessor
            assert preprocessor.mean == pytest.approx(
                [255 * v for v in pretrained.mean])
            assert preprocessor.std == pytest.approx(
                [255 * v for v in pretrained.std])
            assert preprocessor.size == (512, 512)
            # mmseg's MultiLevelNeck into UperNet + FCN, ViT-L widths
            assert cfg.model.neck == dict(
                type='MultiLevelNeck', in_channels=[1024] * 4,
                out_channels=1024, scales=[4, 2, 1, 0.5])
            assert cfg.model.decode_head.type == 'UPerHead'
            assert cfg.model.decode_head.in_channels == [1024] * 4
            assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
            assert cfg.model.auxiliary_head.type == 'FCNHead'
            assert cfg.model.auxiliary_head.in_channels == 1024
            assert cfg.model.auxiliary_head.norm_cfg.type == 'SyncBN'
            assert cfg.model.test_cfg == dict(
                mode='slide', crop_size=(512, 512), stride=(341, 341))
            # the setting: 160k iterations, 8 x 2 images, AdamW 6e-5
            assert cfg.train_cfg.max_iters == 160000
            assert cfg.train_dataloader.batch_size == 2
            optim = cfg.optim_wrapper
            assert optim.constructor == 'FrozenSummaryOptimWrapperConstructor'
            assert (optim.optimizer.type, optim.optimizer.lr,
                    optim.optimizer.weight_decay) == ('AdamW', 6e-5, 0.01)
            assert optim.paramwise_cfg.custom_keys.prompt == dict(
                lr_mult=10., decay_mult=0.)
            assert cfg.custom_imports.imports == ['mmseg_vpt']
            assert cfg.default_scope == 'mmseg'
            text = (REPO / timm_row(token, row)).read_text()
            assert "This project's choice" in text, (token, row)


def _without_trainable_set(cfg: Config) -> dict:
    d = cfg.to_dict()
    for key in ('prompt_length', 'frozen_exclude'):
        d['model']['backbone'].pop(key)
    d.pop('optim_wrapper')
    return d


@pytest.mark.parametrize('token', list(TIMM_ROWS))
def test_timm_vpt_row_and_head_only_sibling_differ_in_what_trains(token):
    vpt = Config.fromfile(REPO / timm_row(token, 'vpt-deep-10'))
    head = Config.fromfile(REPO / timm_row(token, 'head-only'))
    assert (vpt.model.backbone.prompt_length, vpt.model.backbone.prompt_layers,
            vpt.model.backbone.frozen_exclude) == (10, 'deep', ['prompt'])
    assert (head.model.backbone.prompt_length,
            head.model.backbone.frozen_exclude) == (0, [])
    assert _without_trainable_set(vpt) == _without_trainable_set(head)


@pytest.mark.parametrize('token', ['dinov2-l14-reg4', 'eva02-l14'])
def test_timm_vit_l_rows_train_prompts_neck_and_heads_only(token):
    """ViT-L: 24 blocks x 10 prompts x 1024 dims trainable in the backbone
    (nothing else of its ~304M parameters); head-only: nothing."""
    _, model = build(timm_row(token, 'vpt-deep-10'))
    trainable = {n: p.numel() for n, p in model.backbone.named_parameters()
                 if p.requires_grad}
    assert trainable == {'prompt_embeddings': 24 * 10 * 1024}
    total = sum(p.numel() for p in model.backbone.parameters())
    assert 300e6 < total - 24 * 10 * 1024 < 310e6
    assert {n.split('.')[0] for n, p in model.named_parameters()
            if p.requires_grad} == {'backbone', 'neck', 'decode_head',
                                    'auxiliary_head'}
    _, model = build(timm_row(token, 'head-only'))
    assert not any(p.requires_grad for p in model.backbone.parameters())
