"""Task files (tuned-only checkpoints) through every loading path, and
checkpoints that do not fit the model.

A task file written by ``tools/train.py`` loads through mmseg's
``init_model`` and ``MMSegInferencer`` and mmengine's ``load_checkpoint`` /
``Runner.load_checkpoint`` (without the project's hook) to exactly the state
the project's own loader gives, or stops naming its base file; it is never a
random backbone. A checkpoint of another architecture, prompt length or
class count stops ``tools/test.py``, ``load_from`` and ``--resume`` with the
offending keys and shapes, unless ``--load-partial`` asks for what fits.
"""
import copy
import hashlib
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint
from mmseg.apis import MMSegInferencer, init_model

from mmseg_vpt.checkpoint import (BASE_RECORD_KEY, BASE_WEIGHTS_ENV,
                                  TUNED_META_KEY, BaseWeightsMismatch,
                                  CheckpointMismatch, FrozenWeightsNotLoaded,
                                  load_tuned_checkpoint, merge_tuned,
                                  model_from_config, plan_tuned)
from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k

from .tools_helpers import (PYTHON, REPO, eval_cmd, metric_values, no_workers,
                            read_checkpoint, run, run_fails, short_schedule,
                            train_cmd)
from .vpt_helpers import randomize_

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
SWIN_DEMO = 'configs/demo/upernet_swin-tiny_vpt-deep_synthetic-ade20k.py'
CONFIGS = {'vit': VIT_DEMO, 'swin': SWIN_DEMO}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def write_base(config: str, path: Path) -> Path:
    """Base weights for ``config``'s backbone: random, every weight away
    from its default, saved as a plain state dict."""
    cfg = Config.fromfile(str(REPO / config))
    cfg.model.backbone.update(prompt_length=0, frozen_exclude=['all'],
                              init_cfg=None)
    backbone = model_from_config(cfg).backbone
    backbone.init_weights()
    randomize_(backbone, std=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(backbone.state_dict(), path)
    return path


def with_base(config: str, base: Path) -> Config:
    cfg = Config.fromfile(str(REPO / config))
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint=str(base))
    return cfg


def reference(config: str, ckpt: Path, base: Path):
    """The project's own loader on the model of ``config``."""
    model = model_from_config(str(REPO / config), base_path=str(base))
    load_tuned_checkpoint(model, str(ckpt))
    return model.eval()


def logits(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x, mode='tensor')


def assert_same_model(model, ref) -> None:
    """Same state, bit for bit, and the same logits."""
    a, b = model.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(logits(model, x), logits(ref, x))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_options(base) -> list:
    return ['model.backbone.init_cfg._delete_=True',
            'model.backbone.init_cfg.type=Pretrained',
            f'model.backbone.init_cfg.checkpoint={base}']


def in_process_task_file(tmp_path: Path, base: Path) -> Path:
    """A task file of the demo ViT written in-process (prompts and heads
    moved off their initial values), next to its base file."""
    model = model_from_config(with_base(VIT_DEMO, base))
    model.init_weights()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    plan = plan_tuned(model, require=True)
    path = tmp_path / 'task.pth'
    torch.save(plan.apply({'meta': {}, 'state_dict': model.state_dict()}),
               path)
    return path


# --------------------------------------------------------------------------
# task files from tools/train.py
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('taskfiles')
    make_synthetic_ade20k(root / 'data/synthetic_ade20k', num_train=4,
                          num_val=2, img_size=64, show_progress=False)
    torch.manual_seed(0)
    for arch, config in CONFIGS.items():
        write_base(config, root / f'bases/{arch}.pth')
    return root


@pytest.fixture(scope='module')
def task_files(workspace) -> dict:
    """One training iteration of the ViT and Swin demos on their base files,
    named relative to the training directory (as a user's config would),
    so loading from elsewhere has to resolve the recorded path. Also the
    same training checkpoints made full (the base merged in, optimizer
    state kept), as a run without base weights writes them."""
    files = {}
    for arch, config in CONFIGS.items():
        work = workspace / arch
        run(train_cmd(config, work, '--cfg-options', *short_schedule(1),
                      *base_options(f'bases/{arch}.pth')), cwd=workspace)
        files[arch] = work / 'iter_1.pth'
        tuned = read_checkpoint(files[arch])
        merged = merge_tuned(
            model_from_config(str(REPO / config),
                              base_path=str(workspace / f'bases/{arch}.pth')),
            tuned)
        files[f'{arch}_full'] = work / 'full.pth'
        torch.save(dict(tuned, **merged), files[f'{arch}_full'])
    return files


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['vit', 'swin'])
def test_mmseg_init_model_on_a_task_file_equals_the_projects_loader(
        workspace, task_files, arch):
    ckpt = task_files[arch]
    base = workspace / f'bases/{arch}.pth'
    saved = read_checkpoint(ckpt)
    meta = saved['meta'][TUNED_META_KEY]
    assert meta['base_checkpoint'] == f'bases/{arch}.pth'
    assert not (Path.cwd() / meta['base_checkpoint']).exists()
    # mmseg's init_model clears the backbone's init_cfg: the backbone finds
    # its base weights from the checkpoint alone
    model = init_model(str(REPO / CONFIGS[arch]), str(ckpt), device='cpu')
    assert_same_model(model, reference(CONFIGS[arch], ckpt, base))
    # from its record, in the state dict's torch metadata
    assert meta['version'] == 2
    record = saved['state_dict']._metadata['backbone'][BASE_RECORD_KEY]
    assert record['sha256'] == sha256(base)
    assert record['abspath'] == str(base)


