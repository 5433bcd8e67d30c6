"""VTAB-1k classification through mmpretrain: task table and configs, the
backbone -> neck -> head flow, the list-file dataset and its errors, the
generated task, prompts-only learning, the report, and (slow) the tools:
tools/train.py + tools/test.py, tools/vtab_sweep.py, tools/vtab_report.py.

Everything runs on CPU with generated images and tiny backbones (the
configs' ViT-B/16 / Swin-B are only built, never trained)."""
import json
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import mmseg_vpt  # noqa: F401
import mmseg_vpt.vtab.dataset  # noqa: F401  (registers VTABDataset)
from mmseg_vpt.datasets.synthetic_vtab import SHAPES, make_synthetic_vtab
from mmseg_vpt.models.necks import TokenPooling
from mmseg_vpt.vtab import folders
from mmseg_vpt.vtab.dataset import VTABListError, read_vtab_list
from mmseg_vpt.vtab.report import (format_report, load_results, report,
                                   summarize)
from mmseg_vpt.vtab.sweep import SweepSettings, run_sweep, select_best
from mmseg_vpt.vtab.tasks import (GROUPS, METHODS, PAPER_GROUP_MEANS, TASKS,
                                  VIT_DEEP_PROMPT_LENGTH, render_task_config,
                                  tasks_in_group)

from .tools_helpers import (PYTHON, REPO, eval_cmd, metric_values, no_workers,
                            run, run_fails, train_cmd)
from .vpt_helpers import trainable

TASK_CONFIGS = [f'configs/vtab/{t}.py' for t in TASKS]
BASE_CONFIGS = [f'configs/vtab/_base_/{m.base}' for m in METHODS.values()]
TASK = 'synthetic_shapes'  # the generated task's folder name


def models():
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS


# ---------------------------------------------------------------------------
# size overrides: the real configs at test size
# ---------------------------------------------------------------------------
def tiny_options(backbone: str = 'vit', img: int = 32) -> Dict:
    """Config overrides for a tiny backbone at ``img`` px (random init)."""
    if backbone == 'sidetune':
        # SidetuneBackbone: the tiny ViT below, wrapped, and a tiny side
        # network (AlexNet's strides and pools need more than 32 px)
        opts = {k.replace('model.backbone.', 'model.backbone.backbone.'): v
                for k, v in tiny_options('vit', img).items()}
        opts.update({
            'model.backbone.side.channels': (8, 16),
            'model.backbone.side.kernel_sizes': (3, 3),
            'model.backbone.side.strides': (2, 2),
            'model.backbone.side.paddings': (1, 1),
            'model.backbone.side.pool_after': (),
            'model.backbone.side_pool': 2,
        })
    elif backbone == 'timm':
        # VPTTimmViT: the architecture comes from timm_kwargs
        opts = {
            'model.backbone.timm_kwargs.img_size': img,
            'model.backbone.timm_kwargs.patch_size': 8,
            'model.backbone.timm_kwargs.embed_dim': 48,
            'model.backbone.timm_kwargs.depth': 2,
            'model.backbone.timm_kwargs.num_heads': 3,
            'model.head.in_channels': 48,
        }
    elif backbone == 'vit':
        opts = {
            'model.backbone.img_size': (img, img),
            'model.backbone.patch_size': 8,
            'model.backbone.embed_dims': 48,
            'model.backbone.num_layers': 2,
            'model.backbone.num_heads': 3,
            'model.head.in_channels': 48,
        }
    else:
        opts = {
            'model.backbone.pretrain_img_size': img,
            'model.backbone.embed_dims': 16,
            'model.backbone.depths': (2, 2, 2, 2),
            'model.backbone.num_heads': (1, 2, 4, 8),
            'model.backbone.window_size': 4,
            'model.head.in_channels': 128,
        }
    opts['model.backbone.init_cfg'] = None  # (SidetuneBackbone: forwarded)
    for loader in ('train', 'val', 'test'):
        opts[f'{loader}_dataloader.dataset.pipeline.1.scale'] = (img, img)
    return opts


def data_options(data_root: Path, num_classes: int = 3) -> Dict:
    """Point every split at the generated task."""
    opts = {'model.head.num_classes': num_classes}
    for loader in ('train', 'val', 'test'):
        opts[f'{loader}_dataloader.dataset.task'] = TASK
        opts[f'{loader}_dataloader.dataset.data_root'] = str(data_root)
        opts[f'{loader}_dataloader.dataset.num_classes'] = num_classes
        opts[f'{loader}_dataloader.num_workers'] = 0
        opts[f'{loader}_dataloader.persistent_workers'] = False
    return opts


def cli(options: Dict) -> List[str]:
    """``--cfg-options`` strings for ``options``."""
    def fmt(v):
        if isinstance(v, tuple):
            return '(' + ','.join(map(str, v)) + ')'
        return str(v)
    return [f'{k}={fmt(v)}' for k, v in options.items()]


def load(config: str, options: Dict = None) -> Config:
    cfg = Config.fromfile(REPO / config)
    if options:
        cfg.merge_from_dict(options)
    return cfg


@pytest.fixture(scope='module')
def vtab_root(tmp_path_factory) -> Path:
    """A generated 3-class task in the VTAB-1k layout (32 px)."""
    root = tmp_path_factory.mktemp('vtab')
    make_synthetic_vtab(root, task=TASK, num_classes=3, num_train=120,
                        num_val=36, num_test=60, img_size=32)
    return root


