"""FGVC classification through mmpretrain: the dataset table, the five
release layouts read back from generated copies, the paper's train / val
split and the json split files, the error messages, the configs and their
trainable sets, the report beside the paper, and (slow) the tools:
tools/train.py + tools/test.py, tools/fgvc_sweep.py, tools/fgvc_report.py.

Everything runs on CPU with generated images in the real folder layouts
and tiny backbones (the configs' ViT-B/16 is only built, never trained)."""
import json
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import scipy.io
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_vpt  # noqa: F401
import mmseg_vpt.fgvc.dataset  # noqa: F401  (registers FGVCDataset)
from mmseg_vpt.checkpoint import TUNED_META_KEY, tensor_digest
from mmseg_vpt.datasets.synthetic_fgvc import (NABIRDS_CLASS_IDS,
                                               make_synthetic_fgvc,
                                               read_manifest)
from mmseg_vpt.fgvc.benchmark import FGVC, FGVC_TABLE
from mmseg_vpt.fgvc.layouts import (FGVCAnnotationError, load_split,
                                    read_official, split_train_val)
from mmseg_vpt.fgvc.tasks import (METHODS, PAPER_ACC, TASKS,
                                  VIT_DEEP_PROMPT_LENGTH, render_task_config)
from mmseg_vpt.vtab.report import format_report, load_results, summarize
from mmseg_vpt.vtab.sweep import SweepSettings

from .tools_helpers import (PYTHON, REPO, eval_cmd, metric_values, no_workers,
                            run, train_cmd)
from .vpt_helpers import trainable

NAMES = list(TASKS)
CONFIGS = [f'configs/fgvc/{n}.py' for n in NAMES]
# the generated datasets: 3 classes, 30 official training images (Flowers:
# 30 train + 9 val), 12 test images
K, N_TRAIN, N_VAL, N_TEST = 3, 30, 9, 12


def build_dataset(root: Path, name: str, split: str = 'train', **kwargs):
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    return DATASETS.build(dict(type='FGVCDataset', name=name, split=split,
                               data_root=str(root), **kwargs))


@pytest.fixture(scope='module')
def fgvc_root(tmp_path_factory) -> Path:
    """The five datasets, generated once in their release layouts."""
    root = tmp_path_factory.mktemp('fgvc')
    make_synthetic_fgvc(root, num_classes=K, num_train=N_TRAIN,
                        num_val=N_VAL, num_test=N_TEST, show_progress=False)
    return root


@pytest.fixture
def copy_of(fgvc_root, tmp_path):
    """A private copy of one generated dataset, to break."""
    def make(name: str) -> Path:
        folder = TASKS[name].folder
        shutil.copytree(fgvc_root / folder, tmp_path / folder)
        return tmp_path / folder
    return make


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------
def test_table_has_the_five_datasets_with_the_paper_split_sizes():
    assert NAMES == ['cub', 'nabirds', 'oxford_flowers', 'stanford_dogs',
                     'stanford_cars']
    assert [t.num_classes for t in TASKS.values()] == [200, 555, 102, 120,
                                                       196]
    sizes = {n: (t.train, t.val, t.test) for n, t in TASKS.items()}
    assert sizes == {'cub': (5394, 600, 5794),
                     'nabirds': (21536, 2393, 24633),
                     'oxford_flowers': (1020, 1020, 6149),
                     'stanford_dogs': (10800, 1200, 8580),
                     'stanford_cars': (7329, 815, 8041)}
    # train + val is the official training set; val = n - floor(0.9 n)
    official = {'cub': 5994, 'nabirds': 23929, 'stanford_dogs': 12000,
                'stanford_cars': 8144}
    for name, n in official.items():
        t = TASKS[name]
        assert t.train + t.val == n and t.val == n - (9 * n) // 10
    assert [n for n, t in TASKS.items() if t.official_val] == [
        'oxford_flowers']
    assert VIT_DEEP_PROMPT_LENGTH == {n: 10 for n in NAMES}  # our default
    assert PAPER_ACC[('ViT-B/16', 'vpt-deep')] == (88.5, 84.2, 99.0, 90.2,
                                                   83.6, 89.1)
    assert set(PAPER_ACC) == {('ViT-B/16', m)
                              for m in ('full', 'adapter', 'vpt-deep')}


def _fake_training_set(counts: List[int]):
    return [(f'c{c}/img{i}.jpg', c, f'line {c}-{i}')
            for c, n in enumerate(counts) for i in range(n)]


