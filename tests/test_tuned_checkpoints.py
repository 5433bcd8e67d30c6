"""Tuned-only checkpoints: what they hold, that they load back bit-exactly
on their base weights (tools/test.py, --resume, merge/extract), the errors
when the base is wrong or missing, the ViT-L size target, and the parameter
report."""
import copy
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from mmseg_vpt.checkpoint import (TUNED_META_KEY, BaseWeightsMismatch,
                                  TunedCheckpointError, extract_tuned,
                                  load_tuned_checkpoint, merge_tuned,
                                  plan_tuned, split_tuned)
from mmseg_vpt.analysis.param_report import (format_report, model_report,
                                          param_report)

from .tools_helpers import (PYTHON, REPO, eval_cmd, metric_values, run,
                            short_schedule, synthetic_workspace, train_cmd)

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
SWIN_VPT = 'configs/vpt/upernet_swin_vpt_ade20k.py'
VIT_L_VPT = 'configs/vpt/setr_vit-l_pup_vpt-deep-10_ade20k-512x512.py'
SWIN_TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                 window_size=7)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def load_cfg(config: str) -> Config:
    init_default_scope('mmseg')
    return Config.fromfile(REPO / config)


def demo_cfg() -> Config:
    return load_cfg(VIT_DEMO)


def swin_cfg() -> Config:
    cfg = load_cfg(SWIN_VPT)
    cfg.model.backbone.update(SWIN_TINY)
    cfg.model.decode_head.update(in_channels=[32, 64, 128, 256], channels=32)
    cfg.model.auxiliary_head.update(in_channels=128, channels=16)
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        head.norm_cfg = dict(type='BN', requires_grad=True)
    return cfg


def write_base(cfg: Config, path: Path, drop=()) -> Path:
    """A randomly initialised backbone of ``cfg`` without prompts, saved as
    base weights (keys whose name starts with an entry of ``drop`` left
    out, like converted releases that lack some tensors)."""
    backbone = copy.deepcopy(cfg.model.backbone)
    backbone.update(prompt_length=0, frozen_exclude=['all'], init_cfg=None)
    module = MODELS.build(backbone)
    module.init_weights()
    state = {k: v for k, v in module.state_dict().items()
             if not k.startswith(tuple(drop))}
    torch.save(state, path)
    return path


def build(cfg: Config, base: Path = None):
    cfg = copy.deepcopy(cfg)
    if base is not None:
        cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                           checkpoint=str(base))
    return MODELS.build(cfg.model)


def trained_model(cfg: Config, base: Path):
    """A model as after training: base loaded, then every trained tensor
    and BN statistic moved away from its initial value."""
    model = build(cfg, base)
    model.init_weights()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
        for name, buf in model.named_buffers():
            if name.endswith('running_mean'):
                buf.add_(torch.randn_like(buf))
    return model


def tuned_checkpoint(model) -> dict:
    plan = plan_tuned(model)
    assert not isinstance(plan, str), plan
    return plan.apply({'meta': {}, 'state_dict': model.state_dict()})


def assert_same_state(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), \
            key


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)


# --------------------------------------------------------------------------
# what a task's checkpoint contains (in-process, fast)
# --------------------------------------------------------------------------
def test_vpt_checkpoint_keeps_prompts_and_heads_and_loads_back_exactly(
        tmp_path):
    cfg = demo_cfg()
    base = write_base(cfg, tmp_path / 'base.pth')
    model = trained_model(cfg, base)
    full = model.state_dict()
    ckpt = tuned_checkpoint(model)

    backbone = [k for k in full if k.startswith('backbone.')]
    assert [k for k in ckpt['state_dict'] if k.startswith('backbone.')] == \
        ['backbone.prompt_embeddings']
    # every head tensor, BN statistics included
    assert {k for k in ckpt['state_dict'] if not k.startswith('backbone.')} \
        == {k for k in full if not k.startswith('backbone.')}
    assert any('running_var' in k for k in ckpt['state_dict'])

    meta = ckpt['meta'][TUNED_META_KEY]
    assert meta['base_checkpoint'] == str(base)
    assert meta['base_config_key'] == 'model.backbone.init_cfg.checkpoint'
    assert meta['base_sha256'] == sha256(base)
    assert meta['base_bytes'] == base.stat().st_size
    assert list(meta['omitted']) == [k for k in backbone
                                     if 'prompt' not in k]
    assert meta['omitted_numel'] == sum(full[k].numel()
                                        for k in meta['omitted'])
    assert meta['num_tuned'] == len(ckpt['state_dict'])
    assert meta['policy']['frozen_exclude'] == ['prompt']
    assert meta['policy']['prompt_length'] == 10
    assert meta['policy']['trainable_params'] == sum(
        p.numel() for p in model.parameters() if p.requires_grad)

    fresh = build(cfg, base)  # random weights, no init_weights (as test.py)
    load_tuned_checkpoint(fresh, ckpt)
    assert_same_state(fresh.state_dict(), full)
    # a config without init_cfg falls back to the recorded base file
    fresh = build(cfg)
    load_tuned_checkpoint(fresh, ckpt)
    assert_same_state(fresh.state_dict(), full)