# ---------------------------------------------------------------------------
# task table and configs
# ---------------------------------------------------------------------------
def test_task_table_has_the_19_tasks_in_three_groups():
    assert len(TASKS) == 19
    assert [len(tasks_in_group(g)) for g in GROUPS] == [7, 4, 8]
    assert set(VIT_DEEP_PROMPT_LENGTH) == set(TASKS)
    assert TASKS['cifar100'] == ('Natural', 100)
    assert TASKS['sun397'] == ('Natural', 397)
    assert TASKS['patch_camelyon'] == ('Specialized', 2)
    assert TASKS['smallnorb_azimuth'] == ('Structured', 18)
    assert PAPER_GROUP_MEANS[('ViT-B/16', 'vpt-deep')] == (78.48, 82.43,
                                                           54.98)
    assert PAPER_GROUP_MEANS[('Swin-B', 'full')] == (79.10, 86.21, 59.65)
    assert len(PAPER_GROUP_MEANS) == 7


@pytest.mark.parametrize('task', list(TASKS))
def test_task_config_is_the_generated_few_lines(task):
    text = (REPO / f'configs/vtab/{task}.py').read_text()
    assert text == render_task_config(task)
    assert len(text.splitlines()) <= 10


@pytest.mark.parametrize('config', TASK_CONFIGS)
def test_task_config_follows_the_paper_protocol_and_builds(config):
    task = Path(config).stem
    cfg = load(config)
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmseg_vpt.vtab.dataset' in cfg.custom_imports.imports
    assert cfg.model.type == 'ImageClassifier'
    assert cfg.model.backbone.type == 'mmseg.VPTVisionTransformer'
    assert cfg.model.backbone.output_cls_token and cfg.model.backbone.\
        final_norm
    num_classes = TASKS[task][1]
    prompts = VIT_DEEP_PROMPT_LENGTH[task]
    assert cfg.model.head.num_classes == num_classes
    assert cfg.model.backbone.prompt_length == prompts
    assert cfg.model.backbone.frozen_exclude == ['prompt']
    assert cfg.train_dataloader.batch_size == (64 if prompts >= 100 else 128)
    for loader, split in (('train', 'train800val200'), ('val', 'test'),
                          ('test', 'test')):
        dataset = cfg[f'{loader}_dataloader'].dataset
        assert dataset.task == task and dataset.split == split
        # 224x224 resize, no augmentation
        assert [t['type'] for t in dataset.pipeline] == [
            'LoadImageFromFile', 'Resize', 'PackInputs']
        assert dataset.pipeline[1].scale == (224, 224)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'SGD' and optimizer.momentum == 0.9
    assert cfg.auto_scale_lr == dict(base_batch_size=256, enable=True)
    assert cfg.train_cfg.max_epochs == 100
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 10)
    assert (cosine.type, cosine.begin, cosine.end) == ('CosineAnnealingLR',
                                                       10, 100)

    # builds (at test size) and classifies into the task's classes
    cfg.merge_from_dict(tiny_options())
    model = models().build(cfg.model)
    assert trainable(model) == {'backbone.prompt_embeddings',
                         'head.layers.head.weight', 'head.layers.head.bias'}
    assert model.backbone.prompt_embeddings.shape == (2, prompts, 48)
    with torch.no_grad():
        model.eval()
        assert model(torch.randn(2, 3, 32, 32),
                     mode='tensor').shape == (2, num_classes)


# method base -> substrings of the trainable backbone parameters (None:
# every one), or a predicate on their names
BASE_TRAINABLE = {
    'vpt-deep': ['prompt'], 'vpt-shallow': ['prompt'], 'linear': [],
    'bias': ['bias'], 'full': None, 'vpt-deep-mean': ['prompt'],
    # the last of the 2 tiny layers and the final norm ('ln1.', which is
    # also the name of every layer's first norm: hence a prefix)
    'partial-1': lambda name: name.startswith(('layers.1.', 'ln1.')),
    'mlp-3': [],
    # everything but the wrapped backbone: side network, projections, alpha
    'sidetune': lambda name: not name.startswith('backbone.'),
    'adapter-8': ['.adapter.'],
    'swin-vpt-deep': ['prompt'], 'mae-vpt-deep': ['prompt'],
    'mae-vpt-shallow': ['prompt'], 'mocov3-vpt-deep': ['prompt'],
    'mocov3-vpt-shallow': ['prompt'],
    'vpt-deep-add': ['prompt'], 'vpt-shallow-pixel': ['prompt'],
    # the new channels and their patch-embedding weights
    'vpt-shallow-concat': ['.prompt_channels.'],
    'vpt-deep-shared': ['prompt'], 'vpt-deep-prompt-pool': ['prompt'],
    'vpt-deep-global-pool': ['prompt'], 'vpt-deep-token-init': ['prompt'],
    'convnext-vpt-pad': ['prompt'], 'resnet50-vpt-pad': ['prompt'],
}
# the methods on timm's self-supervised ViT-B/16 (VPTTimmViT)
TIMM_METHODS = ['mae-vpt-deep', 'mae-vpt-shallow', 'mocov3-vpt-deep',
                'mocov3-vpt-shallow']