def test_split_has_the_paper_sizes_for_the_official_training_sets():
    rng = np.random.default_rng(0)
    for name, n in (('cub', 5994), ('nabirds', 23929),
                    ('stanford_dogs', 12000), ('stanford_cars', 8144)):
        k = TASKS[name].num_classes
        counts = np.bincount(rng.integers(0, k, n), minlength=k)
        train, val = split_train_val(_fake_training_set(counts.tolist()))
        assert (len(train), len(val)) == (TASKS[name].train,
                                          TASKS[name].val), name
        # stratified: every class keeps its share within one image
        per_class = np.bincount([y for _, y, _ in val], minlength=k)
        assert np.all(np.abs(per_class - counts * len(val) / n) < 1), name


def test_split_is_deterministic_order_free_and_seeded():
    samples = _fake_training_set([20, 7, 13])
    train, val = split_train_val(samples)
    assert (len(train), len(val)) == (36, 4)
    assert sorted(np.bincount([y for _, y, _ in val]).tolist()) == [1, 1, 2]
    assert split_train_val(samples) == (train, val)
    # the file names decide, not the list order; both lists keep the order
    again = split_train_val(samples[::-1])
    assert again == (train[::-1], val[::-1])
    other = split_train_val(samples, seed=1)[1]
    assert {s[0] for s in other} != {s[0] for s in val}
    assert set(train).isdisjoint(val) and len(set(train) | set(val)) == 40


# ---------------------------------------------------------------------------
# the layouts, read back from generated copies
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('name', NAMES)
def test_layout_reads_back_exactly_the_generated_labels(fgvc_root, name):
    folder = fgvc_root / TASKS[name].folder
    manifest = read_manifest(folder)
    official = read_official(name, str(folder))
    expected = {'train': N_TRAIN, 'test': N_TEST}
    if name == 'oxford_flowers':
        expected['val'] = N_VAL
    assert {s: len(v) for s, v in official.items()} == expected
    for split, samples in official.items():
        assert [(p, y) for p, y, _ in samples] == manifest['splits'][split]
        assert sorted(set(y for _, y, _ in samples)) == [0, 1, 2]
    # the paper's splits: 10% of the training set is val (Flowers: official)
    sizes = {s: len(load_split(name, s, str(folder))[0])
             for s in ('train', 'val', 'trainval', 'test')}
    if name == 'oxford_flowers':
        assert sizes == dict(train=30, val=9, trainval=39, test=12)
    else:
        assert sizes == dict(train=27, val=3, trainval=30, test=12)
        train, val = (load_split(name, s, str(folder))[0]
                      for s in ('train', 'val'))
        assert sorted(train + val) == sorted(official['train'])
        assert sorted(y for _, y, _ in val) == [0, 1, 2]  # one per class


def test_nabirds_class_ids_map_to_labels_in_sorted_order(fgvc_root):
    folder = fgvc_root / 'nabirds'
    ids = NABIRDS_CLASS_IDS[:K]
    assert ids == (817, 295, 1003)  # not sorted
    for path, label, _ in read_official('nabirds', str(folder))['train']:
        class_id = int(path.split('/')[1])  # images/<class id>/<uuid>.jpg
        assert label == sorted(ids).index(class_id)
    first = (folder / 'images.txt').read_text().split()[0]
    assert len(first) == 36 and first.count('-') == 4  # a UUID


@pytest.mark.parametrize('name', NAMES)
def test_dataset_builds_through_the_mmpretrain_registry(fgvc_root, name):
    for split, n in (('train', 27), ('val', 3), ('trainval', 30),
                     ('test', 12)):
        if name == 'oxford_flowers':
            n = dict(train=30, val=9, trainval=39, test=12)[split]
        dataset = build_dataset(fgvc_root, name, split)
        assert len(dataset) == n
        assert dataset.num_classes == TASKS[name].num_classes
        assert len(dataset.metainfo['classes']) == TASKS[name].num_classes
        assert set(dataset.get_gt_labels().tolist()) <= {0, 1, 2}
    assert 'release files' in repr(dataset)
    loaded = build_dataset(fgvc_root, name, 'test',
                           pipeline=[dict(type='LoadImageFromFile')])
    assert loaded[0]['img'].shape == (32, 32, 3)