def test_swin_output_norms_missing_from_the_base_are_stored(tmp_path):
    cfg = swin_cfg()
    # converted Swin releases have only the last output norm
    base = write_base(cfg, tmp_path / 'swin.pth',
                      drop=('norm0', 'norm1', 'norm2'))
    model = trained_model(cfg, base)
    full = model.state_dict()
    ckpt = tuned_checkpoint(model)
    stored = sorted(k for k in ckpt['state_dict'] if k.startswith('backbone'))
    assert stored == sorted(
        [f'backbone.norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')]
        + [f'backbone.prompt_embeddings.{i}' for i in range(4)])
    fresh = build(cfg, base)
    load_tuned_checkpoint(fresh, ckpt)
    assert_same_state(fresh.state_dict(), full)


def test_bias_tuning_stores_biases_and_resized_pos_embed_comes_from_base(
        tmp_path):
    cfg = demo_cfg()
    # base saved at 32 px: mmseg's init_weights resizes its pos_embed to the
    # model's 64 px grid, exactly as in training, so it is not stored
    small = copy.deepcopy(cfg)
    small.model.backbone.img_size = (32, 32)
    base = write_base(small, tmp_path / 'base32.pth')
    cfg.model.backbone.update(prompt_length=0, frozen_exclude=['bias'])
    model = trained_model(cfg, base)
    ckpt = tuned_checkpoint(model)
    stored = [k for k in ckpt['state_dict'] if k.startswith('backbone.')]
    assert stored and all(k.endswith('bias') for k in stored)
    assert 'backbone.pos_embed' in ckpt['meta'][TUNED_META_KEY]['omitted']
    fresh = build(cfg, base)
    load_tuned_checkpoint(fresh, ckpt)
    assert_same_state(fresh.state_dict(), model.state_dict())


def test_frozen_tensors_that_differ_from_the_base_are_stored(tmp_path):
    cfg = demo_cfg()
    base = write_base(cfg, tmp_path / 'base.pth')
    model = trained_model(cfg, base)
    with torch.no_grad():  # e.g. a backbone fine-tuned before, then frozen
        model.backbone.layers[1].ln1.weight.mul_(2)
    ckpt = tuned_checkpoint(model)
    assert 'backbone.layers.1.ln1.weight' in ckpt['state_dict']
    fresh = build(cfg, base)
    load_tuned_checkpoint(fresh, ckpt)
    assert_same_state(fresh.state_dict(), model.state_dict())


def test_random_init_and_full_fine_tuning_keep_full_checkpoints(tmp_path):
    cfg = demo_cfg()  # init_cfg=None: no base weights
    assert 'no Pretrained init_cfg' in plan_tuned(build(cfg))
    base = write_base(cfg, tmp_path / 'base.pth')
    cfg.model.backbone.update(prompt_length=0, frozen_exclude=['all'])
    assert 'nothing in model.backbone is frozen' in plan_tuned(
        build(cfg, base))


