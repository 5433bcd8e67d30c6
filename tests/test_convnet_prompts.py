"""VPT for ConvNets (padding prompts) on ResNet and ConvNeXt: a zero border
is the parent ConvNet on the zero-padded image bit for bit, the maps are
cropped back to the image, exactly the border (and head) trains while the
frozen weights and BatchNorm statistics stay, base files load all or
nothing, task files round-trip through mmseg's ``init_model``, and bad
settings are named."""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.models.backbones import ConvNeXt
from mmseg.apis import init_model
from mmseg.models.backbones import ResNet, ResNetV1c
from mmseg.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_vpt.checkpoint import model_from_config, plan_tuned
from mmseg_vpt.models.pixel_prompts import (PaddingPrompter, crop_offset,
                                            crop_to_image)

from .tools_helpers import (REPO, eval_cmd, metric_values, read_checkpoint,
                            run, short_schedule, synthetic_workspace,
                            train_cmd)
from .vpt_helpers import (assert_outputs_equal, build_segmentor,
                          check_frozen_training, eval_loss, fcn_head,
                          make_batch, make_optim_wrapper,
                          prompt_only_loss_ratio, randomize_, train_steps,
                          uper_head)

OURS = ('prompt_pad', 'img_size', 'prompt_init', 'crop_outputs',
        'frozen_exclude', 'frozen_eval')
RESNET = dict(type='VPTResNetV1c', depth=18, base_channels=8,
              stem_channels=8, out_indices=(0, 1, 2, 3), img_size=32,
              prompt_pad=4)
CONVNEXT = dict(type='VPTConvNeXt',
                arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64]),
                out_indices=[0, 1, 2, 3], gap_before_final_norm=False,
                img_size=32, prompt_pad=4)
BACKBONES = {'resnet': RESNET, 'convnext': CONVNEXT}
PARENTS = {'resnet': ResNetV1c, 'convnext': ConvNeXt}
BORDER = {f'pad_prompt.{s}' for s in ('top', 'bottom', 'left', 'right')}


def build(cfg: dict, **kwargs):
    init_default_scope('mmseg')
    model = MODELS.build(copy.deepcopy(dict(cfg, **kwargs)))
    model.init_weights()
    return model


def parent_of(kind: str, **kwargs):
    """The mmseg / mmpretrain parent with the same architecture, weights
    perturbed off their defaults."""
    args = {k: v for k, v in copy.deepcopy(BACKBONES[kind]).items()
            if k not in OURS + ('type', )}
    parent = PARENTS[kind](**dict(args, **kwargs))
    parent.init_weights()
    randomize_(parent)
    with torch.no_grad():  # BatchNorm statistics off (0, 1) as well
        for m in parent.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    parent.eval()  # (mmseg's ResNet.train returns None)
    return parent


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def with_parent_weights(kind: str, **kwargs):
    parent = parent_of(kind)
    vpt = build(BACKBONES[kind], **kwargs)
    missing, unexpected = vpt.load_state_dict(parent.state_dict(),
                                              strict=False)
    assert set(missing) == BORDER and not unexpected
    return vpt, parent


@pytest.mark.parametrize('kind', BACKBONES)
@pytest.mark.parametrize('size', [(32, 32), (40, 56)])
def test_zero_border_is_the_parent_on_the_zero_padded_image(kind, size):
    """Bit for bit, at the configured size and at another one (the strips
    resized); cropped maps are the same crop of the parent's."""
    vpt, parent = with_parent_weights(kind, crop_outputs=False)
    x = torch.randn(2, 3, *size)
    padded = F.pad(x, (4, 4, 4, 4))
    expected = outputs(parent, padded)
    assert_outputs_equal(outputs(vpt, x), expected)
    vpt.crop_outputs = True
    assert_outputs_equal(
        outputs(vpt, x),
        tuple(crop_to_image(o, 4, padded.shape[-2:]) for o in expected))