def test_json_split_files_define_every_split(copy_of):
    folder = copy_of('cub')
    official = read_official('cub', str(folder))
    # the public release's format: path relative to images/ -> class id
    # (here 1-based, as CUB's own ids)
    def dump(samples):
        return {p[len('images/'):]: y + 1 for p, y, _ in samples}
    train, test = official['train'], official['test']
    (folder / 'train.json').write_text(json.dumps(dump(train[:20])))
    (folder / 'val.json').write_text(json.dumps(dump(train[20:])))
    (folder / 'test.json').write_text(json.dumps(dump(test)))
    root = folder.parent
    sizes = {s: len(build_dataset(root, 'cub', s))
             for s in ('train', 'val', 'trainval', 'test')}
    assert sizes == dict(train=20, val=10, trainval=30, test=12)
    dataset = build_dataset(root, 'cub', 'val')
    assert dataset.get_gt_labels().tolist() == [y for _, y, _ in train[20:]]
    assert 'val.json' in repr(dataset)

    # split_dir: the files may live elsewhere, and must then be complete
    other = root / 'splits'
    other.mkdir()
    (other / 'test.json').write_text(json.dumps(dump(test[:5])))
    assert len(build_dataset(root, 'cub', 'test',
                             split_dir=str(other))) == 5
    with pytest.raises(FileNotFoundError,
                       match=r'splits/train.json \(split .trainval.'):
        build_dataset(root, 'cub', 'trainval', split_dir=str(other))


# ---------------------------------------------------------------------------
# bad input: errors that name the file and the line or key
# ---------------------------------------------------------------------------
def _edit_line(path: Path, lineno: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = new
    path.write_text('\n'.join(lines) + '\n')


def test_unknown_dataset_name_lists_the_five(fgvc_root):
    with pytest.raises(ValueError, match="unknown dataset name 'cars'.*"
                       "'stanford_cars'"):
        build_dataset(fgvc_root, 'cars')


@pytest.mark.parametrize('name, missing, key', [
    ('cub', 'images.txt', 'image_class_labels.txt'),
    ('nabirds', 'train_test_split.txt', 'images/<folder>'),
    ('oxford_flowers', 'setid.mat', 'imagelabels.mat'),
    ('stanford_dogs', 'test_list.mat', 'Images/<synset-breed>'),
    ('stanford_cars', 'cars_test_annos_withlabels.mat', 'devkit/'),
])
def test_missing_annotation_file_names_the_expected_layout(
        copy_of, name, missing, key):
    folder = copy_of(name)
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError) as err:
        build_dataset(folder.parent, name, 'test')
    message = str(err.value)
    assert str(folder / missing) in message
    assert f'<data_root>/{TASKS[name].folder}/' in message and key in message


@pytest.mark.parametrize('file, line, new, message', [
    ('image_class_labels.txt', 4, '4 201',
     r'image_class_labels.txt:4: class id 201 is outside \[1, 200\]'),
    ('image_class_labels.txt', 2, '2 bird',
     r"image_class_labels.txt:2: class id 'bird' is not an integer"),
    ('images.txt', 3, '3',
     r'images.txt:3: expected "<image id> <relative path>", got \'3\''),
    ('train_test_split.txt', 5, '5 2',
     r'train_test_split.txt:5: expected 1 \(train\) or 0 \(test\)'),
    ('train_test_split.txt', 6, '999 1',
     r"train_test_split.txt:6: image id '999' is not in .*images.txt"),
])
def test_bad_cub_tables_name_file_and_line(copy_of, file, line, new,
                                           message):
    folder = copy_of('cub')
    _edit_line(folder / file, line, new)
    with pytest.raises(FGVCAnnotationError, match=message) as err:
        build_dataset(folder.parent, 'cub', 'trainval')
    assert str(folder / file) in str(err.value)


def test_missing_image_names_its_annotation_line(copy_of):
    folder = copy_of('cub')
    rel = (folder / 'images.txt').read_text().splitlines()[6].split()[1]
    (folder / 'images' / rel).unlink()
    with pytest.raises(FileNotFoundError) as err:
        for split in ('trainval', 'test'):  # wherever the image is
            build_dataset(folder.parent, 'cub', split)
    assert f"images.txt:7: image 'images/{rel}' not found" in str(err.value)


def test_nabirds_with_more_class_ids_than_classes_stops(copy_of):
    folder = copy_of('nabirds')
    with pytest.raises(FGVCAnnotationError,
                       match=r'image_class_labels.txt: 3 distinct class '
                       r'ids, expected at most 2 \(num_classes\)'):
        build_dataset(folder.parent, 'nabirds', num_classes=2)