@pytest.mark.slow
def test_mmseg_inferencer_on_a_task_file_equals_the_projects_loader(
        workspace, task_files):
    inferencer = MMSegInferencer(model=str(REPO / VIT_DEMO),
                                 weights=str(task_files['vit']),
                                 device='cpu', show_progress=False)
    assert_same_model(
        inferencer.model,
        reference(VIT_DEMO, task_files['vit'], workspace / 'bases/vit.pth'))


@pytest.mark.slow
def test_mmengine_load_checkpoint_and_runner_without_the_hook_load_exactly(
        workspace, task_files, tmp_path):
    ref = reference(SWIN_DEMO, task_files['swin'],
                    workspace / 'bases/swin.pth')
    model = model_from_config(str(REPO / SWIN_DEMO))
    load_checkpoint(model, str(task_files['swin']), map_location='cpu')
    assert_same_model(model, ref)

    cfg = Config.fromfile(str(REPO / SWIN_DEMO))
    cfg.custom_hooks = []  # no TunedCheckpointHook: mmengine alone
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.load_checkpoint(str(task_files['swin']))
    assert_same_model(runner.model, ref)


# --------------------------------------------------------------------------
# the base file: moved, replaced, or not recorded (in-process)
# --------------------------------------------------------------------------
def test_moved_base_file_is_an_error_naming_it_until_pointed_at(
        tmp_path, monkeypatch):
    base = write_base(VIT_DEMO, tmp_path / 'pretrain/vit.pth')
    ckpt = in_process_task_file(tmp_path, base)
    ref = reference(VIT_DEMO, ckpt, base)
    moved = tmp_path / 'elsewhere/vit.pth'
    moved.parent.mkdir()
    shutil.move(base, moved)

    with pytest.raises(FileNotFoundError) as err:
        init_model(str(REPO / VIT_DEMO), str(ckpt), device='cpu')
    for text in (str(base), sha256(moved), BASE_WEIGHTS_ENV):
        assert text in str(err.value)

    # the environment variable names the file, or a folder holding it
    for target in (moved, moved.parent):
        monkeypatch.setenv(BASE_WEIGHTS_ENV, str(target))
        assert_same_model(
            init_model(str(REPO / VIT_DEMO), str(ckpt), device='cpu'), ref)
    # a wrong explicit setting is not silently replaced by another file
    monkeypatch.setenv(BASE_WEIGHTS_ENV, str(tmp_path / 'nothing.pth'))
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        init_model(str(REPO / VIT_DEMO), str(ckpt), device='cpu')


def test_another_file_at_the_recorded_path_is_an_error_naming_both_hashes(
        tmp_path):
    base = write_base(VIT_DEMO, tmp_path / 'vit.pth')
    ckpt = in_process_task_file(tmp_path, base)
    recorded = sha256(base)
    write_base(VIT_DEMO, base)  # other random weights, same name
    with pytest.raises(BaseWeightsMismatch) as err:
        init_model(str(REPO / VIT_DEMO), str(ckpt), device='cpu')
    for text in (str(base), recorded, sha256(base)):
        assert text in str(err.value)