@pytest.mark.parametrize('kind', BACKBONES)
@pytest.mark.parametrize('size', [(32, 32), (64, 96)])
def test_a_pad_of_the_total_stride_crops_to_the_unpadded_maps(kind, size):
    """prompt_pad=32 (both backbones have stride 32): every cropped map
    has exactly the size the un-padded image gives the parent."""
    vpt = build(BACKBONES[kind], prompt_pad=32)
    parent = parent_of(kind)
    x = torch.randn(1, 3, *size)
    got = [tuple(o.shape) for o in outputs(vpt, x)]
    assert got == [tuple(o.shape) for o in outputs(parent, x)]
    assert [g[-1] for g in got] == [size[1] // s for s in (4, 8, 16, 32)]


def test_crop_rounds_the_borders_share_half_up_and_keeps_a_row():
    # share = pad * out / padded: 8.0, 0.5 (up), 0.3, 4.4
    assert [crop_offset(4, 10, 40), crop_offset(4, 5, 40),
            crop_offset(4, 3, 40), crop_offset(11, 24, 60)] == [1, 1, 0, 4]
    # a border as wide as the image: 2 * 1 of 2 rows would leave none
    assert crop_offset(32, 2, 96) == 0
    assert crop_to_image(torch.zeros(1, 1, 2, 7), 32, (96, 96)).shape == (
        1, 1, 2, 3)


@pytest.mark.parametrize('size', [(8, 12), (5, 9)])
def test_the_border_is_the_strips_resized_only_along_their_length(size):
    prompter = PaddingPrompter(3, 2, (8, 12), prompt_init='uniform')
    assert all(s.abs().max() <= 1 and s.abs().min() > 0 for s in (
        prompter.top, prompter.bottom, prompter.left, prompter.right))
    h, w = size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        out = prompter(x)
    assert out.shape == (2, 3, h + 4, w + 4)
    assert torch.equal(out[:, :, 2:-2, 2:-2], x)

    def fit(strip, shape):
        return F.interpolate(strip, size=shape, mode='bilinear',
                             align_corners=False)[0]

    for b in range(2):
        assert torch.equal(out[b, :, :2], fit(prompter.top, (2, w + 4)))
        assert torch.equal(out[b, :, -2:], fit(prompter.bottom, (2, w + 4)))
        assert torch.equal(out[b, :, 2:-2, :2], fit(prompter.left, (h, 2)))
        assert torch.equal(out[b, :, 2:-2, -2:], fit(prompter.right, (h, 2)))
    if size == (8, 12):  # the configured size: the stored pixels
        assert torch.equal(out[0, :, :2], prompter.top[0])


@pytest.mark.parametrize('kind', BACKBONES)
def test_exactly_the_border_and_head_train_and_frozen_state_stays(kind):
    """AdamW over every parameter: only the border and the head move; the
    frozen weights and every backbone buffer (BatchNorm statistics) stay
    bit-identical, as the frozen ConvNet runs in eval mode."""
    cfg = BACKBONES[kind]
    backbone = build(cfg)
    assert {n for n, p in backbone.named_parameters()
            if p.requires_grad} == BORDER
    # border: 3 x (2 x 4 x 40 + 2 x 32 x 4)
    assert sum(p.numel() for p in backbone.parameters()
               if p.requires_grad) == 3 * (2 * 4 * 40 + 2 * 32 * 4)
    widths = [8, 16, 32, 64]
    head = fcn_head(64) if kind == 'resnet' else uper_head(widths)
    seg = build_segmentor(cfg, head)
    seg.train()
    assert not any(m.training for m in seg.backbone.modules()
                   if m not in (seg.backbone, seg.backbone.prompt_dropout))
    check_frozen_training(seg, steps=3)
    if kind == 'resnet':  # 3 in the stem, 2 per block, 3 downsamples
        assert sum(isinstance(m, _BatchNorm)
                   for m in seg.backbone.modules()) == 22
        # the control: a frozen ResNet in train mode moves its statistics
        seg = build_segmentor(dict(cfg, frozen_eval=False), head)
        before = seg.backbone.stem[1].running_mean.clone()
        train_steps(seg, make_optim_wrapper(seg.parameters()),
                    make_batch(4), 1)
        assert not torch.equal(seg.backbone.stem[1].running_mean, before)


def test_training_lowers_the_loss_and_the_border_alone_moves_it():
    """On a fixed synthetic batch (30 AdamW steps): border and head
    together (the VPT setting) lower the loss a lot; the 4-pixel border
    alone, under a frozen random ResNet and head, lowers it a little
    (ratios 0.989-0.997 over seeds 0-2: the crop keeps only the maps of
    the image, which the border reaches through the receptive fields)."""
    seg = build_segmentor(RESNET, uper_head([8, 16, 32, 64]))
    data = make_batch(4)
    start = eval_loss(seg, data)
    train_steps(seg, make_optim_wrapper(
        [p for p in seg.parameters() if p.requires_grad], lr=0.05), data, 30)
    assert eval_loss(seg, data) / start < 0.5

    seg = build_segmentor(RESNET, uper_head([8, 16, 32, 64]))
    ratio = prompt_only_loss_ratio(seg, steps=30, lr=0.05)
    assert ratio < 0.998, ratio


@pytest.mark.parametrize('pad', [0, -1, 2.5, True, '4'])
def test_a_pad_that_is_not_a_positive_int_is_named(pad):
    with pytest.raises(ValueError, match=r'prompt_pad must be a positive '
                       r'int \(border width in pixels\), got'):
        MODELS.build(dict(RESNET, prompt_pad=pad))


def test_a_pad_larger_than_the_image_is_named():
    with pytest.raises(ValueError, match=r'prompt_pad=33 is larger than the '
                       r'image: it may be at most the shorter side of '
                       r'img_size=\(32, 48\) \(32\)'):
        MODELS.build(dict(CONVNEXT, prompt_pad=33, img_size=(32, 48)))
    model = build(RESNET)
    with pytest.raises(ValueError, match=r'prompt_pad=4 is larger than the '
                       r'input image \(3x40\)'):
        outputs(model, torch.randn(1, 3, 3, 40))


def test_other_bad_settings_are_named():
    with pytest.raises(ValueError, match='prompt_init must be one of'):
        MODELS.build(dict(RESNET, prompt_init='xavier'))
    with pytest.raises(ValueError, match='crop_outputs=True crops feature '
                       'maps, but gap_before_final_norm=True pools'):
        MODELS.build(dict(CONVNEXT, gap_before_final_norm=True))
    with pytest.warns(UserWarning, match='freezes the padding prompts'):
        MODELS.build(dict(RESNET, frozen_exclude=[]))
    with pytest.raises(ValueError, match='runs prepended prompt tokens'):
        with build(RESNET).mixed_prompts([], torch.zeros(1)):
            pass


# --------------------------------------------------------------------------
# base weights and task files
# --------------------------------------------------------------------------
def torchvision_resnet18():
    import torchvision
    model = torchvision.models.resnet18(weights=None)
    randomize_(model)
    return model.eval()


def test_a_torchvision_resnet_file_loads_and_gives_its_features(tmp_path):
    """torchvision's layout (as ``torchvision://resnet50``) loads all or
    nothing (its classifier dropped); the zero border equals torchvision's
    ResNet on the zero-padded image."""
    tv = torchvision_resnet18()
    path = tmp_path / 'resnet18.pth'
    torch.save(tv.state_dict(), path)
    vpt = build(dict(type='VPTResNet', depth=18, out_indices=(3, ),
                     img_size=32, prompt_pad=4, crop_outputs=False,
                     init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    for key, value in tv.state_dict().items():
        if not key.startswith('fc.'):
            assert torch.equal(vpt.state_dict()[key], value), key
    x = torch.randn(2, 3, 32, 32)
    features = torch.nn.Sequential(*list(tv.children())[:-2])
    with torch.no_grad():
        assert torch.equal(outputs(vpt, x)[0], features(F.pad(x, (4, ) * 4)))

    state = tv.state_dict()
    del state['layer2.0.conv1.weight']
    torch.save(state, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match=r'do not provide 1 parameters of '
                       r'VPTResNet: layer2\.0\.conv1\.weight'):
        build(dict(type='VPTResNet', depth=18, img_size=32, prompt_pad=4,
                   init_cfg=dict(type='Pretrained',
                                 checkpoint=str(tmp_path / 'partial.pth'))))


def segmentor_config(kind: str, base: Path) -> Config:
    backbone = dict(copy.deepcopy(BACKBONES[kind]),
                    init_cfg=dict(type='Pretrained', checkpoint=str(base)))
    head = fcn_head(64) if kind == 'resnet' else uper_head([8, 16, 32, 64])
    return Config(dict(
        default_scope='mmseg',
        model=dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375], size=(32, 32)),
            backbone=backbone, decode_head=head, train_cfg=dict(),
            test_cfg=dict(mode='whole'))))