def tiny_options_for(config: str) -> Dict:
    """:func:`tiny_options` for the backbone type of ``config``."""
    kind = {'mmseg.VPTTimmViT': 'timm', 'mmseg.VPTSwinTransformer': 'swin',
            'mmseg.SidetuneBackbone': 'sidetune'}
    backbone = load(config).model.backbone
    options = {'mmseg.VPTResNet': TINY_RESNET,
               'mmseg.VPTConvNeXt': TINY_CONVNEXT}.get(backbone.type)
    if options is not None:
        return dict(options, **{'model.backbone.init_cfg': None})
    options = tiny_options(kind.get(backbone.type, 'vit'))
    if backbone.get('prompt_location') == 'add':  # one per patch: 4 x 4
        options['model.backbone.prompt_length'] = 16
    return options


# the ConvNet bases at test size (a 2-px border at 32 px)
TINY_RESNET = {
    'model.backbone.depth': 18, 'model.backbone.base_channels': 8,
    'model.backbone.stem_channels': 8, 'model.backbone.img_size': 32,
    'model.backbone.prompt_pad': 2, 'model.head.in_channels': 64}
TINY_CONVNEXT = {
    'model.backbone.arch': 'atto', 'model.backbone.img_size': 32,
    'model.backbone.prompt_pad': 2, 'model.head.in_channels': 320}


@pytest.mark.parametrize('method', list(METHODS))
def test_method_bases_build_with_the_right_trainable_set(method):
    m = METHODS[method]
    config = f'configs/vtab/_base_/{m.base}'
    cfg = load(config, tiny_options_for(config))
    model = models().build(cfg.model)
    keys = BASE_TRAINABLE[method]
    trains = keys if callable(keys) else (
        lambda name: keys is None or any(k in name for k in keys))
    for name, param in model.backbone.named_parameters():
        expected = param.numel() > 0 and trains(name)
        assert param.requires_grad == expected, (method, name)
    assert all(p.requires_grad for p in model.head.parameters())
    if method.endswith('vpt-shallow'):
        assert model.backbone.prompt_layers == [0]
    elif method in ('vpt-deep', 'mae-vpt-deep', 'mocov3-vpt-deep'):
        assert model.backbone.prompt_layers == [0, 1]  # both tiny blocks
    with torch.no_grad():
        model.eval()
        assert model(torch.randn(2, 3, 32, 32),
                     mode='tensor').shape == (2, 100)


def test_real_size_vit_b_and_swin_b_build():
    """The headline configs at their real size: ViT-B/16 with 200 prompts
    per layer (clevr_distance) and Swin-B, only prompts and head train."""
    cfg = load('configs/vtab/clevr_distance.py',
               {'model.backbone.init_cfg': None})
    model = models().build(cfg.model)
    tuned = {n: p.numel() for n, p in model.named_parameters()
             if p.requires_grad}
    assert tuned == {'backbone.prompt_embeddings': 12 * 200 * 768,
                     'head.layers.head.weight': 6 * 768,
                     'head.layers.head.bias': 6}
    total = sum(p.numel() for p in model.backbone.parameters())
    assert 85e6 < total - 12 * 200 * 768 < 87e6  # ViT-B/16: ~85.8M

    cfg = load('configs/vtab/_base_/swin-b_vpt-deep.py',
               {'model.backbone.init_cfg': None})
    model = models().build(cfg.model)
    shapes = [tuple(t.shape) for t in model.backbone.prompt_embeddings]
    assert shapes == [(2, 10, 128), (2, 10, 256), (18, 10, 512),
                      (2, 10, 1024)]
    assert model.head.fc.in_features == 1024


@pytest.mark.parametrize('method', TIMM_METHODS)
def test_real_size_mae_and_mocov3_bases_build(method):
    """The MAE / MoCo v3 bases at their real size (timm's ViT-B/16), with
    their init_cfg as written (a timm:// tag or a local file that need not
    exist: building does not read it): only prompts and head train."""
    import timm
    m = METHODS[method]
    cfg = load(f'configs/vtab/_base_/{m.base}')
    backbone = cfg.model.backbone
    assert backbone.type == 'mmseg.VPTTimmViT'
    assert timm.is_model(backbone.model_name)
    assert backbone.out_indices == -1 and backbone.out_norm
    assert backbone.output_cls_token
    assert backbone.timm_kwargs == dict(drop_path_rate=0.)
    assert backbone.prompt_layers == (
        'shallow' if method.endswith('shallow') else 'deep')
    # the inherited VPTVisionTransformer arguments are gone (_delete_)
    assert 'embed_dims' not in backbone and 'num_layers' not in backbone
    if method.startswith('mae'):
        assert backbone.model_name == 'vit_base_patch16_224.mae'
        assert backbone.init_cfg.checkpoint == \
            'timm://vit_base_patch16_224.mae'
    else:
        assert backbone.model_name == 'vit_base_patch16_224'
        assert backbone.init_cfg.checkpoint == \
            'pretrain/mocov3_vit-b-300ep.pth.tar'
    # ImageNet normalisation, the paper's protocol otherwise unchanged
    assert cfg.model.data_preprocessor.mean == [123.675, 116.28, 103.53]
    assert cfg.model.data_preprocessor.std == [58.395, 57.12, 57.375]
    assert cfg.model.head.type == 'VisionTransformerClsHead'
    assert cfg.model.head.in_channels == 768
    assert cfg.optim_wrapper.optimizer.type == 'SGD'

    model = models().build(cfg.model)
    layers = 1 if method.endswith('shallow') else 12
    tuned = {n: p.numel() for n, p in model.named_parameters()
             if p.requires_grad}
    assert tuned == {'backbone.prompt_embeddings': layers * 10 * 768,
                     'head.layers.head.weight': 100 * 768,
                     'head.layers.head.bias': 100}
    assert model.backbone.prompt_embeddings.shape == (layers, 10, 768)
    total = sum(p.numel() for p in model.backbone.parameters())
    assert 85e6 < total - layers * 10 * 768 < 87e6  # ViT-B/16: ~85.8M