def test_task_file_without_its_record_is_refused_not_a_random_backbone(
        tmp_path):
    """A format-1 file (written before the record existed), or one whose
    state dict was rebuilt without its metadata, cannot tell mmseg's
    loaders its base: they stop instead of leaving the frozen weights
    random. The project's tools still load format 1 from the meta."""
    base = write_base(VIT_DEMO, tmp_path / 'vit.pth')
    ckpt = read_checkpoint(in_process_task_file(tmp_path, base))
    ref = reference(VIT_DEMO, tmp_path / 'task.pth', base)

    old = copy.deepcopy(ckpt)
    old['meta'][TUNED_META_KEY]['version'] = 1
    old['meta'][TUNED_META_KEY].pop('base_abspath', None)
    # as format 1 wrote it: a new OrderedDict, no torch metadata
    old['state_dict'] = OrderedDict(old['state_dict'].items())
    torch.save(old, tmp_path / 'v1.pth')
    rebuilt = dict(ckpt, state_dict={k: v for k, v in
                                     ckpt['state_dict'].items()})
    torch.save(rebuilt, tmp_path / 'rebuilt.pth')

    for name in ('v1.pth', 'rebuilt.pth'):
        with pytest.raises(FrozenWeightsNotLoaded) as err:
            init_model(str(REPO / VIT_DEMO), str(tmp_path / name),
                       device='cpu')
        assert 'lacks 52 of its frozen weights' in str(err.value)
        assert 'layers.0.ln1.weight' in str(err.value)
    model = model_from_config(with_base(VIT_DEMO, base))
    load_tuned_checkpoint(model, str(tmp_path / 'v1.pth'))
    assert_same_model(model, ref)


def test_full_checkpoints_and_plain_backbone_weights_load_as_before(
        tmp_path):
    base = write_base(VIT_DEMO, tmp_path / 'vit.pth')
    ckpt = in_process_task_file(tmp_path, base)
    full = merge_tuned(model_from_config(with_base(VIT_DEMO, base)),
                       str(ckpt))
    torch.save(full, tmp_path / 'full.pth')
    assert_same_model(
        init_model(str(REPO / VIT_DEMO), str(tmp_path / 'full.pth'),
                   device='cpu'), reference(VIT_DEMO, ckpt, base))
    # the backbone alone, from its own plain state dict (no prompts in it)
    model = model_from_config(str(REPO / VIT_DEMO))
    missing, unexpected = model.backbone.load_state_dict(torch.load(base),
                                                         strict=False)
    assert missing == ['prompt_embeddings'] and not unexpected


# --------------------------------------------------------------------------
# checkpoints that do not fit the model
# --------------------------------------------------------------------------
def test_another_class_count_or_prompt_length_is_an_error_listing_shapes(
        tmp_path):
    base = write_base(VIT_DEMO, tmp_path / 'vit.pth')
    ckpt = in_process_task_file(tmp_path, base)
    full = tmp_path / 'full.pth'
    torch.save(merge_tuned(model_from_config(with_base(VIT_DEMO, base)),
                           str(ckpt)), full)
    for path in (ckpt, full):
        cfg = with_base(VIT_DEMO, base)
        cfg.model.decode_head.num_classes = 10
        with pytest.raises(
                CheckpointMismatch,
                match=r'decode_head\.conv_seg\.weight: \(150, 64, 1, 1\) vs '
                r'model \(10, 64, 1, 1\).*--load-partial'):
            load_tuned_checkpoint(model_from_config(cfg), str(path))

    # partial: what fits loads, the rest keeps the config's initialisation
    cfg = with_base(VIT_DEMO, base)
    cfg.model.backbone.prompt_length = 5
    model = model_from_config(cfg)
    load_tuned_checkpoint(model, str(full), partial=True)
    ref = reference(VIT_DEMO, ckpt, base)
    state, ref_state = model.state_dict(), ref.state_dict()
    assert all(torch.equal(state[k], ref_state[k]) for k in state
               if k != 'backbone.prompt_embeddings')


@pytest.mark.slow
@pytest.mark.parametrize('ckpt, config', [('vit', SWIN_DEMO),
                                          ('swin_full', VIT_DEMO)],
                         ids=['tuned_vit_into_swin', 'full_swin_into_vit'])
def test_test_py_refuses_a_checkpoint_of_another_architecture(
        workspace, task_files, ckpt, config):
    base = 'swin' if config == SWIN_DEMO else 'vit'
    message = run_fails(
        eval_cmd(config, task_files[ckpt], workspace / f'test_{ckpt}',
                 '--cfg-options', *base_options(f'bases/{base}.pth'),
                 *no_workers()), workspace)
    assert 'CheckpointMismatch' in message
    assert 'does not fit the model' in message
    expected = {
        'vit': ('Not in the model: backbone.prompt_embeddings, '
                'decode_head.norm.weight,',
                'Omitted as base weights but not in the model (another '
                'architecture?): backbone.cls_token, backbone.pos_embed,',
                'Left unloaded (neither in the checkpoint nor provided by '
                'the base weights): backbone.patch_embed.norm.weight,'),
        'swin_full': (
            'Shape mismatches (checkpoint vs model): '
            'backbone.patch_embed.projection.weight: (32, 3, 4, 4) vs model '
            '(96, 3, 8, 8), backbone.patch_embed.projection.bias: (32,) vs '
            'model (96,).',
            'Not in the model: backbone.patch_embed.norm.weight,',
            'Left unloaded (neither in the checkpoint nor provided by the '
            'base weights): backbone.cls_token, backbone.pos_embed, '
            'backbone.prompt_embeddings, backbone.layers.0.ln1.weight,')
    }[ckpt]
    for text in expected:
        assert text in message
    assert 'Iter(test)' not in message


