"""End-to-end runs of tools/ on generated ADE20K-layout data, as users run
them: ``python tools/train.py CONFIG``, ``tools/test.py``, ``--resume`` and
``tools/dist_train.sh CONFIG 2`` (two CPU processes)."""
import shutil
from pathlib import Path

import pytest
import torch

from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k

from .tools_helpers import (PYTHON, REPO, eval_cmd, free_port, metric_values,
                            read_checkpoint, run, run_fails, short_schedule,
                            train_cmd)

pytestmark = pytest.mark.slow

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
SWIN_VPT = 'configs/vpt/upernet_swin_vpt_ade20k.py'
# The headline Swin-B config at test size: same file, same pipeline (512x512
# crops), a 4-stage Swin of width 32 with random weights instead of Swin-B.
SWIN_TINY_SIZE = [
    'model.backbone.embed_dims=32', 'model.backbone.depths=[2,2,2,2]',
    'model.backbone.num_heads=[1,2,4,8]', 'model.backbone.window_size=7',
    'model.backbone.init_cfg=None',
    'model.decode_head.in_channels=[32,64,128,256]',
    'model.decode_head.channels=32', 'model.auxiliary_head.in_channels=128',
    'model.auxiliary_head.channels=16'
]


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """A folder holding data/synthetic_ade20k, the demo configs' data_root
    (relative paths in configs resolve against the working directory)."""
    root = tmp_path_factory.mktemp('e2e')
    make_synthetic_ade20k(
        root / 'data/synthetic_ade20k', num_train=8, num_val=3, img_size=64,
        show_progress=False)
    # the ADE20K configs read data/ade/ADEChallengeData2016
    (root / 'data/ade').symlink_to(root / 'data/synthetic_ade20k')
    return root


def test_train_then_test_prints_miou_and_keeps_backbone_frozen(workspace):
    work = workspace / 'vit_train'
    log = run(
        train_cmd(VIT_DEMO, work, '--cfg-options', *short_schedule(4)),
        cwd=workspace)
    assert 'Parameters:' in log and 'trainable' in log
    assert len(metric_values(log)) == 1, 'validation did not print mIoU'

    ckpt = read_checkpoint(work / 'iter_4.pth')
    assert ckpt['meta']['iter'] == 4
    state = ckpt['state_dict']
    assert 'backbone.prompt_embeddings' in state
    assert state['backbone.prompt_embeddings'].shape == (4, 10, 96)

    test_log = run(eval_cmd(VIT_DEMO, work / 'iter_4.pth', work / 'test'),
                   cwd=workspace)
    assert len(metric_values(test_log)) == 1
    assert metric_values(test_log) == metric_values(log), (
        'tools/test.py on the final checkpoint must reproduce the mIoU '
        'printed by the validation at the end of training')


def test_resume_continues_from_the_saved_iteration(workspace):
    work = workspace / 'vit_resume'
    run(train_cmd(VIT_DEMO, work, '--cfg-options', *short_schedule(2)),
        cwd=workspace)
    first = read_checkpoint(work / 'iter_2.pth')

    log = run(
        train_cmd(VIT_DEMO, work, '--resume', '--cfg-options',
                  *short_schedule(4)),
        cwd=workspace)
    assert 'resumed' in log.lower()
    assert 'Iter(train) [1/4]' not in log and 'Iter(train) [3/4]' in log
    resumed = read_checkpoint(work / 'iter_4.pth')
    assert resumed['meta']['iter'] == 4
    # the optimizer state was carried over, not restarted
    assert resumed['optimizer']['state'], 'resumed run has no optimizer state'
    assert not torch.equal(first['state_dict']['backbone.prompt_embeddings'],
                           resumed['state_dict']['backbone.prompt_embeddings'])


def test_dist_train_runs_two_cpu_processes(workspace):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU (gloo) path')
    work = workspace / 'vit_dist'
    log = run(
        ['bash', REPO / 'tools/dist_train.sh', REPO / VIT_DEMO, '2',
         '--work-dir', work, '--cfg-options', *short_schedule(2)],
        cwd=workspace, env={'PORT': str(free_port()), 'PYTHON': PYTHON})
    assert 'Distributed training: True' in log
    # 3 validation images over 2 processes: each rank runs 2 (one padded);
    # a single process would log [3/3]
    assert 'Iter(val) [2/2]' in log and 'Iter(val) [3/3]' not in log
    assert metric_values(log), 'distributed validation printed no mIoU'
    assert (work / 'iter_2.pth').exists()


def test_missing_pretrained_weights_stop_with_the_config_key(workspace):
    work = workspace / 'missing'
    failure = run_fails(
        train_cmd(VIT_DEMO, work, '--cfg-options',
                  'model.backbone.init_cfg._delete_=True',
                  'model.backbone.init_cfg.type=Pretrained',
                  'model.backbone.init_cfg.checkpoint=pretrain/none.pth'),
        cwd=workspace)
    # the tool's own check, not a crash further in: it names the key, the
    # file, and where to get weights
    message = failure.split('exited with')[1]
    assert 'FileNotFoundError' in message
    assert ("Config key `model.backbone.init_cfg.checkpoint` refers to a "
            "checkpoint that does not exist: 'pretrain/none.pth'") in message
    assert 'Pretrained weights' in message
    assert not (work / 'iter_1.pth').exists()
    shutil.rmtree(work, ignore_errors=True)


def test_upernet_swin_vpt_config_trains_validates_and_tests(workspace):
    work = workspace / 'swin'
    log = run(
        train_cmd(SWIN_VPT, work, '--cfg-options', *short_schedule(2),
                  *SWIN_TINY_SIZE),
        cwd=workspace)
    assert len(metric_values(log)) == 1
    state = read_checkpoint(work / 'iter_2.pth')['state_dict']
    assert [tuple(state[f'backbone.prompt_embeddings.{i}'].shape)
            for i in range(4)] == [(2, 10, 32), (2, 10, 64), (2, 10, 128),
                                   (2, 10, 256)]
    test_log = run(
        eval_cmd(SWIN_VPT, work / 'iter_2.pth', work / 'test',
                 '--cfg-options', *SWIN_TINY_SIZE),
        cwd=workspace)
    assert metric_values(test_log) == metric_values(log)


def test_dist_train_swin_two_cpu_processes(workspace):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU (gloo) path')
    work = workspace / 'swin_dist'
    log = run(
        ['bash', REPO / 'tools/dist_train.sh', REPO / SWIN_VPT, '2',
         '--work-dir', work, '--cfg-options', *short_schedule(1),
         *SWIN_TINY_SIZE],
        cwd=workspace, env={'PORT': str(free_port()), 'PYTHON': PYTHON})
    assert 'Distributed training: True' in log
    # the UperNet heads' SyncBN was switched to BN for CPU processes
    assert 'SyncBN' in log
    assert 'Iter(val) [2/2]' in log and metric_values(log)
    assert (work / 'iter_1.pth').exists()