def test_wrong_or_missing_base_and_misfit_checkpoints_fail_loudly(tmp_path):
    cfg = demo_cfg()
    base = write_base(cfg, tmp_path / 'base.pth')
    model = trained_model(cfg, base)
    ckpt = tuned_checkpoint(model)
    recorded = sha256(base)

    # another base file: error names both files and both hashes
    other = write_base(cfg, tmp_path / 'other.pth')
    with pytest.raises(BaseWeightsMismatch) as err:
        load_tuned_checkpoint(build(cfg, other), ckpt)
    for text in (str(base), recorded, str(other), sha256(other),
                 '--ignore-base-hash'):
        assert text in str(err.value)
    # the override loads anyway (the frozen backbone is then the other one)
    fresh = build(cfg, other)
    load_tuned_checkpoint(fresh, ckpt, check_base_hash=False)
    assert torch.equal(fresh.backbone.prompt_embeddings,
                       model.backbone.prompt_embeddings)
    assert torch.equal(fresh.backbone.layers[0].ln1.weight,
                       torch.load(other)['layers.0.ln1.weight'])

    # a missing base file: FileNotFoundError naming the file and config key
    missing = tmp_path / 'gone.pth'
    with pytest.raises(FileNotFoundError) as err:
        load_tuned_checkpoint(build(cfg, missing), ckpt)
    assert str(missing) in str(err.value)
    assert 'model.backbone.init_cfg.checkpoint' in str(err.value)

    # another architecture: shape mismatches are listed
    cfg_long = copy.deepcopy(cfg)
    cfg_long.model.backbone.prompt_length = 5
    with pytest.raises(TunedCheckpointError,
                       match=r'backbone\.prompt_embeddings: \(4, 10, 96\) '
                       r'vs model \(4, 5, 96\)'):
        load_tuned_checkpoint(build(cfg_long, base), ckpt)

    # a tensor nobody provides: listed, never left at random values
    broken = dict(ckpt, state_dict=dict(ckpt['state_dict']))
    del broken['state_dict']['decode_head.conv_seg.weight']
    with pytest.raises(TunedCheckpointError,
                       match=r'Left unloaded.*decode_head\.conv_seg\.weight'):
        load_tuned_checkpoint(build(cfg, base), broken)


def test_merge_and_extract_round_trip_bit_exactly(tmp_path):
    cfg = swin_cfg()
    base = write_base(cfg, tmp_path / 'swin.pth', drop=('norm0', ))
    model = trained_model(cfg, base)
    tuned = tuned_checkpoint(model)

    merged = merge_tuned(build(cfg, base), tuned)
    assert TUNED_META_KEY not in merged['meta']
    assert_same_state(merged['state_dict'], model.state_dict())
    again = extract_tuned(build(cfg, base), merged)
    assert_same_state(again['state_dict'], tuned['state_dict'])
    assert again['meta'][TUNED_META_KEY] == tuned['meta'][TUNED_META_KEY]
    assert_same_state(
        merge_tuned(build(cfg, base), again)['state_dict'],
        merged['state_dict'])


# --------------------------------------------------------------------------
# the parameter report
# --------------------------------------------------------------------------
def test_param_report_counts_match_a_direct_count():
    cfg = swin_cfg()
    model = build(cfg)
    row = model_report(model, 'swin', cfg.optim_wrapper, tasks=3)
    params = dict(model.named_parameters())
    trainable = {k for k, p in params.items() if p.requires_grad}
    assert row['total'] == sum(p.numel() for p in params.values())
    assert row['tunable'] == sum(params[k].numel() for k in trainable)
    assert row['prompts'] == row['prompts_tunable'] == sum(
        p.numel() for k, p in params.items() if 'prompt' in k)
    assert row['backbone_tunable'] == 0
    assert row['heads'] == row['heads_tunable'] == sum(
        p.numel() for k, p in params.items() if not k.startswith('backbone'))
    # per task: the trained tensors and every head buffer, fp32
    state = model.state_dict()
    expected = [k for k in state
                if not k.startswith('backbone.') or k in trainable]
    assert row['per_task_bytes'] == sum(
        state[k].numel() * (4 if state[k].is_floating_point() else 8)
        for k in expected)
    assert row['full_bytes'] == sum(
        v.numel() * (4 if v.is_floating_point() else 8)
        for v in state.values())
    assert row['storage_bytes'] == (row['full_bytes'] - row['per_task_bytes']
                                    + 3 * row['per_task_bytes'])
    # AdamW: two fp32 moments per trained parameter (+ step counters)
    assert row['resumable_bytes'] >= row['per_task_bytes'] + 2 * 4 * sum(
        params[k].numel() for k in trainable)


def test_param_report_for_the_vit_l_vpt_deep_row():
    row = param_report(str(REPO / VIT_L_VPT), tasks=10, optimizer=False)
    assert row['prompts'] == 24 * 10 * 1024
    assert row['tunable'] == row['prompts'] + row['heads']
    assert row['per_task_pct'] < 5.0