@pytest.mark.slow
def test_test_py_refuses_another_prompt_length_unless_load_partial(
        workspace, task_files):
    shapes = ('Shape mismatches (checkpoint vs model): '
              'backbone.prompt_embeddings: (4, 10, 96) vs model (4, 5, 96).')
    p5 = ['--cfg-options', 'model.backbone.prompt_length=5',
          *base_options('bases/vit.pth'), *no_workers()]
    message = run_fails(eval_cmd(VIT_DEMO, task_files['vit_full'],
                                 workspace / 'test_p5', *p5), workspace)
    assert shapes in message and 'Iter(test)' not in message

    log = run(eval_cmd(VIT_DEMO, task_files['vit'], workspace / 'test_p5',
                       '--load-partial', *p5), cwd=workspace)
    assert 'Partial load of tuned checkpoint' in log
    assert 'keep the values the config initialises' in log
    assert shapes in log
    assert len(metric_values(log)) == 1


@pytest.mark.slow
def test_load_from_and_resume_refuse_another_prompt_length(
        workspace, task_files):
    shapes = ('Shape mismatches (checkpoint vs model): '
              'backbone.prompt_embeddings: (4, 10, 96) vs model (4, 5, 96).')
    p5 = ['model.backbone.prompt_length=5', *base_options('bases/vit.pth')]
    full = task_files['vit_full']
    message = run_fails(
        train_cmd(VIT_DEMO, workspace / 'load_p5', '--cfg-options',
                  *short_schedule(1), f'load_from={full}', *p5), workspace)
    assert shapes in message and 'Iter(train)' not in message

    message = run_fails(
        train_cmd(VIT_DEMO, workspace / 'resume_p5', '--resume', full,
                  '--cfg-options', *short_schedule(2), *p5), workspace)
    assert shapes in message and 'Iter(train)' not in message

    message = run_fails(
        train_cmd(VIT_DEMO, workspace / 'resume_partial', '--resume',
                  '--load-partial'), workspace)
    assert '--load-partial does not apply to --resume' in message


@pytest.mark.slow
def test_load_from_with_load_partial_trains_on_what_fits(workspace,
                                                         task_files):
    work = workspace / 'load_partial'
    log = run(train_cmd(VIT_DEMO, work, '--load-partial', '--cfg-options',
                        *short_schedule(1), f'load_from={task_files["vit"]}',
                        'model.backbone.prompt_length=5',
                        # learning rate 0: the weights stay as loaded
                        'optim_wrapper.optimizer.lr=0',
                        'param_scheduler.0.eta_min=0',
                        *base_options('bases/vit.pth')), cwd=workspace)
    assert 'Partial load of tuned checkpoint' in log
    assert 'backbone.prompt_embeddings: (4, 10, 96) vs model (4, 5, 96)' \
        in log
    saved = read_checkpoint(work / 'iter_1.pth')['state_dict']
    source = read_checkpoint(task_files['vit'])['state_dict']
    assert saved['backbone.prompt_embeddings'].shape == (4, 5, 96)
    weights = [k for k in source if k.endswith('weight') and
               not k.startswith('backbone.')]
    assert weights and all(torch.equal(saved[k], source[k]) for k in weights)


@pytest.mark.slow
def test_infer_py_loads_partially_on_request(workspace, task_files):
    images = workspace / \
        'data/synthetic_ade20k/ADEChallengeData2016/images/validation'
    out = workspace / 'infer_p5'
    log = run([PYTHON, REPO / 'tools/infer.py', REPO / VIT_DEMO,
               task_files['vit'], images, '--out-dir', out, '--load-partial',
               '--cfg-options', 'model.backbone.prompt_length=5',
               *base_options('bases/vit.pth')], cwd=workspace)
    assert 'Partial load of' in log
    assert 'backbone.prompt_embeddings: (4, 10, 96) vs model (4, 5, 96)' \
        in log
    assert len(list((out / 'labels').iterdir())) == 2
