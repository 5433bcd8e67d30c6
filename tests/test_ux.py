"""What a user sees: machine-readable tool output that parses, one log line
for the frozen parameters, a clear error for BatchNorm at one image per GPU,
and the getting-started guide's commands that run as printed."""
import csv
import io
import json
import logging
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k
from mmseg_vpt.engine.batchnorm_check import BatchNormInputCheckHook

from .tools_helpers import (PYTHON, REPO, metric_values, run, run_fails,
                            short_schedule, train_cmd)

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
SWIN_DEMO = 'configs/demo/upernet_swin-tiny_vpt-deep_synthetic-ade20k.py'
SKIPPED = 'is skipped since its requires_grad=False'


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """A folder holding data/synthetic_ade20k, the demo configs' data_root."""
    root = tmp_path_factory.mktemp('ux')
    make_synthetic_ade20k(root / 'data/synthetic_ade20k', num_train=4,
                          num_val=2, img_size=64, show_progress=False)
    return root


def stdout_of(cmd) -> str:
    """stdout alone (stderr apart) of a command that must succeed."""
    proc = subprocess.run([str(c) for c in cmd], cwd=REPO, text=True,
                          capture_output=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


# ---------------------------------------------------------------------------
# machine-readable output
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_param_report_stdout_is_only_the_json_or_csv():
    cmd = [PYTHON, REPO / 'tools/analysis/param_report.py', REPO / VIT_DEMO]
    rows = json.loads(stdout_of(cmd + ['--format', 'json']))
    assert [r['config'] for r in rows] == [str(REPO / VIT_DEMO)]
    assert rows[0]['prompts_tunable'] == 4 * 10 * 96

    text = stdout_of(cmd + ['--format', 'csv'])
    assert text.splitlines()[0].startswith('config,total,tunable,')
    (row, ) = csv.DictReader(io.StringIO(text))
    assert int(row['prompts_tunable']) == 4 * 10 * 96


@pytest.mark.slow
def test_vtab_report_csv_stdout_starts_with_its_header(tmp_path):
    seed_dir = tmp_path / 'vpt-deep' / 'dtd' / 'final' / 'seed0'
    seed_dir.mkdir(parents=True)
    (seed_dir / 'result.json').write_text(json.dumps(dict(
        stage='final', method='vpt-deep', task='dtd', seed=0, top1=70.0,
        lr=1.0, wd=0.0)))
    text = stdout_of([PYTHON, REPO / 'tools/vtab_report.py', tmp_path,
                      '--format', 'csv'])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ['table', 'backbone', 'method']
    assert rows[2][:5] == ['groups', 'ViT-B/16', 'vpt-deep', 'ours',
                           '70.00 (1/7)']


# ---------------------------------------------------------------------------
# one line for the frozen parameters
# ---------------------------------------------------------------------------
def test_every_config_with_an_optimizer_logs_frozen_parameters_once():
    configs = [p for p in sorted((REPO / 'configs').rglob('*.py'))
               if '_base_' not in p.parts]
    assert len(configs) > 30
    for path in configs:
        wrapper = Config.fromfile(path).get('optim_wrapper')
        assert wrapper is not None, path
        assert wrapper.get('constructor', '').split('.')[-1] == \
            'FrozenSummaryOptimWrapperConstructor', path


class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _optimizer_groups(model, constructor):
    cfg = dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1),
        paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))
    if constructor:
        cfg['constructor'] = constructor
    logger = MMLogger.get_current_instance()
    records = _Records()
    logger.addHandler(records)
    try:
        wrapper = build_optim_wrapper(model, cfg)
    finally:
        logger.removeHandler(records)
    groups = [(tuple(id(p) for p in g['params']), g['lr'])
              for g in wrapper.optimizer.param_groups]
    return groups, records.messages


def test_constructor_summarises_frozen_parameters_and_builds_the_same_groups():
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model.neck = nn.Linear(4, 4)
    model.head = nn.Linear(4, 2)
    for module in (model.backbone, model.neck):
        module.requires_grad_(False)

    plain, plain_log = _optimizer_groups(model, None)
    groups, log = _optimizer_groups(
        model, 'mmseg.FrozenSummaryOptimWrapperConstructor')
    assert groups == plain  # same parameter groups and learning rates
    assert sum(SKIPPED in m for m in plain_log) == 6  # mmengine's own
    assert not any(SKIPPED in m for m in log)
    summary = [m for m in log if m.startswith('Optimizer:')]
    assert summary == [
        'Optimizer: 6 parameter tensors (60 parameters) have '
        'requires_grad=False and are not trained: backbone (4), neck (2)']
    # mmengine's one line per trained tensor and setting ...
    assert sorted(m for m in plain_log if 'paramwise_options' in m) == [
        'paramwise_options -- head.bias:lr=1.0',
        'paramwise_options -- head.bias:lr_mult=10.0',
        'paramwise_options -- head.weight:lr=1.0',
        'paramwise_options -- head.weight:lr_mult=10.0']
    # ... become one line
    assert not any('paramwise_options' in m for m in log)
    assert [m for m in log if m.startswith('Optimizer paramwise')] == [
        'Optimizer paramwise settings: lr=1.0 for 2 tensors (head 2); '
        'lr_mult=10.0 for 2 tensors (head 2)']