# --------------------------------------------------------------------------
# the paper's storage claim at real size
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_l_vpt_deep_task_file_is_under_5_percent_of_the_full_model(
        tmp_path):
    """SETR-PUP ViT-L VPT-deep: the per-task file (tuned tensors only, no
    optimizer state) against the full model's weights file (paper: 13.43M of
    318.31M parameters, 4.2%)."""
    cfg = load_cfg(VIT_L_VPT)
    model = MODELS.build(cfg.model)
    base = tmp_path / 'vit_large_p16.pth'
    torch.save({k: v for k, v in model.backbone.state_dict().items()
                if 'prompt' not in k}, base)
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(base))
    full = {'meta': {}, 'state_dict': model.state_dict()}
    torch.save(full, tmp_path / 'full.pth')
    full_bytes = (tmp_path / 'full.pth').stat().st_size
    (tmp_path / 'full.pth').unlink()

    tuned = extract_tuned(model, full)
    torch.save(tuned, tmp_path / 'task.pth')
    task_bytes = (tmp_path / 'task.pth').stat().st_size
    ratio = task_bytes / full_bytes
    print(f'ViT-L VPT-deep: task file {task_bytes:,} B, full model '
          f'{full_bytes:,} B, {100 * ratio:.2f}%')
    assert full_bytes > 1.2e9
    assert ratio <= 0.05
    assert set(tuned) == {'meta', 'state_dict'}
    assert [k for k in tuned['state_dict'] if k.startswith('backbone.')] == \
        ['backbone.prompt_embeddings']


# --------------------------------------------------------------------------
# end to end through tools/
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    root = synthetic_workspace(tmp_path_factory, 'tuned')
    torch.manual_seed(0)
    write_base(demo_cfg(), root / 'base.pth')
    return root


def base_options(base) -> list:
    return ['model.backbone.init_cfg._delete_=True',
            'model.backbone.init_cfg.type=Pretrained',
            f'model.backbone.init_cfg.checkpoint={base}']


def run_fails(cmd, cwd) -> str:
    with pytest.raises(AssertionError) as err:
        run(cmd, cwd=cwd)
    return str(err.value)


@pytest.fixture(scope='module')
def trained(workspace):
    """VPT-deep on the tiny ViT with base weights, 2 iterations."""
    work = workspace / 'vpt'
    log = run(train_cmd(VIT_DEMO, work, '--cfg-options', *short_schedule(2),
                        *base_options(workspace / 'base.pth')),
              cwd=workspace)
    return work, log


@pytest.mark.slow
def test_training_writes_tuned_only_checkpoints(workspace, trained):
    work, log = trained
    assert 'Tuned-only checkpoints:' in log
    ckpt = read(work / 'iter_2.pth')
    state = ckpt['state_dict']
    assert [k for k in state if k.startswith('backbone.')] == \
        ['backbone.prompt_embeddings']
    meta = ckpt['meta'][TUNED_META_KEY]
    assert meta['base_sha256'] == sha256(workspace / 'base.pth')
    assert len(meta['omitted']) == 52  # 4 layers x 12 + 4 embedding tensors
    # still resumable: optimizer (SGD momentum) and schedulers are there
    assert set(ckpt['optimizer']['state']) and ckpt['param_schedulers']

    merged = merge_tuned(build(demo_cfg(), workspace / 'base.pth'), ckpt)
    tuned_bytes = sum(v.numel() * v.element_size() for v in state.values())
    full_bytes = sum(v.numel() * v.element_size()
                     for v in merged['state_dict'].values())
    assert tuned_bytes < 0.4 * full_bytes, (tuned_bytes, full_bytes)


@pytest.mark.slow
def test_test_py_on_a_tuned_checkpoint_reproduces_validation(workspace,
                                                              trained):
    work, log = trained
    test_log = run(
        eval_cmd(VIT_DEMO, work / 'iter_2.pth', work / 'test',
                 '--cfg-options', *base_options(workspace / 'base.pth')),
        cwd=workspace)
    assert 'loaded 52 tensors from the base weights' in test_log
    assert len(metric_values(log)) == 1
    assert metric_values(test_log) == metric_values(log)


@pytest.mark.slow
def test_resume_from_a_tuned_checkpoint_continues(workspace, trained):
    work, _ = trained
    resumed = workspace / 'resumed'
    resumed.mkdir()
    first = read(work / 'iter_2.pth')
    log = run(
        train_cmd(VIT_DEMO, resumed, '--resume', work / 'iter_2.pth',
                  '--cfg-options', *short_schedule(4),
                  *base_options(workspace / 'base.pth')),
        cwd=workspace)
    assert 'resumed' in log.lower()
    assert 'Iter(train) [1/4]' not in log and 'Iter(train) [3/4]' in log
    last = read(resumed / 'iter_4.pth')
    assert last['meta']['iter'] == 4 and TUNED_META_KEY in last['meta']
    assert last['optimizer']['state']
    assert not torch.equal(first['state_dict']['backbone.prompt_embeddings'],
                           last['state_dict']['backbone.prompt_embeddings'])