def test_bad_mat_files_name_file_key_and_entry(copy_of):
    flowers = copy_of('oxford_flowers')
    labels = scipy.io.loadmat(flowers / 'imagelabels.mat')['labels']
    bad = labels.copy()
    bad[0, 4] = 103
    scipy.io.savemat(flowers / 'imagelabels.mat', {'labels': bad})
    with pytest.raises(FGVCAnnotationError,
                       match=r'imagelabels.mat: labels\[4\] '
                       r'\(jpg/image_00005.jpg\) is 103, outside \[1, 102\]'):
        build_dataset(flowers.parent, 'oxford_flowers')
    scipy.io.savemat(flowers / 'imagelabels.mat', {'labels': labels})
    setid = scipy.io.loadmat(flowers / 'setid.mat')
    scipy.io.savemat(flowers / 'setid.mat', {'trnid': setid['trnid'],
                                             'tstid': setid['tstid']})
    with pytest.raises(FGVCAnnotationError,
                       match=r"setid.mat: no variable 'valid' \(found "
                       r"\['trnid', 'tstid'\]\)"):
        build_dataset(flowers.parent, 'oxford_flowers', 'test')

    dogs = copy_of('stanford_dogs')
    data = scipy.io.loadmat(dogs / 'test_list.mat')
    data['labels'][2, 0] = 0
    scipy.io.savemat(dogs / 'test_list.mat', {k: v for k, v in data.items()
                                              if not k.startswith('__')})
    with pytest.raises(FGVCAnnotationError,
                       match=r'test_list.mat: labels\[2\] \(n0208.*\.jpg\) '
                       r'is 0, outside \[1, 120\]'):
        build_dataset(dogs.parent, 'stanford_dogs', 'test')

    cars = copy_of('stanford_cars')
    # the devkit's test annotations have no labels
    shutil.copy(cars / 'devkit' / 'cars_test_annos.mat',
                cars / 'cars_test_annos_withlabels.mat')
    with pytest.raises(FGVCAnnotationError,
                       match=r"annotations have no field 'class'.*"
                       r'use cars_test_annos_withlabels.mat'):
        build_dataset(cars.parent, 'stanford_cars', 'test')


def test_bad_json_split_files_name_file_and_key(copy_of):
    folder = copy_of('cub')
    (folder / 'train.json').write_text('{"a.jpg": 1, "b.jpg": "two"}')
    with pytest.raises(FGVCAnnotationError,
                       match=r"train.json: key 'b.jpg': class id 'two' is "
                       'not an integer'):
        build_dataset(folder.parent, 'cub', 'train')
    (folder / 'train.json').write_text('{"a.jpg": 1')
    with pytest.raises(FGVCAnnotationError, match='train.json: not valid'):
        build_dataset(folder.parent, 'cub', 'train')
    (folder / 'train.json').write_text('{"001.Synthetic_Disc/gone.jpg": 1}')
    with pytest.raises(FileNotFoundError,
                       match=r"train.json: key '001.Synthetic_Disc/gone.jpg'"
                       r": image 'images/001.Synthetic_Disc/gone.jpg' not "
                       'found'):
        build_dataset(folder.parent, 'cub', 'train')


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------
def tiny_options(img: int = 32, backbone: str = 'vit') -> Dict:
    """Overrides for a tiny ViT at ``img`` px (random init); ``'sidetune'``:
    that ViT inside ``SidetuneBackbone``, with test_vtab's tiny side
    network."""
    opts = {
        'model.backbone.img_size': (img, img),
        'model.backbone.patch_size': 8,
        'model.backbone.embed_dims': 48,
        'model.backbone.num_layers': 2,
        'model.backbone.num_heads': 3,
        'model.head.in_channels': 48,
        'model.backbone.init_cfg': None,
        'train_dataloader.dataset.pipeline.1.scale': img,
    }
    for loader in ('val', 'test'):
        opts[f'{loader}_dataloader.dataset.pipeline.1.scale'] = img + 4
        opts[f'{loader}_dataloader.dataset.pipeline.2.crop_size'] = img
    if backbone == 'sidetune':
        from .test_vtab import tiny_options as vtab_tiny_options
        # init_cfg stays on the wrapper, which forwards it to the ViT
        opts = {k if k == 'model.backbone.init_cfg' else k.replace(
            'model.backbone.', 'model.backbone.backbone.'): v
            for k, v in opts.items()}
        opts.update({k: v for k, v in vtab_tiny_options('sidetune').items()
                     if k.startswith('model.backbone.side')})
    return opts


def load(config: str, options: Dict = None) -> Config:
    cfg = Config.fromfile(REPO / config)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def models():
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS


@pytest.mark.parametrize('name', NAMES)
def test_dataset_config_is_the_rendered_few_lines(name):
    text = (REPO / f'configs/fgvc/{name}.py').read_text()
    assert text == render_task_config(name)
    assert len(text.splitlines()) <= 10


