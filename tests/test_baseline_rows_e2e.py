"""The paper's Adapter and Partial-1 segmentation rows end to end: the real
config files under a reduced override (a 4-layer ViT of width 32 on
generated ADE20K-layout data, random base weights), through
``tools/train.py`` and ``tools/test.py``: only the row's set trains, the
task file holds exactly it, the frozen tensors equal the base file's after
training, and the tuned-only checkpoint reproduces the printed mIoU."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from mmseg_vpt.apis import init_segmentor

from .tools_helpers import (REPO, eval_cmd, metric_values, read_checkpoint,
                            run, short_schedule, synthetic_workspace,
                            train_cmd)

pytestmark = pytest.mark.slow

ROWS = {
    'adapter': ('configs/vpt/setr_vit-l_pup_adapter-256_ade20k-512x512.py',
                # width 32 / reduction 8 (256 does not divide 32)
                'adapter_reduction=8'),
    'partial-1': ('configs/vpt/setr_vit-l_pup_partial-1_ade20k-512x512.py',
                  ''),
}
OVERRIDE = '''_base_ = [{config!r}]
model = dict(
    backbone=dict(embed_dims=32, num_layers=4, num_heads=2,
                  out_indices=(0, 1, 2, 3), {extra}
                  init_cfg=dict(type='Pretrained', checkpoint={base!r})),
    decode_head=dict(in_channels=32, channels=16),
    auxiliary_head=None)  # SETR's three auxiliary heads: not what is tested
'''


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    root = synthetic_workspace(tmp_path_factory, 'rows')
    (root / 'data/ade').symlink_to(root / 'data/synthetic_ade20k')
    return root


def write_row(workspace: Path, row: str) -> Path:
    """The row's reduced override and random base weights for it."""
    config, extra = ROWS[row]
    base = workspace / f'{row}_base.pth'
    path = workspace / f'{row}.py'
    path.write_text(OVERRIDE.format(config=str(REPO / config), base=str(base),
                                    extra=f'{extra},' if extra else ''))
    init_default_scope('mmseg')
    cfg = Config.fromfile(path).model.backbone
    cfg.update(prompt_length=0, frozen_exclude=['all'], init_cfg=None,
               adapter_reduction=None, partial_k=0)
    plain = MODELS.build(cfg)
    plain.init_weights()
    torch.save(plain.state_dict(), base)
    return path


@pytest.mark.parametrize('row', ROWS)
def test_row_trains_its_set_and_its_task_file_reproduces_the_miou(
        workspace, row):
    config = write_row(workspace, row)
    work = workspace / f'{row}_work'
    log = run(train_cmd(config, work, '--cfg-options', *short_schedule(2)),
              cwd=workspace)
    assert len(metric_values(log)) == 1

    state = read_checkpoint(work / 'iter_2.pth')['state_dict']
    stored = {k[len('backbone.'):] for k in state if k.startswith('backbone.')}
    if row == 'adapter':
        assert stored == {f'layers.{i}.ffn.adapter.{m}.{t}' for i in range(4)
                          for m in ('down', 'up') for t in ('weight', 'bias')}
    else:  # the last layer (SETR's ViT has no final norm)
        base = torch.load(workspace / f'{row}_base.pth', weights_only=True)
        assert stored == {k for k in base if k.startswith('layers.3.')}

    # mmseg-style loading of the task file: the frozen tensors are the
    # base file's, the trained ones the checkpoint's
    model = init_segmentor(str(config), str(work / 'iter_2.pth'))
    loaded = model.backbone.state_dict()
    base = torch.load(workspace / f'{row}_base.pth', weights_only=True)
    for key, value in base.items():
        if key not in stored:
            assert torch.equal(loaded[key], value), key
    for key in stored:
        assert torch.equal(loaded[key], state[f'backbone.{key}']), key
    assert any(not torch.equal(loaded[k], base[k]) for k in stored
               if k in base) or row == 'adapter'

    test_log = run(eval_cmd(config, work / 'iter_2.pth', work / 'test'),
                   cwd=workspace)
    assert metric_values(test_log) == metric_values(log)