@pytest.mark.parametrize('kind', BACKBONES)
def test_task_file_holds_the_border_and_roundtrips_through_init_model(
        kind, tmp_path):
    """The parent's own state dict is the base file; the task file keeps
    the border and the head only, and mmseg's ``init_model`` (which clears
    the backbone's init_cfg) rebuilds exactly the trained model from it."""
    base = tmp_path / 'base.pth'
    parent = parent_of(kind)
    torch.save(parent.state_dict(), base)
    cfg = segmentor_config(kind, base)
    model = model_from_config(copy.deepcopy(cfg))
    model.init_weights()
    state = model.backbone.state_dict()
    for key, value in parent.state_dict().items():
        assert torch.equal(state[key], value), key
    with torch.no_grad():  # as if trained
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    plan = plan_tuned(model, require=True)
    task = plan.apply({'meta': {}, 'state_dict': model.state_dict()})
    stored = {k for k in task['state_dict'] if k.startswith('backbone.')}
    assert stored == {f'backbone.{k}' for k in BORDER}
    torch.save(task, tmp_path / 'task.pth')

    loaded = init_model(copy.deepcopy(cfg), str(tmp_path / 'task.pth'),
                        device='cpu')
    assert loaded.backbone.init_cfg != cfg.model.backbone.init_cfg
    a, b = loaded.state_dict(), model.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x, mode='tensor'), model(x, mode='tensor'))