@pytest.mark.parametrize('config', CONFIGS)
def test_config_follows_the_fgvc_protocol_and_builds(config):
    name = Path(config).stem
    cfg = load(config)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports.imports == ['mmseg_vpt',
                                          'mmseg_vpt.fgvc.dataset']
    assert cfg.model.backbone.type == 'mmseg.VPTVisionTransformer'
    assert cfg.model.backbone.prompt_length == 10
    assert cfg.model.head.num_classes == TASKS[name].num_classes
    assert cfg.train_dataloader.batch_size == 128
    for loader, split in (('train', 'trainval'), ('val', 'test'),
                          ('test', 'test')):
        dataset = cfg[f'{loader}_dataloader'].dataset
        expected = dict(type='FGVCDataset', name=name, split=split,
                        data_root='data/fgvc', pipeline=dataset.pipeline)
        if loader != 'train':
            expected['test_mode'] = True
        assert dataset == expected
    train, test = (cfg[f'{s}_dataloader'].dataset.pipeline
                   for s in ('train', 'test'))
    assert [(t.type, t.get('scale')) for t in train] == [
        ('LoadImageFromFile', None), ('RandomResizedCrop', 224),
        ('RandomFlip', None), ('PackInputs', None)]
    assert train[2].prob == 0.5 and train[2].direction == 'horizontal'
    assert [t.type for t in test] == ['LoadImageFromFile', 'ResizeEdge',
                                      'CenterCrop', 'PackInputs']
    assert (test[1].scale, test[1].edge, test[2].crop_size) == (256, 'short',
                                                                224)
    # the VTAB protocol otherwise, from the VTAB base
    assert cfg.model.data_preprocessor.mean == [123.675, 116.28, 103.53]
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.momentum == 0.9
    assert cfg.auto_scale_lr == dict(base_batch_size=256, enable=True)
    assert cfg.train_cfg.max_epochs == 100
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR',
                                                     'CosineAnnealingLR']

    cfg.merge_from_dict(tiny_options())
    model = models().build(cfg.model)
    assert trainable(model) == {'backbone.prompt_embeddings',
                                'head.layers.head.weight',
                                'head.layers.head.bias'}
    assert model.backbone.prompt_embeddings.shape == (2, 10, 48)
    with torch.no_grad():
        model.eval()
        assert model(torch.randn(2, 3, 32, 32), mode='tensor').shape == (
            2, TASKS[name].num_classes)


# method -> substrings of the trainable backbone parameters (None: all)
BASE_TRAINABLE = {'vpt-deep': ['prompt'], 'vpt-shallow': ['prompt'],
                  'linear': [], 'bias': ['bias'], 'full': None,
                  # the last of the 2 tiny layers and the final norm
                  'partial-1': lambda n: n.startswith(('layers.1.', 'ln1.')),
                  'adapter-8': ['.adapter.'], 'mlp-3': [],
                  # the wrapped ViT is frozen; side network, projection and
                  # alpha train
                  'sidetune': lambda n: not n.startswith('backbone.')}


@pytest.mark.parametrize('method', list(METHODS))
def test_method_bases_build_with_the_right_trainable_set(tmp_path, method):
    assert set(METHODS) == set(BASE_TRAINABLE)
    path = tmp_path / 'stanford_cars.py'
    path.write_text(render_task_config(
        'stanford_cars', method, base_dir=str(REPO / 'configs/fgvc/_base_')))
    cfg = Config.fromfile(path)
    assert cfg.train_dataloader.dataset.name == 'stanford_cars'
    assert cfg.train_dataloader.dataset.pipeline[1].type == \
        'RandomResizedCrop'
    cfg.merge_from_dict(tiny_options(
        backbone='sidetune' if method == 'sidetune' else 'vit'))
    model = models().build(cfg.model)
    keys = BASE_TRAINABLE[method]
    trains = keys if callable(keys) else (
        lambda name: keys is None or any(k in name for k in keys))
    for name, param in model.backbone.named_parameters():
        expected = param.numel() > 0 and trains(name)
        assert param.requires_grad == expected, (method, name)
    assert all(p.requires_grad for p in model.head.parameters())
    layers = {'vpt-deep': [0, 1], 'vpt-shallow': [0]}.get(method)
    if layers:
        assert model.backbone.prompt_layers == layers
    if method == 'full':
        assert cfg.optim_wrapper.optimizer.lr == 0.001