@pytest.mark.parametrize('method', TIMM_METHODS)
@pytest.mark.parametrize('task', ['svhn', 'clevr_distance'])
def test_task_configs_render_for_the_timm_methods(tmp_path, method, task):
    m = METHODS[method]
    assert m.backbone in ('ViT-B/16 MAE', 'ViT-B/16 MoCo v3')
    text = render_task_config(task, method,
                              base_dir=str(REPO / 'configs/vtab/_base_'))
    assert f'# {m.backbone} {method}:' in text
    path = tmp_path / f'{task}.py'
    path.write_text(text)
    prompts = VIT_DEEP_PROMPT_LENGTH[task]  # the ViT-B table
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == 'mmseg.VPTTimmViT'
    assert cfg.model.backbone.prompt_length == prompts
    assert cfg.model.head.num_classes == TASKS[task][1]
    assert cfg.train_dataloader.batch_size == (64 if prompts >= 100 else 128)
    for loader in ('train', 'val', 'test'):
        assert cfg[f'{loader}_dataloader'].dataset.task == task
    cfg.merge_from_dict(tiny_options('timm'))
    model = models().build(cfg.model)
    assert model.backbone.prompt_embeddings.shape[1] == prompts
    with torch.no_grad():
        model.eval()
        assert model(torch.randn(1, 3, 32, 32),
                     mode='tensor').shape == (1, TASKS[task][1])


BASELINES = ['partial-1', 'mlp-3', 'sidetune', 'adapter-8']


@pytest.mark.parametrize('method', BASELINES)
def test_task_configs_render_for_the_paper_baselines(tmp_path, method):
    """A task file of each of the paper's other baselines (no prompts,
    batch 128) builds and classifies into the task's classes; the
    Sidetune, Partial-1 and Adapter rows have no paper group means here."""
    m = METHODS[method]
    assert m.prompts is None and m.batch_size('clevr_distance') == 128
    assert (m.backbone, m.paper_name) not in PAPER_GROUP_MEANS
    text = render_task_config('dtd', method,
                              base_dir=str(REPO / 'configs/vtab/_base_'))
    assert 'backbone=dict(prompt_length' not in text
    path = tmp_path / 'dtd.py'
    path.write_text(text)
    cfg = Config.fromfile(path)
    assert cfg.model.head.num_classes == 47
    assert cfg.train_dataloader.batch_size == 128
    cfg.merge_from_dict(tiny_options_for(str(path)))
    model = models().build(cfg.model)
    with torch.no_grad():
        model.eval()
        assert model(torch.randn(1, 3, 32, 32), mode='tensor').shape == (
            1, 47)


def test_report_has_no_paper_row_for_the_timm_methods(tmp_path):
    """The paper's MAE / MoCo v3 numbers are not in PAPER_GROUP_MEANS: the
    report shows our row only (and never the supervised ViT-B/16's)."""
    write_result(tmp_path, 'mae-vpt-deep', 'dtd', 0, 50.0)
    write_result(tmp_path, 'mocov3-vpt-shallow', 'dtd', 0, 60.0)
    summaries = summarize(load_results([str(tmp_path)]))
    assert [(s.backbone, s.method) for s in summaries] == [
        ('ViT-B/16 MAE', 'mae-vpt-deep'),
        ('ViT-B/16 MoCo v3', 'mocov3-vpt-shallow')]
    assert all(s.paper is None for s in summaries)
    md = format_report(summaries, 'markdown')
    assert '| paper |' not in md
    assert '| ViT-B/16 MAE | mae-vpt-deep | ours | 50.00 (1/7) |' in md


def test_amp_flag_builds_in_the_mmpretrain_scope():
    """tools/train.py --amp on a VTAB config: the CPU bfloat16 wrapper
    lives in mmseg's registry and is found from the mmpretrain scope."""
    from mmseg_vpt.engine import enable_amp
    cfg = load('configs/vtab/dtd.py', tiny_options())
    enable_amp(cfg)
    model = models().build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    expected = ('AmpOptimWrapper' if torch.cuda.is_available() else
                'BFloat16OptimWrapper')
    assert type(wrapper).__name__ == expected