# --------------------------------------------------------------------------
# the VTAB-1k bases (mmpretrain ImageClassifier)
# --------------------------------------------------------------------------
VTAB = {
    'configs/vtab/_base_/resnet50_vpt-pad.py': (
        {'model.backbone.depth': 18, 'model.backbone.base_channels': 8,
         'model.backbone.stem_channels': 8, 'model.head.in_channels': 64},
        3 * (2 * 5 * 234 + 2 * 224 * 5), (23.4e6, 23.6e6)),
    'configs/vtab/_base_/convnext-b_vpt-pad.py': (
        {'model.backbone.arch': 'atto', 'model.head.in_channels': 320},
        3 * (2 * 5 * 234 + 2 * 224 * 5), (87.5e6, 87.7e6)),
}


def vtab_model(config: str, options: dict):
    from mmpretrain.registry import MODELS as CLS_MODELS
    cfg = Config.fromfile(REPO / config)
    cfg.merge_from_dict(dict(options, **{'model.backbone.init_cfg': None}))
    init_default_scope('mmpretrain')
    return CLS_MODELS.build(cfg.model)


@pytest.mark.parametrize('config', VTAB)
def test_vtab_bases_train_the_border_and_the_head(config):
    tiny, border, total = VTAB[config]
    model = vtab_model(config, dict(tiny, **{
        'model.backbone.img_size': 32, 'model.backbone.prompt_pad': 2}))
    assert {n for n, p in model.backbone.named_parameters()
            if p.requires_grad} == BORDER
    assert all(p.requires_grad for p in model.head.parameters())
    with torch.no_grad():
        model.eval()
        assert model(torch.randn(2, 3, 32, 32), mode='tensor').shape == (2,
                                                                        100)
    # at the real size: a 5-pixel border around 224 px
    model = vtab_model(config, {})
    tuned = sum(p.numel() for p in model.backbone.parameters()
                if p.requires_grad)
    assert tuned == border == 13740
    frozen = sum(p.numel() for p in model.backbone.parameters()) - tuned
    assert total[0] < frozen < total[1]