def test_sweep_settings_use_the_fgvc_grid_splits_and_data_root(tmp_path):
    s = SweepSettings(work_dir=str(tmp_path), benchmark=FGVC)
    assert s.tasks == tuple(NAMES) and s.data_root == 'data/fgvc'
    assert len(s.lrs) == 10 and s.wds == (0.01, 0.001, 0.0001, 0.0)
    assert SweepSettings(work_dir='w', method='full',
                         benchmark=FGVC).lrs == (0.005, 0.001, 0.0005,
                                                 0.0001)
    with pytest.raises(ValueError, match=r"\['cars'\] are not FGVC tasks"):
        SweepSettings(work_dir='w', tasks=['cars'], num_classes=3,
                      benchmark=FGVC)


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------
def write_result(root: Path, method: str, task: str, seed: int, top1: float,
                 benchmark: str = 'fgvc') -> None:
    d = root / method / task / 'final' / f'seed{seed}'
    d.mkdir(parents=True)
    record = dict(stage='final', method=method, task=task, seed=seed,
                  top1=top1, lr=1.0, wd=0.0)
    if benchmark:
        record['benchmark'] = benchmark
    (d / 'result.json').write_text(json.dumps(record))


def test_report_puts_our_datasets_and_mean_beside_the_paper(tmp_path):
    write_result(tmp_path, 'vpt-deep', 'cub', 0, 80.0)
    write_result(tmp_path, 'vpt-deep', 'cub', 1, 90.0)
    write_result(tmp_path, 'vpt-deep', 'stanford_cars', 0, 70.0)
    write_result(tmp_path, 'linear', 'nabirds', 0, 60.0)
    write_result(tmp_path, 'vpt-deep', 'dtd', 0, 1.0, benchmark=None)  # VTAB
    summaries = summarize(load_results([str(tmp_path)], table=FGVC_TABLE),
                          FGVC_TABLE)
    assert [(s.backbone, s.method) for s in summaries] == [
        ('ViT-B/16', 'vpt-deep'), ('ViT-B/16', 'linear')]
    deep = summaries[0]
    assert deep.group_mean('CUB-200-2011') == (85.0, 1, 1)
    assert deep.group_mean('Mean') == (77.5, 2, 5)
    md = format_report(summaries, 'markdown')
    assert md.startswith('## FGVC top-1 (%): per dataset and mean, ours '
                         'beside the paper')
    assert ('| backbone | method | source | CUB-200-2011 | NABirds | Oxford '
            'Flowers | Stanford Dogs | Stanford Cars | Mean | tasks |') in md
    assert ('| ViT-B/16 | vpt-deep | paper | 88.5 | 84.2 | 99.0 | 90.2 | '
            '83.6 | 89.1 | 5/5 |') in md
    assert ('| ViT-B/16 | vpt-deep | ours | 85.00 |  |  |  | 70.00 | '
            '77.50 (2/5) | 2/5 |') in md
    # no paper row of ours for Linear (not verified), but the paper's rows
    assert '| ViT-B/16 | linear | paper |' not in md
    assert ('| ViT-B/16 | linear | ours |  | 60.00 |  |  |  | 60.00 (1/5) '
            '| 1/5 |') in md
    assert "## The paper's FGVC rows" in md
    assert ('| ViT-B/16 | Adapter | paper | 87.1 | 84.3 | 98.5 | 89.8 | '
            '68.6 | 85.7 | 5/5 |') in md
    assert '|  | Linear | paper |  |  |  |  |  |  | not verified |' in md
    assert '85.00 ± 7.07 (n=2)' in md
    csv = format_report(summaries, 'csv')
    assert 'groups,ViT-B/16,vpt-deep,paper,88.5,84.2,99.0,90.2,83.6,89.1' \
        in csv
    assert 'paper,ViT-B/16,Full,paper,87.3,82.7,98.8,89.4,84.5,88.5,5/5' \
        in csv
    # and the VTAB report of the same folder sees only the VTAB result
    from mmseg_vpt.vtab.report import report
    vtab = report([str(tmp_path)])
    assert '| ViT-B/16 | vpt-deep | ours | 1.00 (1/7) |' in vtab
    assert 'cub' not in vtab and 'FGVC' not in vtab