@pytest.mark.slow
def test_changed_or_missing_base_weights_stop_tools(workspace, trained):
    work, _ = trained
    changed = workspace / 'base_changed.pth'
    state = torch.load(workspace / 'base.pth')
    state['layers.0.ln1.weight'] = state['layers.0.ln1.weight'] + 1
    torch.save(state, changed)
    cmd = eval_cmd(VIT_DEMO, work / 'iter_2.pth', work / 'test_changed',
                   '--cfg-options', *base_options(changed))
    message = run_fails(cmd, workspace)
    assert 'BaseWeightsMismatch' in message
    for text in (str(workspace / 'base.pth'), sha256(workspace / 'base.pth'),
                 str(changed), sha256(changed)):
        assert text in message

    log = run(cmd + ['--ignore-base-hash'], cwd=workspace)
    assert 'Base weights mismatch' in log and 'Loading anyway' in log
    assert metric_values(log)

    missing = workspace / 'pretrain/missing.pth'
    message = run_fails(
        eval_cmd(VIT_DEMO, work / 'iter_2.pth', work / 'test_missing',
                 '--cfg-options', *base_options(missing)), workspace)
    assert 'FileNotFoundError' in message
    assert re.search(r'`model\.backbone\.init_cfg\.checkpoint` refers to a '
                     r'checkpoint that does not exist: .*missing\.pth',
                     message)


@pytest.mark.slow
def test_merge_and_extract_tools_round_trip(workspace, trained):
    work, _ = trained
    base = workspace / 'base.pth'
    merged = workspace / 'merged.pth'
    # the model comes from the config stored in the checkpoint
    run([PYTHON, REPO / 'tools/merge_tuned.py', base, work / 'iter_2.pth',
         merged], cwd=workspace)
    extracted = workspace / 'extracted.pth'
    run([PYTHON, REPO / 'tools/extract_tuned.py', merged, extracted,
         '--config', REPO / VIT_DEMO, '--base', base], cwd=workspace)

    tuned = read(work / 'iter_2.pth')
    full = read(merged)['state_dict']
    again = read(extracted)
    assert set(again) == {'meta', 'state_dict'}  # no optimizer state
    assert_same_state(again['state_dict'], tuned['state_dict'])
    assert again['meta'][TUNED_META_KEY] == tuned['meta'][TUNED_META_KEY]
    base_state = torch.load(base)
    for key, value in full.items():
        expected = tuned['state_dict'].get(key)
        if expected is None:
            expected = base_state[key[len('backbone.'):]]
        assert torch.equal(value, expected), key


@pytest.mark.slow
def test_full_fine_tuning_still_writes_full_checkpoints(workspace):
    work = workspace / 'full'
    log = run(train_cmd(VIT_DEMO, work, '--cfg-options', *short_schedule(1),
                        'model.backbone.prompt_length=0',
                        'model.backbone.frozen_exclude=[all]',
                        'model.backbone.frozen_eval=False',
                        *base_options(workspace / 'base.pth')),
              cwd=workspace)
    assert 'Checkpoints stay full' in log
    ckpt = read(work / 'iter_1.pth')
    assert TUNED_META_KEY not in ckpt['meta']
    cfg = demo_cfg()
    cfg.model.backbone.update(prompt_length=0, frozen_exclude=['all'])
    assert set(ckpt['state_dict']) == set(build(cfg).state_dict())


@pytest.mark.slow
def test_param_report_cli(workspace):
    out = run([PYTHON, REPO / 'tools/analysis/param_report.py',
               REPO / VIT_DEMO, '--format', 'json', '--tasks', '4'],
              cwd=workspace)
    rows = json.loads(out[out.index('['):])
    model = build(demo_cfg())
    assert rows[0]['total'] == sum(p.numel() for p in model.parameters())
    assert rows[0]['tunable'] == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    assert rows[0]['tasks'] == 4
    table = format_report(rows).splitlines()
    assert table[0].startswith('| config | total params | tunable params |')
    assert table[2].startswith(
        '| `setr_vit-tiny_vpt-deep_synthetic-ade20k.py` | 0.70M | 0.23M | '
        '32.51% | 0 / 3.8k / 0.22M |')


def test_split_tuned_without_a_base_is_the_model_only_estimate():
    cfg = demo_cfg()
    model = build(cfg)
    split = split_tuned(model.state_dict(), model)
    assert [k for k in split.tuned if k.startswith('backbone.')] == \
        ['backbone.prompt_embeddings']