@pytest.mark.slow
def test_train_logs_one_frozen_summary_and_no_line_per_parameter(workspace):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(REPO / VIT_DEMO).model)
    frozen = [p for p in model.parameters() if not p.requires_grad]

    log = run(train_cmd(VIT_DEMO, workspace / 'vit_log', '--cfg-options',
                        *short_schedule(1)), cwd=workspace)
    assert SKIPPED not in log
    assert 'paramwise_options --' not in log
    settings = [line for line in log.splitlines()
                if 'Optimizer paramwise settings: ' in line]
    assert len(settings) == 1, settings
    summary = [line for line in log.splitlines() if 'Optimizer: ' in line]
    assert len(summary) == 1, summary
    assert summary[0].endswith(
        f'Optimizer: {len(frozen)} parameter tensors '
        f'({sum(p.numel() for p in frozen):,} parameters) have '
        f'requires_grad=False and are not trained: backbone ({len(frozen)})')


# ---------------------------------------------------------------------------
# BatchNorm with one value per channel
# ---------------------------------------------------------------------------
class _Runner:
    """What the hook reads of a runner."""

    def __init__(self, model, batch_size):
        self.model = model
        self.train_dataloader = type('Loader', (), dict(
            batch_size=batch_size))()


def test_bn_check_passes_what_torch_accepts_and_names_what_it_refuses():
    model = nn.Module()
    model.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 4, 1),
                               nn.BatchNorm2d(4))
    hook = BatchNormInputCheckHook()
    hook.before_train(_Runner(model, 1))
    model.train()
    model.pool(torch.rand(2, 3, 8, 8))  # two images: fine
    model.eval()
    model.pool(torch.rand(1, 3, 8, 8))  # eval: running statistics
    model.train()
    with pytest.raises(ValueError) as err:
        model.pool(torch.rand(1, 3, 8, 8))
    assert str(err.value).startswith(
        'pool.2 (BatchNorm2d) got an input of shape (1, 4, 1, 1) in '
        'training: one value per channel')
    assert 'train_dataloader.batch_size is 1' in str(err.value)
    hook.after_train(None)
    with pytest.raises(ValueError, match='Expected more than 1 value'):
        model.pool(torch.rand(1, 3, 8, 8))  # torch's own error again


@pytest.mark.slow
def test_batch_size_one_on_upernet_names_the_layer_and_the_fixes(workspace):
    failure = run_fails(
        train_cmd(SWIN_DEMO, workspace / 'swin_b1', '--cfg-options',
                  *short_schedule(1, batch_size=1)), cwd=workspace)
    message = failure.split('exited with')[1]
    assert (
        'ValueError: decode_head.psp_modules.0.1.bn (BatchNorm2d) got an '
        'input of shape (1, 64, 1, 1) in training: one value per channel, '
        'but BatchNorm normalises each channel over the batch x height x '
        'width values and needs more than one. Its input is pooled to 1x1 '
        "(as in the pyramid pooling 'psp_modules' of UperNet and PSPNet), "
        'so it needs at least 2 images per GPU; train_dataloader.batch_size '
        'is 1. Fix: set train_dataloader.batch_size to 2 or more') in message
    assert "type='SyncBN'" in message and "type='GN'" in message
    assert 'Expected more than 1 value per channel' not in message
    assert not (workspace / 'swin_b1' / 'iter_1.pth').exists()


# ---------------------------------------------------------------------------
# the getting-started guide's commands
# ---------------------------------------------------------------------------
def readme_command(section: str) -> list:
    """The first bash command of docs/get_started.md's section ``section``,
    as argv."""
    text = (REPO / 'docs' / 'get_started.md').read_text().split(
        f'\n## {section}\n')[1]
    block = text.split('```bash\n')[1].split('```')[0]
    return shlex.split(block.replace('\\\n', ' '))


def test_readme_runs_configs_without_pretrained_weights():
    argv = readme_command('Run without pretrained weights')
    assert argv[argv.index('--cfg-options') + 1:] == [
        'model.backbone.init_cfg=None']
    from mmseg_vpt.engine.runner_config import load_config
    from mmseg_vpt.utils.checkpoints import iter_checkpoint_refs
    configs = [p for p in sorted((REPO / 'configs').rglob('*.py'))
               if '_base_' not in p.parts]
    for path in configs:  # that override is all any config needs
        cfg = load_config(str(path), {'model.backbone.init_cfg': None})
        assert list(iter_checkpoint_refs(cfg)) == [], path


@pytest.mark.slow
def test_readme_smoke_run_on_own_data_trains_and_validates(tmp_path):
    """The guide's command, as printed, on ADE20K-layout data at its
    data_root; only the schedule is cut to 2 iterations."""
    argv = readme_command('A 2-minute smoke run on your own data')
    assert argv[:3] == ['python', 'tools/train.py',
                        'configs/vpt/upernet_swin_vpt_ade20k.py']
    options = argv[argv.index('--cfg-options') + 1:]
    for key in ('model.backbone.init_cfg=None', 'param_scheduler.0.end=10',
                'train_cfg.max_iters=100', 'train_dataloader.batch_size=4'):
        assert key in options
    root = next(o.split('=', 1)[1] for o in options
                if o.startswith('train_dataloader.dataset.data_root='))
    make_synthetic_ade20k(tmp_path / Path(root).parent, num_train=4,
                          num_val=2, img_size=128, show_progress=False)
    cmd = [PYTHON, REPO / argv[1], REPO / argv[2]] + argv[3:] + [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1']
    log = run(cmd, cwd=tmp_path)
    assert 'Iter(train) [2/2]' in log and 'loss: ' in log
    assert metric_values(log), 'validation printed no mIoU'
    assert (tmp_path / 'work_dirs/smoke/iter_2.pth').is_file()