# ---------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------
def test_generator_is_deterministic_idempotent_and_careful(tmp_path):
    a = make_synthetic_fgvc(tmp_path / 'a', ['stanford_dogs'],
                            num_train=6, num_test=3, show_progress=False)
    b = make_synthetic_fgvc(tmp_path / 'b', ['stanford_dogs'],
                            num_train=6, num_test=3, show_progress=False)
    dogs_a, dogs_b = a['stanford_dogs'], b['stanford_dogs']
    assert read_manifest(dogs_a) == read_manifest(dogs_b)
    first = read_manifest(dogs_a)['splits']['train'][0][0]
    assert (dogs_a / first).read_bytes() == (dogs_b / first).read_bytes()
    mtime = (dogs_a / 'train_list.mat').stat().st_mtime_ns
    make_synthetic_fgvc(tmp_path / 'a', ['stanford_dogs'], num_train=6,
                        num_test=3, show_progress=False)
    assert (dogs_a / 'train_list.mat').stat().st_mtime_ns == mtime
    foreign = tmp_path / 'c' / 'CUB_200_2011'
    foreign.mkdir(parents=True)
    (foreign / 'mine.txt').write_text('x')
    with pytest.raises(FileExistsError, match='--overwrite'):
        make_synthetic_fgvc(tmp_path / 'c', ['cub'], show_progress=False)
    with pytest.raises(ValueError, match='num_train must be >= num_classes'):
        make_synthetic_fgvc(tmp_path / 'd', num_train=2)

    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'make_synthetic_fgvc',
        REPO / 'tools/dataset_converters/make_synthetic_fgvc.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([str(tmp_path / 'e'), '--datasets', 'stanford_cars',
               '--num-classes', '2', '--num-train', '4', '--num-test', '2'])
    assert len(read_official('stanford_cars',
                             str(tmp_path / 'e' / 'stanford_cars'))
               ['test']) == 2


# ---------------------------------------------------------------------------
# the tools, as users run them (subprocesses)
# ---------------------------------------------------------------------------
def short_run(weights: Path, epochs: int = 2,
              backbone: str = 'vit') -> List[str]:
    opts = tiny_options(backbone=backbone)
    opts.pop('model.backbone.init_cfg')
    # the ViT's init_cfg (inside SidetuneBackbone: the wrapped one)
    vit = 'model.backbone.backbone.' if backbone == 'sidetune' else \
        'model.backbone.'
    opts.update({
        vit + 'init_cfg.checkpoint': str(weights),
        'train_dataloader.batch_size': 8,
        'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
        'param_scheduler.0.end': 1, 'param_scheduler.1.begin': 1,
        'param_scheduler.1.end': epochs,
        'param_scheduler.1.T_max': epochs - 1,
        'default_hooks.logger.interval': 2,
    })

    def fmt(v):
        return '(' + ','.join(map(str, v)) + ')' if isinstance(v, tuple) \
            else str(v)
    return [f'{k}={fmt(v)}' for k, v in opts.items()] + no_workers()


@pytest.mark.slow
def test_train_then_test_an_fgvc_config_tunes_only_prompts_and_head(
        fgvc_root, tiny_base_weights, tmp_path):
    opts = short_run(tiny_base_weights) + [
        f'{loader}_dataloader.dataset.data_root={fgvc_root}'
        for loader in ('train', 'val', 'test')]
    work = tmp_path / 'run'
    log = run(train_cmd('configs/fgvc/cub.py', work, '--cfg-options', *opts),
              cwd=tmp_path)
    assert 'prompts: 960' in log  # 2 layers x 10 prompts x 48 dims
    assert 'Scaling the original LR by 0.03125' in log  # batch 8 / 256
    (top1, ) = metric_values(log, 'accuracy/top1')
    ckpt = Path((work / 'last_checkpoint').read_text().strip())
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)
    # prompts and head only: every other backbone tensor equals the base
    # file bit for bit (the hook stores any that do not)
    assert set(saved['state_dict']) == {'backbone.prompt_embeddings',
                                        'head.layers.head.weight',
                                        'head.layers.head.bias'}
    assert saved['state_dict']['head.layers.head.weight'].shape == (200, 48)
    # ... and the checkpoint's fingerprints of those tensors, taken from the
    # trained model, match the base file's tensors
    base = torch.load(tiny_base_weights, map_location='cpu')
    omitted = saved['meta'][TUNED_META_KEY]['omitted']
    assert {k[len('backbone.'):] for k in omitted} == set(base)
    for key, digest in omitted.items():
        assert tensor_digest(base[key[len('backbone.'):]]) == digest, key

    test_log = run(eval_cmd('configs/fgvc/cub.py', ckpt, work / 'test',
                            '--cfg-options', *opts), cwd=tmp_path)
    assert metric_values(test_log, 'accuracy/top1') == [top1], (
        'tools/test.py on the tuned-only checkpoint must reproduce the '
        'evaluation at the end of training')
    print(f'e2e generated CUB (3 of 200 classes): test top-1 {top1:.2f}')


