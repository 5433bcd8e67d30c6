"""A timm-backbone row through the tools, as users run it: the DINOv2-L/14
VPT-deep UperNet config at test size (4 blocks of width 64 instead of 24 of
1024, same file and pipeline), its ``timm://`` weights read from an offline
Hugging Face cache. ``tools/train.py`` trains exactly the prompts, neck and
heads and writes tuned-only checkpoints; ``tools/test.py`` reproduces the
validation mIoU from one; merge / extract, ``tools/infer.py`` and
``tools/analysis/prompt_attention.py`` work on it."""
import hashlib
from pathlib import Path

import pytest
import timm
import torch

from mmseg_vpt.checkpoint import TUNED_META_KEY, tensor_digest
from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k

from .test_timm_weights import hf_cache_with
from .tools_helpers import (PYTHON, REPO, eval_cmd, metric_values,
                            read_checkpoint, run, short_schedule, train_cmd)

pytestmark = pytest.mark.slow

CONFIG = ('configs/vpt_timm/'
          'upernet_dinov2-l14-reg4_mln_vpt-deep-10_ade20k-512x512.py')
TAG = 'vit_large_patch14_reg4_dinov2.lvd142m'
TINY = dict(depth=4, embed_dim=64, num_heads=4)
TEST_SIZE = [
    'model.backbone.timm_kwargs.depth=4',
    'model.backbone.timm_kwargs.embed_dim=64',
    'model.backbone.timm_kwargs.num_heads=4',
    'model.backbone.out_indices=[0,1,2,3]',
    'model.neck.in_channels=[64,64,64,64]', 'model.neck.out_channels=64',
    'model.decode_head.in_channels=[64,64,64,64]',
    'model.decode_head.channels=32', 'model.auxiliary_head.in_channels=64',
    'model.auxiliary_head.channels=16',
]


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp('timm_e2e')
    make_synthetic_ade20k(root / 'data/synthetic_ade20k', num_train=8,
                          num_val=3, img_size=64, show_progress=False)
    (root / 'data/ade').symlink_to(root / 'data/synthetic_ade20k')
    source = timm.create_model(TAG.split('.')[0], pretrained=False,
                               num_classes=0, **TINY)
    base = hf_cache_with(root / 'hf', TAG, source.state_dict())
    env = dict(HF_HUB_CACHE=str(root / 'hf'), HF_HUB_OFFLINE='1')
    return root, base, env


@pytest.fixture(scope='module')
def trained(workspace):
    root, _, env = workspace
    work = root / 'work'
    log = run(train_cmd(CONFIG, work, '--cfg-options', *short_schedule(2),
                        *TEST_SIZE), cwd=root, env=env)
    return work, log


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_training_stores_only_prompts_neck_and_heads(workspace, trained):
    root, base, _ = workspace
    work, log = trained
    assert len(metric_values(log)) == 1
    ckpt = read_checkpoint(work / 'iter_2.pth')
    backbone = [k for k in ckpt['state_dict'] if k.startswith('backbone.')]
    assert backbone == ['backbone.prompt_embeddings']
    assert ckpt['state_dict']['backbone.prompt_embeddings'].shape == (4, 10,
                                                                      64)
    assert {k.split('.')[0] for k in ckpt['state_dict']} == {
        'backbone', 'neck', 'decode_head', 'auxiliary_head'}
    meta = ckpt['meta'][TUNED_META_KEY]
    assert meta['base_sha256'] == sha256(base)
    # every frozen tensor, after training, is the base file's, bit for bit
    from safetensors.torch import load_file
    source = load_file(str(base))
    omitted = meta['omitted']
    assert len(omitted) == len(source)
    for key, value in source.items():
        assert omitted[f'backbone.timm_model.{key}'] == tensor_digest(value)


def test_test_py_reproduces_validation_from_the_tuned_checkpoint(
        workspace, trained):
    root, _, env = workspace
    work, log = trained
    test_log = run(eval_cmd(CONFIG, work / 'iter_2.pth', work / 'test',
                            '--cfg-options', *TEST_SIZE), cwd=root, env=env)
    assert metric_values(test_log) == metric_values(log)


def test_merge_extract_infer_and_attention_maps(workspace, trained):
    root, base, env = workspace
    work, _ = trained
    tuned = work / 'iter_2.pth'
    merged, extracted = work / 'merged.pth', work / 'extracted.pth'
    run([PYTHON, REPO / 'tools/merge_tuned.py', REPO / CONFIG, tuned, merged,
         '--cfg-options', *TEST_SIZE], cwd=root, env=env)
    full = read_checkpoint(merged)['state_dict']
    assert len([k for k in full if k.startswith('backbone.timm_model.')]) \
        == len(read_checkpoint(tuned)['meta'][TUNED_META_KEY]['omitted'])
    run([PYTHON, REPO / 'tools/extract_tuned.py', merged, extracted,
         '--config', REPO / CONFIG, '--cfg-options', *TEST_SIZE], cwd=root,
        env=env)
    a = read_checkpoint(tuned)['state_dict']
    b = read_checkpoint(extracted)['state_dict']
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    image = root / ('data/synthetic_ade20k/ADEChallengeData2016/images/'
                    'validation/ADE_val_00000001.jpg')
    out = run([PYTHON, REPO / 'tools/infer.py', REPO / CONFIG, tuned, image,
               '--out-dir', work / 'infer', '--cfg-options', *TEST_SIZE],
              cwd=root, env=env)
    assert (work / 'infer').exists(), out
    assert list((work / 'infer').rglob('*.png'))
    png = work / 'attention.png'
    run([PYTHON, REPO / 'tools/analysis/prompt_attention.py', REPO / CONFIG,
         tuned, image, '--layers', '0', '3', '--out', png, '--cfg-options',
         *TEST_SIZE], cwd=root, env=env)
    assert png.stat().st_size > 10_000


def test_param_report_prints_every_timm_row(tmp_path):
    """tools/analysis/param_report.py on every timm row (real size; the
    1B and 7B rows are built on the meta device): total and tunable counts,
    per-task file share; VPT-deep adds exactly layers x 10 x width prompt
    parameters to its head-only sibling."""
    import json
    configs = sorted((REPO / 'configs/vpt_timm').glob('*.py'))
    assert len(configs) == 14
    out = run([PYTHON, REPO / 'tools/analysis/param_report.py', *configs,
               '--format', 'json', '--no-optimizer'], cwd=tmp_path)
    # run() joins the logs (stderr) to the report; the report starts at [
    rows = {Path(r['config']).name: r
            for r in json.loads(out[out.index('\n['):])}
    assert len(rows) == 14
    # backbone parameters (millions) and prompt layout per family
    giants = {'dinov3-7b16': ((6700, 6730), 40, 4096),
              'dinov2-g14': ((1130, 1140), 40, 1536)}
    for name, row in rows.items():
        (low, high), depth, width = next(
            (v for k, v in giants.items() if k in name),
            ((300, 310), 24, 1024))
        assert row['backbone_tunable'] == 0, name
        assert row['tunable'] == row['prompts_tunable'] + row['heads'], name
        assert low * 1e6 < row['total'] - row['heads'] < high * 1e6, name
        assert 0 < row['per_task_pct'] < 25, name
        assert row['frozen_dtype'] == ('bfloat16' if depth == 40 else None)
        if 'vpt-deep-10' in name:
            sibling = rows[name.replace('vpt-deep-10', 'head-only')]
            assert row['prompts'] == depth * 10 * width
            assert row['tunable'] - sibling['tunable'] == depth * 10 * width
            assert row['total'] - sibling['total'] == depth * 10 * width