# ---------------------------------------------------------------------------
# how the backbone's outputs reach mmpretrain's heads
# ---------------------------------------------------------------------------
@torch.no_grad()
def test_cls_head_reads_the_normed_class_token_as_it_is():
    cfg = load('configs/vtab/dtd.py', tiny_options())
    model = models().build(cfg.model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    (out, ) = model.extract_feat(x, stage='backbone')
    patch_map, cls_token = out  # mmseg's output_cls_token=True layout
    assert patch_map.shape == (2, 48, 4, 4) and cls_token.shape == (2, 48)
    # VisionTransformerClsHead takes the class token, no neck in between
    pre_logits = model.extract_feat(x, stage='pre_logits')
    assert torch.equal(pre_logits, cls_token)
    # ... after the final LayerNorm (weight 1, bias 0 at init)
    assert torch.allclose(cls_token.mean(-1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(cls_token.std(-1, unbiased=False), torch.ones(2),
                          atol=1e-3)


@torch.no_grad()
def test_mean_pool_and_swin_heads_average_image_tokens():
    cfg = load('configs/vtab/_base_/vit-b16_vpt-deep_mean-pool.py',
               tiny_options())
    model = models().build(cfg.model)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    (patch_map, _), = model.extract_feat(x, stage='backbone')
    assert torch.allclose(model.extract_feat(x, stage='pre_logits'),
                          patch_map.mean((2, 3)))

    cfg = load('configs/vtab/_base_/swin-b_vpt-deep.py',
               tiny_options('swin'))
    model = models().build(cfg.model)
    model.eval()
    feats = model.extract_feat(x, stage='backbone')
    assert isinstance(feats, list) and len(feats) == 1  # mmseg's Swin
    assert torch.allclose(model.extract_feat(x, stage='pre_logits'),
                          feats[0].mean((2, 3)))


def test_token_pooling_inputs_and_errors():
    maps = torch.randn(2, 8, 3, 3)
    cls = torch.randn(2, 8)
    assert torch.equal(TokenPooling('cls')(([maps, cls], ))[0], cls)
    assert torch.allclose(TokenPooling('mean')([maps])[0], maps.mean((2, 3)))
    assert torch.allclose(TokenPooling()(maps)[0], maps.mean((2, 3)))
    with pytest.raises(TypeError, match='output_cls_token=True'):
        TokenPooling('cls')((maps, ))
    with pytest.raises(ValueError, match='pool must be one of'):
        TokenPooling('max')


# ---------------------------------------------------------------------------
# the dataset and its errors
# ---------------------------------------------------------------------------
def build_dataset(root: Path, split: str = 'train800', **kwargs):
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    return DATASETS.build(dict(type='VTABDataset', task=TASK,
                               data_root=str(root), split=split, **kwargs))


def test_dataset_reads_the_generated_task(vtab_root):
    for split, n in (('train800', 120), ('val200', 36),
                     ('train800val200', 156), ('test', 60)):
        dataset = build_dataset(vtab_root, split, num_classes=3)
        assert len(dataset) == n
        labels = dataset.get_gt_labels()
        assert set(labels.tolist()) == {0, 1, 2}
    # a VTAB task name supplies its class count; NOAH folder names work
    (vtab_root / 'cifar').symlink_to(vtab_root / TASK)
    from mmpretrain.registry import DATASETS
    dataset = DATASETS.build(dict(type='VTABDataset', task='cifar100',
                                  data_root=str(vtab_root)))
    assert dataset.num_classes == 100 and len(dataset) == 120
    with pytest.raises(ValueError, match='give num_classes'):
        build_dataset(vtab_root)


@pytest.fixture
def bad_task(tmp_path) -> Path:
    task = tmp_path / TASK
    (task / 'images').mkdir(parents=True)
    for name in ('a.png', 'b.png'):
        (task / 'images' / name).write_bytes(b'')
    return task


@pytest.mark.parametrize('content, error, message', [
    ('images/a.png 0\nimages/missing.png 1\n', FileNotFoundError,
     r"train800.txt:2: image 'images/missing.png' not found"),
    ('images/a.png 0\n\nimages/b.png 3\n', VTABListError,
     r'train800.txt:3: label 3 is outside \[0, 3\)'),
    ('images/a.png -1\n', VTABListError,
     r'train800.txt:1: label -1 is outside'),
    ('images/a.png 0\nimages/b.png cat\n', VTABListError,
     r"train800.txt:2: label 'cat' is not an integer"),
    ('images/a.png 0\nimages/b.png\n', VTABListError,
     r'train800.txt:2: expected "relative/image/path label"'),
    ('\n\n', VTABListError, r'train800.txt: the list file has no entries'),
    ('', VTABListError, r'train800.txt: the list file has no entries'),
])
def test_bad_list_files_name_file_and_line(bad_task, content, error,
                                           message):
    (bad_task / 'train800.txt').write_text(content)
    with pytest.raises(error, match=message) as err:
        build_dataset(bad_task.parent, num_classes=3)
    assert str(bad_task / 'train800.txt') in str(err.value)


def test_missing_list_file_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match='test.txt') as err:
        build_dataset(tmp_path, 'test', num_classes=3)
    assert 'train800,val200,train800val200,test' in str(err.value)


def test_read_vtab_list_allows_spaces_in_paths(tmp_path):
    (tmp_path / 'my images').mkdir()
    (tmp_path / 'my images' / 'x.png').write_bytes(b'')
    (tmp_path / 'l.txt').write_text('my images/x.png 1\n')
    assert read_vtab_list(str(tmp_path / 'l.txt'), str(tmp_path), 2) == [
        (str(tmp_path / 'my images/x.png'), 1)]


# ---------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------
def test_generator_is_deterministic_idempotent_and_careful(tmp_path):
    a = make_synthetic_vtab(tmp_path / 'a', num_classes=4, num_train=8,
                            num_val=4, num_test=4, img_size=24, seed=3)
    b = make_synthetic_vtab(tmp_path / 'b', num_classes=4, num_train=8,
                            num_val=4, num_test=4, img_size=24, seed=3)
    for name in ('train800.txt', 'val200.txt', 'test.txt',
                 'images/train/000005.png'):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    lines = (a / 'train800val200.txt').read_text().splitlines()
    assert lines == ((a / 'train800.txt').read_text().splitlines() +
                     (a / 'val200.txt').read_text().splitlines())
    assert sorted(int(ln.split()[1]) for ln in lines[:8]) == [0, 0, 1, 1, 2,
                                                              2, 3, 3]
    mtime = (a / 'train800.txt').stat().st_mtime_ns
    make_synthetic_vtab(tmp_path / 'a', num_classes=4, num_train=8,
                        num_val=4, num_test=4, img_size=24, seed=3)
    assert (a / 'train800.txt').stat().st_mtime_ns == mtime  # no rewrite
    foreign = tmp_path / 'c' / TASK
    foreign.mkdir(parents=True)
    (foreign / 'mine.txt').write_text('x')
    with pytest.raises(FileExistsError, match='--overwrite'):
        make_synthetic_vtab(tmp_path / 'c')
    with pytest.raises(ValueError, match='num_classes'):
        make_synthetic_vtab(tmp_path / 'd', num_classes=len(SHAPES) + 1)

    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'make_synthetic_vtab',
        REPO / 'tools/dataset_converters/make_synthetic_vtab.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([str(tmp_path / 'e'), '--num-classes', '2', '--num-train', '4',
          '--num-val', '2', '--num-test', '2', '--cue', 'shape'])
    assert len((tmp_path / 'e' / TASK / 'test.txt').read_text()
               .splitlines()) == 2