# baseline method -> the tensors its tuned-only checkpoint holds
BASELINE_TENSORS = {
    'partial-1': lambda k: k.startswith(
        ('backbone.layers.1.', 'backbone.ln1.', 'head.')),
    'adapter-8': lambda k: '.adapter.' in k or k.startswith('head.'),
    'mlp-3': lambda k: k.startswith('head.'),
    # everything but the wrapped ViT: side network, projections, alpha
    'sidetune': lambda k: not k.startswith('backbone.backbone.'),
}


@pytest.mark.slow
@pytest.mark.parametrize('method', list(BASELINE_TENSORS))
def test_baseline_configs_train_their_set_and_test_reproduces_top1(
        fgvc_root, tiny_base_weights, tmp_path, method):
    """Each of the paper's other baselines on FGVC through tools/train.py
    and tools/test.py: the task file holds exactly what the method trains,
    and the tuned-only checkpoint reproduces the final evaluation."""
    config = tmp_path / 'cub.py'
    config.write_text(render_task_config(
        'cub', method, base_dir=str(REPO / 'configs/fgvc/_base_')))
    opts = short_run(tiny_base_weights, backbone='sidetune' if method ==
                     'sidetune' else 'vit') + [
        f'{loader}_dataloader.dataset.data_root={fgvc_root}'
        for loader in ('train', 'val', 'test')]
    work = tmp_path / 'run'
    log = run(train_cmd(str(config), work, '--cfg-options', *opts),
              cwd=tmp_path)
    (top1, ) = metric_values(log, 'accuracy/top1')
    ckpt = Path((work / 'last_checkpoint').read_text().strip())
    state = torch.load(ckpt, map_location='cpu',
                       weights_only=False)['state_dict']
    assert state and all(BASELINE_TENSORS[method](k) for k in state), (
        method, sorted(state))
    # the method's backbone part is there (MLP-3 trains the head only)
    assert any(k.startswith('backbone.') for k in state) == (
        method != 'mlp-3')
    test_log = run(eval_cmd(str(config), ckpt, work / 'test',
                            '--cfg-options', *opts), cwd=tmp_path)
    assert metric_values(test_log, 'accuracy/top1') == [top1]


@pytest.mark.slow
def test_sweep_runs_a_2x1_grid_then_the_final_run_and_the_report(
        fgvc_root, tiny_base_weights, tmp_path):
    work = tmp_path / 'sweep'
    cmd = [PYTHON, REPO / 'tools/fgvc_sweep.py', '--tasks', 'stanford_dogs',
           '--data-root', fgvc_root, '--lrs', '5', '0.5', '--wds', '0',
           '--seeds', '0', '--gpus', '0', '--work-dir', work,
           '--cfg-options', *short_run(tiny_base_weights)]
    log = run(cmd, cwd=tmp_path)
    assert 'FGVC sweep: vpt-deep (ViT-B/16), 1 task(s), grid 2 lr x 1 wd' \
        in log
    assert 'Stage 1/2, grid on train -> val: 2 jobs, 0 already done' in log
    task_dir = work / 'vpt-deep' / 'stanford_dogs'
    grid = {d.name: json.loads((d / 'result.json').read_text())
            for d in (task_dir / 'grid').iterdir()}
    assert set(grid) == {'lr5_wd0', 'lr0.5_wd0'}
    assert {r['split'] for r in grid.values()} == {'val'}
    assert all('val_dataloader.dataset.split=val' in r['cfg_options']
               for r in grid.values())
    selected = json.loads((task_dir / 'selected.json').read_text())
    best = max(grid.values(), key=lambda r: (r['top1'], -r['lr']))
    assert (selected['lr'], selected['wd']) == (best['lr'], best['wd'])
    final = json.loads((task_dir / 'final/seed0/result.json').read_text())
    assert (final['benchmark'], final['split']) == ('fgvc', 'test')
    assert 'train_dataloader.dataset.split=trainval' in final['cfg_options']
    table = (work / 'vpt-deep' / 'results.md').read_text()
    assert ('| ViT-B/16 | vpt-deep | paper | 88.5 | 84.2 | 99.0 | 90.2 | '
            '83.6 | 89.1 | 5/5 |') in table
    assert f'{final["top1"]:.2f} ± 0.00 (n=1)' in table

    out = run([PYTHON, REPO / 'tools/fgvc_report.py', work], cwd=tmp_path)
    assert (f'| ViT-B/16 | vpt-deep | ours |  |  |  | {final["top1"]:.2f} '
            f'|  | {final["top1"]:.2f} (1/5) | 1/5 |') in out
    assert '|  | Sidetune | paper |' in out
    # a rerun finds every job done
    log = run(cmd, cwd=tmp_path)
    assert '2 jobs, 2 already done, 0 to run' in log and 'start ' not in log