# --------------------------------------------------------------------------
# end to end: tools/train.py and tools/test.py on the ResNet row
# --------------------------------------------------------------------------
ROW = 'configs/vpt/upernet_r50_vpt-pad-32_ade20k-512x512.py'
OVERRIDE = '''_base_ = [{config!r}]
model = dict(
    backbone=dict(depth=18, base_channels=8, stem_channels=8,
                  init_cfg=dict(type='Pretrained', checkpoint={base!r})),
    decode_head=dict(in_channels=[8, 16, 32, 64], channels=16),
    auxiliary_head=dict(in_channels=32, channels=8))
'''


@pytest.mark.slow
def test_resnet_row_trains_the_border_and_its_task_file_reproduces_miou(
        tmp_path_factory):
    """The real row file under a reduced override (a ResNet-18 of width 8,
    random base weights saved from mmseg's ResNetV1c) on generated
    ADE20K-layout data, 512 px crops as in the row."""
    root = synthetic_workspace(tmp_path_factory, 'convnet_row')
    (root / 'data/ade').symlink_to(root / 'data/synthetic_ade20k')
    base = root / 'r18_base.pth'
    config = root / 'row.py'
    config.write_text(OVERRIDE.format(config=str(REPO / ROW),
                                      base=str(base)))
    parent = ResNetV1c(depth=18, base_channels=8, stem_channels=8,
                       contract_dilation=True)
    parent.init_weights()
    randomize_(parent)
    torch.save(parent.state_dict(), base)

    work = root / 'work'
    log = run(train_cmd(config, work, '--cfg-options', *short_schedule(2)),
              cwd=root)
    assert 'Parameters:' in log
    assert len(metric_values(log)) == 1

    ckpt = read_checkpoint(work / 'iter_2.pth')
    state = ckpt['state_dict']
    assert {k for k in state if k.startswith('backbone.')} == {
        f'backbone.{k}' for k in BORDER}
    assert state['backbone.pad_prompt.top'].shape == (1, 3, 32, 576)
    assert state['backbone.pad_prompt.top'].abs().sum() > 0  # it trained
    heads = {k.split('.')[0] for k in state if not k.startswith('backbone.')}
    assert heads == {'decode_head', 'auxiliary_head'}

    # mmseg's own loader: the frozen tensors are the base file's
    model = init_model(str(config), str(work / 'iter_2.pth'), device='cpu')
    loaded = model.backbone.state_dict()
    for key, value in parent.state_dict().items():
        assert torch.equal(loaded[key], value), key
    for key in BORDER:
        assert torch.equal(loaded[key], state[f'backbone.{key}'])

    test_log = run(eval_cmd(config, work / 'iter_2.pth', work / 'test'),
                   cwd=root)
    assert metric_values(test_log) == metric_values(log)


def test_resnet_and_v1c_share_the_mechanism():
    """VPTResNetV1c is VPTResNet with mmseg's deep stem: the parent
    ResNetV1c's keys, and a plain ResNet is a ResNet."""
    v1c = build(RESNET)
    assert isinstance(v1c, ResNet) and 'stem.0.weight' in v1c.state_dict()
    assert set(v1c.state_dict()) - BORDER == set(
        parent_of('resnet').state_dict())