# ---------------------------------------------------------------------------
# prompts alone learn the generated task
# ---------------------------------------------------------------------------
def _accuracy(model, samples) -> float:
    model.eval()
    with torch.no_grad():
        preds = model.val_step(pseudo_collate(samples))
    return sum(int(p.pred_label.item() == p.gt_label.item())
               for p in preds) / len(preds)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_only_prompts_trainable_learns_the_generated_task(vtab_root, seed):
    """Backbone (random init) and head are frozen; only the VPT-deep prompts
    train, through mmpretrain's ImageClassifier, loss and the config's SGD.
    Test accuracy goes from near chance (1/3) to well above it, and nothing
    but the prompts changed, so the prompts did the learning."""
    torch.manual_seed(seed)
    opts = dict(tiny_options(), **data_options(vtab_root))
    opts.update({'model.backbone.embed_dims': 64,
                 'model.backbone.num_layers': 4,
                 'model.backbone.num_heads': 4,
                 'model.backbone.prompt_length': 8,
                 'model.head.in_channels': 64})
    cfg = load('configs/vtab/dtd.py', opts)
    model = models().build(cfg.model)
    model.init_weights()
    # VisionTransformerClsHead starts at zero; a frozen zero head would pass
    # no gradient to the prompts, so fix a random one
    torch.nn.init.normal_(model.head.layers.head.weight, std=0.5)
    for p in model.head.parameters():
        p.requires_grad_(False)
    assert trainable(model) == {'backbone.prompt_embeddings'}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    from mmpretrain.registry import DATASETS
    train = DATASETS.build(cfg.train_dataloader.dataset)  # train800val200
    test = DATASETS.build(cfg.test_dataloader.dataset)
    train_samples = [train[i] for i in range(len(train))]
    test_samples = [test[i] for i in range(len(test))]
    acc_before = _accuracy(model, test_samples)

    optim = build_optim_wrapper(
        model, dict(type='OptimWrapper', optimizer=dict(
            type='SGD', lr=0.5, momentum=0.9, weight_decay=0.0)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(150):
        idx = torch.randint(len(train_samples), (32, ), generator=gen)
        model.train_step(pseudo_collate([train_samples[i] for i in idx]),
                         optim)
    acc_after = _accuracy(model, test_samples)

    print(f'prompts only, seed {seed}: test top-1 {acc_before:.3f} before, '
          f'{acc_after:.3f} after (chance 0.333)')
    assert acc_after >= 0.75, (acc_before, acc_after)
    assert acc_after >= acc_before + 0.25, (acc_before, acc_after)
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == (name == 'backbone.prompt_embeddings'), name


# ---------------------------------------------------------------------------
# selection and report
# ---------------------------------------------------------------------------
def test_selection_prefers_val_top1_then_smaller_lr_and_wd():
    grid = [dict(lr=5.0, wd=0.0, top1=80.0), dict(lr=0.5, wd=0.01,
                                                   top1=80.0),
            dict(lr=0.5, wd=0.0, top1=80.0), dict(lr=50.0, wd=0.0,
                                                   top1=79.9)]
    assert select_best(grid) == dict(lr=0.5, wd=0.0, top1=80.0)


def test_sweep_without_folders_or_package_data_names_the_options(
        monkeypatch, tmp_path):
    """Without mmseg_vpt/.mim (a checkout) the library sweep needs its
    tools and configs folders; each error names the option to pass."""
    monkeypatch.setattr(folders, 'PACKAGE_DATA', '.absent')
    args = dict(work_dir=str(tmp_path), tasks=['dtd'], lrs=[1.0],
                wds=[0.0], seeds=[0], dry_run=True)
    tools, configs = str(REPO / 'tools'), str(REPO / 'configs')
    for given, error in [
            ({}, r'pass tools_dir \(--tools-dir\)'),
            (dict(tools_dir=tools), r'pass configs_dir \(--configs-dir\)'),
            (dict(tools_dir=configs, configs_dir=configs),
             'folder that holds train.py and test.py'),
            (dict(tools_dir=tools, configs_dir=str(REPO)),
             'folder that holds vtab/_base_/'),
            (dict(tools_dir=tools, configs_dir=str(tmp_path / 'none')),
             r'configs_dir \(--configs-dir\): no such folder')]:
        with pytest.raises(FileNotFoundError, match=error):
            run_sweep(SweepSettings(**given, **args), log=print)
    log: List[str] = []
    assert run_sweep(SweepSettings(tools_dir=tools, configs_dir=configs,
                                   **args), log=log.append) == 0
    config = tmp_path / 'vpt-deep' / 'dtd' / 'config.py'
    assert f'  {PYTHON} {REPO}/tools/train.py {config} ' in '\n'.join(log)
    assert config.read_text() == ('# dtd: the checked-in config\n'
                                  f"_base_ = ['{REPO}/configs/vtab/dtd.py']\n")


def test_sweep_tool_runs_its_own_folders_unless_given_others(tmp_path,
                                                              capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'vtab_sweep', REPO / 'tools/vtab_sweep.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = ['--tasks', 'dtd', '--lrs', '1', '--wds', '0', '--seeds', '0',
            '--gpus', '0', '--dry-run', '--work-dir', str(tmp_path)]
    assert tool.main(args) == 0
    assert f' {REPO}/tools/test.py ' in capsys.readouterr().out
    with pytest.raises(SystemExit, match=f'error: {tmp_path}/train.py not '
                       r'found: tools_dir \(--tools-dir\) must be'):
        tool.main(args + ['--tools-dir', str(tmp_path)])
    with pytest.raises(SystemExit, match=f'error: {tmp_path}/vtab/_base_ '
                       'not found'):
        tool.main(['--method', 'linear', '--write-configs',
                   str(tmp_path / 'out'), '--configs-dir', str(tmp_path)])


def write_result(root: Path, method: str, task: str, seed: int,
                 top1: float, stage: str = 'final') -> None:
    d = root / method / task / stage / f'seed{seed}'
    d.mkdir(parents=True)
    (d / 'result.json').write_text(json.dumps(dict(
        stage=stage, method=method, task=task, seed=seed, top1=top1,
        lr=1.0, wd=0.0)))


def test_report_group_means_and_paper_rows(tmp_path):
    for task in tasks_in_group('Specialized'):
        write_result(tmp_path, 'vpt-deep', task, 0, 80.0)
        write_result(tmp_path, 'vpt-deep', task, 1, 90.0)
    write_result(tmp_path, 'vpt-deep', 'cifar100', 0, 60.0)
    write_result(tmp_path, 'swin-vpt-deep', 'dtd', 0, 70.0)
    write_result(tmp_path, 'vpt-deep', 'dtd', 0, 1.0, stage='grid')
    summaries = summarize(load_results([str(tmp_path)]))
    assert [(s.backbone, s.method) for s in summaries] == [
        ('Swin-B', 'swin-vpt-deep'), ('ViT-B/16', 'vpt-deep')]
    vit = summaries[1]
    mean, std, n = vit.tasks['eurosat']
    assert (mean, n) == (85.0, 2) and std == pytest.approx(7.0711, 1e-4)
    assert vit.group_mean('Specialized') == (85.0, 4, 4)
    assert vit.group_mean('Natural') == (60.0, 1, 7)  # grid result ignored

    md = format_report(summaries, 'markdown')
    assert '| ViT-B/16 | vpt-deep | paper | 78.48 | 82.43 | 54.98 | 19/19 |' \
        in md
    assert '| ViT-B/16 | vpt-deep | ours | 60.00 (1/7) | 85.00 |  | 5/19 |' \
        in md
    assert '| Swin-B | swin-vpt-deep | paper | 76.78 | 84.53 | 53.35 |' in md
    assert '85.00 ± 7.07 (n=2)' in md
    csv = report([str(tmp_path)], 'csv')
    assert 'groups,ViT-B/16,vpt-deep,paper,78.48,82.43,54.98,19/19' in csv
    assert 'groups,ViT-B/16,vpt-deep,ours,60.00 (1/7),85.00,,5/19' in csv
    with pytest.raises(FileNotFoundError, match='no final VTAB results'):
        report([str(tmp_path / 'vpt-deep' / 'dtd' / 'grid')])


# ---------------------------------------------------------------------------
# the tools, as users run them (subprocesses)
# ---------------------------------------------------------------------------
def short_run(weights: Path, epochs: int = 3, backbone: str = 'vit') -> Dict:
    """A few epochs from the tiny base file ``weights`` (``backbone``: the
    :func:`tiny_options` kind; a Sidetune wrapper forwards the file to the
    ViT it wraps)."""
    opts = tiny_options(backbone)
    opts.pop('model.backbone.init_cfg')
    opts.update({
        'model.backbone.init_cfg.checkpoint': str(weights),
        'train_dataloader.batch_size': 16,
        'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
        'param_scheduler.0.end': 1, 'param_scheduler.1.begin': 1,
        'param_scheduler.1.end': epochs,
        'param_scheduler.1.T_max': epochs - 1,
        'default_hooks.logger.interval': 2,
    })
    return opts


@pytest.mark.slow
def test_train_then_test_a_vtab_config_prints_top1(vtab_root,
                                                   tiny_base_weights,
                                                   tmp_path):
    opts = cli(dict(short_run(tiny_base_weights), **data_options(vtab_root)))
    work = tmp_path / 'run'
    log = run(train_cmd('configs/vtab/dtd.py', work, '--cfg-options',
                        *opts), cwd=tmp_path)
    assert 'Parameters:' in log and 'prompts: 960' in log
    assert 'Scaling the original LR by 0.0625' in log  # batch 16 / 256
    assert 'Tuned-only checkpoints' in log
    (val_top1, ) = metric_values(log, 'accuracy/top1')
    ckpt = Path((work / 'last_checkpoint').read_text().strip())
    assert ckpt.name == 'epoch_3.pth'
    state = torch.load(ckpt, map_location='cpu',
                       weights_only=False)['state_dict']
    # prompts and head only; the frozen backbone comes from the base file
    assert set(state) == {'backbone.prompt_embeddings',
                          'head.layers.head.weight', 'head.layers.head.bias'}

    test_log = run(eval_cmd('configs/vtab/dtd.py', ckpt, work / 'test',
                            '--cfg-options', *opts), cwd=tmp_path)
    assert metric_values(test_log, 'accuracy/top1') == [val_top1], (
        'tools/test.py must reproduce the evaluation at the end of training')
    print(f'e2e generated 3-class task: test top-1 {val_top1:.2f}')


@pytest.mark.slow
def test_token_init_method_sets_prompts_in_the_mmpretrain_runner(
        vtab_root, tiny_base_weights, tmp_path):
    """The token-init VTAB method through tools/train.py: the hook runs in
    mmpretrain's runner (ClsDataPreprocessor batches) and the trained
    prompts are saved as usual."""
    config = tmp_path / 'dtd_token_init.py'
    config.write_text(render_task_config(
        'dtd', 'vpt-deep-token-init',
        base_dir=str(REPO / 'configs/vtab/_base_')))
    opts = cli(dict(short_run(tiny_base_weights, epochs=2),
                    **data_options(vtab_root)))
    work = tmp_path / 'run'
    log = run(train_cmd(str(config), work, '--cfg-options', *opts),
              cwd=tmp_path)
    # the tiny ViT has 2 layers; batch 16
    assert 'PromptTokenInitHook: 2 prompt sets initialised from the image ' \
        'tokens of the first training batch (16 images per rank; kmeans, ' \
        'seed 0)' in log
    assert len(metric_values(log, 'accuracy/top1')) == 1
    ckpt = Path((work / 'last_checkpoint').read_text().strip())
    state = torch.load(ckpt, map_location='cpu',
                       weights_only=False)['state_dict']
    assert 'backbone.prompt_embeddings' in state


@pytest.mark.slow
def test_sweep_runs_a_2x1_grid_then_final_runs_and_resumes(
        vtab_root, tiny_base_weights, tmp_path):
    opts = cli(short_run(tiny_base_weights))
    opts += no_workers()
    work = tmp_path / 'sweep'
    cmd = [PYTHON, REPO / 'tools/vtab_sweep.py', '--tasks', TASK,
           '--num-classes', '3', '--data-root', vtab_root, '--lrs', '5',
           '0.5', '--wds', '0', '--seeds', '0', '--gpus', '0', '--work-dir',
           work, '--cfg-options', *opts]
    log = run(cmd, cwd=tmp_path)
    assert '2 jobs, 0 already done, 2 to run' in log
    task_dir = work / 'vpt-deep' / TASK
    grid = {d.name: json.loads((d / 'result.json').read_text())
            for d in (task_dir / 'grid').iterdir()}
    assert set(grid) == {'lr5_wd0', 'lr0.5_wd0'}
    best = select_best(list(grid.values()))
    selected = json.loads((task_dir / 'selected.json').read_text())
    assert (selected['lr'], selected['wd']) == (best['lr'], best['wd'])
    final = json.loads((task_dir / 'final/seed0/result.json').read_text())
    assert final['split'] == 'test' and final['lr'] == best['lr']
    table = (work / 'vpt-deep' / 'results.md').read_text()
    assert f'{final["top1"]:.2f} ± 0.00 (n=1)' in table
    assert '| ViT-B/16 | vpt-deep | paper | 78.48 | 82.43 | 54.98 |' in table
    assert (work / 'vpt-deep' / 'results.csv').is_file()

    # a second run finds every job done
    log = run(cmd, cwd=tmp_path)
    assert '2 jobs, 2 already done, 0 to run' in log
    assert '1 jobs, 1 already done, 0 to run' in log
    assert 'start ' not in log

    # and the report tool reads the same results
    out = run([PYTHON, REPO / 'tools/vtab_report.py', work, '--format',
               'csv'], cwd=tmp_path)
    assert f'tasks,ViT-B/16,vpt-deep,{final["top1"]:.2f} ± 0.00 (n=1)' in out


@pytest.mark.slow
def test_train_stops_on_a_bad_list_with_file_and_line(vtab_root, tmp_path):
    bad = tmp_path / 'data' / TASK
    bad.mkdir(parents=True)
    (bad / 'images').symlink_to(vtab_root / TASK / 'images')
    lines = (vtab_root / TASK / 'train800val200.txt').read_text()
    (bad / 'train800val200.txt').write_text(lines + 'images/gone.png 1\n')
    opts = cli(dict(tiny_options(), **data_options(tmp_path / 'data')))
    message = run_fails(train_cmd('configs/vtab/dtd.py', tmp_path / 'w',
                                  '--cfg-options', *opts), cwd=tmp_path)
    line = len(lines.splitlines()) + 1
    assert (f"train800val200.txt:{line}: image 'images/gone.png' not found"
            in message)
