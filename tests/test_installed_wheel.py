"""The wheel, installed outside the checkout, works on its own.

The test builds a wheel from the working tree's files (those a fresh clone
plus the uncommitted work would have), installs it into a temporary folder
with ``pip install --target`` and runs this file as a script from another
temporary folder, with that folder first on ``PYTHONPATH`` (the
environment supplies the dependencies). The script, on the installed
package only:

* imports ``mmseg_vpt`` without the HTTP stack or matplotlib, then every
  module of it;
* builds every model class the package registers (mmseg's and mmpretrain's
  registries) from a small config and runs it;
* saves a tuned-only task file, loads it with mmseg's ``init_model`` and
  gets the in-process model's logits; serves two tasks and an ensemble with
  ``MultiTaskSegmentor`` / ``PromptEnsembleSegmentor``;
* runs a VTAB sweep and renders an FGVC one with the configs and tools the
  wheel carries (``mmseg_vpt/.mim``).

The test then compares what the script saved with the checkout's code:
the same small models give bit-identical outputs, and the configs the sweep
wrote resolve to the checkout's.
"""
import copy
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HEAVY = ('fastapi', 'uvicorn', 'matplotlib')
SUMMARY = 'summary.json'
OUTPUTS = 'outputs.pt'

# --------------------------------------------------------------------------
# the small models (shared by the script and the in-process comparison)
# --------------------------------------------------------------------------
VIT = dict(type='VPTVisionTransformer', img_size=(32, 32), patch_size=8,
           embed_dims=32, num_layers=2, num_heads=2, out_indices=(0, 1),
           prompt_length=3, init_cfg=None)
VIT_PAIR = dict(VIT, output_cls_token=True, final_norm=True,
                out_indices=(1, ))
SIDE = dict(channels=(8, 16), kernel_sizes=(3, 3), strides=(2, 2),
            paddings=(1, 1), pool_after=())
CONV = dict(img_size=32, prompt_pad=4, out_indices=(0, 1, 2, 3))

#: registered class -> (registry scope, config, input); the input is
#: 'image' (2 x 3 x 32 x 32), 'vit_outputs' (VIT_PAIR's outputs),
#: 'vector' ((2, 32) features) or None (a module without forward).
SMALL = {
    'VPTVisionTransformer': ('mmseg', VIT, 'image'),
    'VPTSwinTransformer': ('mmseg', dict(
        type='VPTSwinTransformer', pretrain_img_size=32, embed_dims=16,
        depths=[2, 2], num_heads=[1, 2], window_size=4, out_indices=(0, 1),
        strides=(4, 2), prompt_length=2, init_cfg=None), 'image'),
    'VPTTimmViT': ('mmseg', dict(
        type='VPTTimmViT', model_name='vit_base_patch16_224',
        timm_kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=2,
                         num_heads=2), out_indices=(0, 1), prompt_length=3),
        'image'),
    'VPTResNet': ('mmseg', dict(type='VPTResNet', depth=18, **CONV),
                  'image'),
    'VPTResNetV1c': ('mmseg', dict(type='VPTResNetV1c', depth=18,
                                   base_channels=8, stem_channels=8, **CONV),
                     'image'),
    'VPTConvNeXt': ('mmseg', dict(
        type='VPTConvNeXt',
        arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64]),
        gap_before_final_norm=False, **CONV), 'image'),
    'SideCNN': ('mmseg', dict(type='SideCNN', **SIDE), 'image'),
    'SidetuneBackbone': ('mmseg', dict(
        type='SidetuneBackbone', backbone=dict(VIT, prompt_length=0,
                                               frozen_exclude=[]),
        side=SIDE, side_pool=2, alpha_init=0.5, probe_size=32), 'image'),
    'TokenPooling': ('mmseg', dict(type='TokenPooling', pool='mean'),
                     'vit_outputs'),
    'TaskPrompts': ('mmseg', dict(
        type='TaskPrompts', stage_dims=[32], stage_depths=[2],
        init_patch_size=8, init_dims=3, prompt_length=3), None),
    'MLPClsHead': ('mmpretrain', dict(type='MLPClsHead', num_classes=5,
                                      in_channels=32), 'vector'),
}
#: registered classes built from task files instead (below)
FROM_TASK_FILES = ('PromptEnsembleSegmentor', )


def registry(scope: str):
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    if scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS


def small_input(kind: str) -> tuple:
    g = torch.Generator().manual_seed(1)
    if kind == 'image':
        return (torch.randn(2, 3, 32, 32, generator=g), )
    if kind == 'vector':
        return ((torch.randn(2, 32, generator=g), ), )
    vit = registry('mmseg').build(copy.deepcopy(VIT_PAIR))
    vit.init_weights()
    with torch.no_grad():
        return (vit.eval()(torch.randn(2, 3, 32, 32, generator=g)), )


def flat(value, prefix: str, out: Dict[str, torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        out[prefix] = value.detach().clone()
    else:
        for i, v in enumerate(value):
            flat(v, f'{prefix}.{i}', out)


def small_model_outputs(name: str) -> Dict[str, torch.Tensor]:
    """Build ``SMALL[name]`` (seeded), initialise it and run it: its state
    and outputs, by name."""
    scope, cfg, feed = SMALL[name]
    torch.manual_seed(0)
    model = registry(scope).build(copy.deepcopy(cfg))
    if hasattr(model, 'init_weights'):  # (TokenPooling has no weights)
        model.init_weights()
    model.eval()
    out = {f'state.{k}': v.clone() for k, v in model.state_dict().items()}
    if feed is not None:
        with torch.no_grad():
            flat(model(*small_input(feed)), 'out', out)
    return out


def registered_models() -> Dict[str, str]:
    """Every model class of mmseg_vpt in mmengine's MODELS registry and
    its children (mmseg's, mmpretrain's): name -> module."""
    from mmengine.registry import MODELS
    found, todo = {}, [MODELS]
    while todo:
        reg = todo.pop()
        todo.extend(reg.children.values())
        for name, cls in reg.module_dict.items():
            module = getattr(cls, '__module__', '')
            if module.startswith('mmseg_vpt.'):
                found[name] = module
    return found


# --------------------------------------------------------------------------
# the script (runs on the installed package)
# --------------------------------------------------------------------------
def check_imports(site: Path) -> dict:
    import mmseg_vpt
    where = Path(mmseg_vpt.__file__).resolve()
    assert where.is_relative_to(site.resolve()), where
    heavy = sorted(m for m in HEAVY if m in sys.modules)
    assert not heavy, f'import mmseg_vpt imported {heavy}'
    modules = [m.name for m in pkgutil.walk_packages(mmseg_vpt.__path__,
                                                     'mmseg_vpt.')]
    for module in modules:
        importlib.import_module(module)
    return dict(file=str(where), heavy=heavy, modules=modules)


def check_models(out: Path) -> dict:
    found = registered_models()
    missing = sorted(set(found) - set(SMALL) - set(FROM_TASK_FILES))
    assert not missing, f'no small config for registered {missing}'
    outputs = {}
    for name in SMALL:
        for key, value in small_model_outputs(name).items():
            assert torch.isfinite(value.float()).all(), (name, key)
            outputs[f'{name}/{key}'] = value
    torch.save(outputs, out / OUTPUTS)
    return dict(registered=found, outputs=len(outputs))


def demo_config(mim: Path, base: Path, **backbone):
    from mmengine.config import Config
    cfg = Config.fromfile(
        str(mim / 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'))
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint=str(base))
    cfg.model.backbone.update(backbone)
    return cfg


def write_task_file(cfg, path: Path, seed: int, classes: int):
    """A tuned-only task file of ``cfg`` (its trainable tensors moved off
    their initial values by 0.1 N(0, 1)) and the in-process model it was
    saved from."""
    from mmseg_vpt.checkpoint import plan_tuned
    cfg.model.decode_head.num_classes = classes
    cfg.model.auxiliary_head = None
    torch.manual_seed(seed)
    model = registry('mmseg').build(copy.deepcopy(cfg.model))
    model.init_weights()  # loads the base file
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    meta = dict(cfg=cfg.pretty_text, dataset_meta=dict(
        classes=[f'c{i}' for i in range(classes)],
        palette=[[i, i, i] for i in range(classes)]))
    torch.save(plan_tuned(model, require=True).apply(
        {'meta': meta, 'state_dict': model.state_dict()}), path)
    return model.eval()


def check_task_files(work: Path, mim: Path) -> dict:
    import numpy as np
    from mmseg.apis import init_model

    from mmseg_vpt.apis import inference, init_segmentor
    from mmseg_vpt.apis.inference import inference_pipeline
    from mmseg_vpt.checkpoint.synthetic import random_base_state
    from mmseg_vpt.serving import MultiTaskSegmentor
    base = work / 'base.pth'
    torch.save(random_base_state(demo_config(mim, base), seed=0), base)
    configs = {'deep': demo_config(mim, base),
               'shallow': demo_config(mim, base, prompt_length=3,
                                      prompt_layers='shallow'),
               'deep_seed2': demo_config(mim, base)}
    files, models = {}, {}
    for seed, (name, cfg) in enumerate(configs.items()):
        files[name] = work / f'{name}.pth'
        models[name] = write_task_file(cfg, files[name], seed,
                                       classes=7 if seed == 1 else 5)
    stored = torch.load(files['deep'], map_location='cpu',
                        weights_only=False)['state_dict']
    trainable = {n for n, p in models['deep'].named_parameters()
                 if p.requires_grad}
    assert trainable <= set(stored) and not any(
        k.startswith('backbone.layers.') for k in stored), sorted(stored)

    # mmseg's init_model on the task file: the in-process model's logits
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    loaded = init_model(copy.deepcopy(configs['deep']), str(files['deep']),
                        device='cpu')
    with torch.no_grad():
        got = loaded.eval()(x, mode='tensor')
        want = models['deep'](x, mode='tensor')
    assert torch.equal(got, want), float((got - want).abs().max())

    # two tasks in one batch, and an ensemble, on one shared backbone
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
              for _ in range(3)]
    served = MultiTaskSegmentor(copy.deepcopy(configs['deep']))
    served.add_task('deep', str(files['deep']))
    served.add_task('shallow', str(files['shallow']))
    served.add_task('both', [str(files['deep']), str(files['deep_seed2'])])
    names = ['deep', 'shallow', 'both']
    results = served.predict(images, names)
    refs = {n: init_segmentor(copy.deepcopy(configs[n]), str(files[n]))
            for n in ('deep', 'shallow', 'deep_seed2')}

    def assert_predicts(got, img, members: List[str], what: str) -> float:
        """``got`` is its one member's logits (1e-5 of their scale) or its
        members' mean softmax (1e-5), and its argmax; returns the error."""
        want = [inference(refs[m], img).seg_logits.data for m in members]
        if len(members) == 1:
            error = float((got.seg_logits.data - want[0]).abs().max() /
                          want[0].abs().max())
            labels = want[0].argmax(0)
        else:
            probs = torch.stack([w.softmax(0) for w in want]).mean(0)
            error = float((got.seg_logits.data.exp() - probs).abs().max())
            labels = probs.argmax(0)
        assert error <= 1e-5, (what, error)
        assert torch.equal(got.pred_sem_seg.data[0], labels), what
        return error

    ensemble = ['deep', 'deep_seed2']
    errors = {name: assert_predicts(got, img, ensemble if name == 'both'
                                    else [name], name)
              for img, name, got in zip(images, names, results)}
    assert [r.seg_logits.data.shape[0] for r in results] == [5, 7, 5]

    # the same ensemble as a registered segmentor (tools/test.py's path)
    cfg = copy.deepcopy(configs['deep'])
    model = registry('mmseg').build(dict(
        type='PromptEnsembleSegmentor', segmentor=cfg.model,
        checkpoints=[str(files[m]) for m in ensemble],
        test_pipeline=cfg.test_pipeline))
    data = inference_pipeline(cfg)(dict(img=images[2]))
    got = model.test_step(dict(inputs=[data['inputs']],
                               data_samples=[data['data_samples']]))[0]
    errors['PromptEnsembleSegmentor'] = assert_predicts(
        got, images[2], ensemble, 'PromptEnsembleSegmentor')
    return dict(errors=errors, stored_keys=len(stored))


def check_sweeps(work: Path, mim: Path) -> dict:
    from mmengine.config import Config

    from mmseg_vpt.datasets.synthetic_vtab import make_synthetic_vtab
    from mmseg_vpt.fgvc.benchmark import FGVC
    from mmseg_vpt.vtab.sweep import SweepSettings, run_sweep

    # a VTAB sweep, run: one grid job and one final run of a generated
    # task, on a tiny ViT (its base file from the registry), with the
    # wheel's configs and tools (no folders given)
    data = work / 'vtab'
    make_synthetic_vtab(data, task='shapes', num_classes=3, num_train=32,
                        num_val=16, num_test=16, img_size=32)
    torch.manual_seed(0)
    vit = registry('mmseg').build(dict(
        type='VisionTransformer', img_size=(32, 32), patch_size=8,
        embed_dims=48, num_layers=2, num_heads=3, patch_bias=True,
        final_norm=True, norm_cfg=dict(type='LN', eps=1e-6)))
    vit.init_weights()
    torch.save(vit.state_dict(), work / 'tiny_vit.pth')
    options = [
        'model.backbone.img_size=(32,32)', 'model.backbone.patch_size=8',
        'model.backbone.embed_dims=48', 'model.backbone.num_layers=2',
        'model.backbone.num_heads=3', 'model.head.in_channels=48',
        f'model.backbone.init_cfg.checkpoint={work / "tiny_vit.pth"}',
        'train_dataloader.batch_size=16', 'train_cfg.max_epochs=2',
        'train_cfg.val_interval=2', 'param_scheduler.0.end=1',
        'param_scheduler.1.begin=1', 'param_scheduler.1.end=2',
        'param_scheduler.1.T_max=1'] + [
        f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
        for key in ('num_workers=0', 'persistent_workers=False',
                    'dataset.pipeline.1.scale=(32,32)')]
    log: List[str] = []
    failed = run_sweep(SweepSettings(
        work_dir=str(work / 'vtab_sweep'), tasks=['shapes'], num_classes=3,
        data_root=str(data), lrs=[1.0], wds=[0.0], seeds=[0], gpus=0,
        cfg_options=options), log=log.append)
    assert failed == 0, '\n'.join(log)
    task = work / 'vtab_sweep/vpt-deep/shapes'
    final = json.loads((task / 'final/seed0/result.json').read_text())
    train_log = (task / 'final/seed0/train.log').read_text()
    assert train_log.split()[2] == str(mim / 'tools/train.py'), train_log[:300]
    assert 0 <= final['top1'] <= 100
    table = (work / 'vtab_sweep/vpt-deep/results.md').read_text()
    assert f'{final["top1"]:.2f} ± 0.00 (n=1)' in table

    # an FGVC sweep, rendered by the wheel's tool: the written configs
    # resolve (the test compares them with the checkout's)
    lines = subprocess.run(
        [sys.executable, str(mim / 'tools/fgvc_sweep.py'), '--dry-run',
         '--method', 'linear', '--tasks', 'cub', '--lrs', '1', '--wds', '0',
         '--seeds', '0', '--gpus', '0', '--work-dir', str(work / 'fgvc')],
        check=True, capture_output=True, text=True).stdout.splitlines()
    commands = [line.split() for line in lines if 'train.py' in line]
    assert commands[0][1] == str(mim / 'tools/train.py'), lines
    rendered = {}
    for method in ('linear', 'vpt-deep'):
        config = work / 'fgvc' / method / 'cub/config.py'
        if method == 'vpt-deep':  # through the library, the checked-in one
            run_sweep(SweepSettings(work_dir=str(work / 'fgvc'),
                                    tasks=['cub'], lrs=[1.0], wds=[0.0],
                                    seeds=[0], dry_run=True,
                                    benchmark=FGVC), log=log.append)
        assert str(mim / 'configs/fgvc') in config.read_text()
        rendered[method] = Config.fromfile(str(config)).pretty_text
    return dict(vtab_top1=final['top1'], fgvc=rendered)


def main(site: str, out: str) -> None:
    torch.set_num_threads(1)  # as the test process (bitwise comparison)
    site_dir, out_dir = Path(site), Path(out)
    summary = dict(imports=check_imports(site_dir))
    import mmseg_vpt
    mim = Path(mmseg_vpt.__file__).resolve().parent / '.mim'
    summary['models'] = check_models(out_dir)
    work = out_dir / 'work'
    work.mkdir()
    summary['task_files'] = check_task_files(work, mim)
    summary['sweeps'] = check_sweeps(work, mim)
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1))


# --------------------------------------------------------------------------
# the test (runs on the checkout)
# --------------------------------------------------------------------------
def run(cmd: List[str], cwd: Path, env: dict = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900)
    assert proc.returncode == 0, (f'{cmd} exited with {proc.returncode}:\n'
                                  f'{proc.stdout[-6000:]}')
    return proc.stdout


def copy_working_tree(dest: Path) -> None:
    """The checkout's files as git sees them (tracked and untracked, not
    ignored): no build folder, egg-info or data of the checkout."""
    listed = run(['git', 'ls-files', '-z', '--cached', '--others',
                  '--exclude-standard'], REPO).split('\0')
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope='module')
def installed(tmp_path_factory) -> Path:
    """The wheel of the working tree, installed into a folder of its own."""
    if shutil.which('git') is None or not (REPO / '.git').exists():
        pytest.fail('the wheel is built from the git checkout\'s files: '
                    'run in a clone with git installed')
    root = tmp_path_factory.mktemp('wheel')
    copy_working_tree(root / 'src')
    pip = [sys.executable, '-m', 'pip']
    run(pip + ['wheel', '--no-deps', '--no-build-isolation', '--no-index',
               '-w', root / 'dist', root / 'src'], root)
    wheels = list((root / 'dist').glob('mmseg_vpt-*.whl'))
    assert len(wheels) == 1, wheels
    run(pip + ['install', '--no-deps', '--no-index', '--target',
               root / 'site', wheels[0]], root)
    return root / 'site'


@pytest.mark.slow
def test_installed_wheel_works_outside_the_checkout(installed,
                                                    tmp_path):
    site = installed
    mim = site / 'mmseg_vpt/.mim'
    assert (mim / 'configs/vtab/dtd.py').read_text() == \
        (REPO / 'configs/vtab/dtd.py').read_text()
    assert (mim / 'tools/train.py').is_file()
    script = tmp_path / 'check_installed.py'
    shutil.copy(__file__, script)
    out = tmp_path / 'out'
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONUNBUFFERED='1',
               OMP_NUM_THREADS='1')
    run([sys.executable, script, site, out], tmp_path, env)
    summary = json.loads((out / SUMMARY).read_text())

    # the installed package ran, not the checkout, and without the HTTP
    # stack or matplotlib at import
    assert Path(summary['imports']['file']).is_relative_to(site)
    assert summary['imports']['heavy'] == []
    ours = [m.name for m in pkgutil.walk_packages(
        [str(REPO / 'mmseg_vpt')], 'mmseg_vpt.')]
    assert sorted(summary['imports']['modules']) == sorted(ours)

    # every registered model class, bit for bit the checkout's
    for module in ours:
        importlib.import_module(module)
    assert summary['models']['registered'] == registered_models()
    saved = torch.load(out / OUTPUTS, weights_only=True)
    expected = {f'{name}/{key}': value for name in SMALL
                for key, value in small_model_outputs(name).items()}
    assert list(saved) == list(expected)
    for key, value in expected.items():
        assert torch.equal(saved[key], value), key

    errors = summary['task_files']['errors']
    assert set(errors) == {'deep', 'shallow', 'both',
                           'PromptEnsembleSegmentor'}
    assert max(errors.values()) <= 1e-5

    # the sweep's configs: the wheel's resolve as the checkout's do
    from mmengine.config import Config

    from mmseg_vpt.fgvc.tasks import render_task_config
    ours_linear = tmp_path / 'cub_linear.py'
    ours_linear.write_text(render_task_config(
        'cub', 'linear', base_dir=str(REPO / 'configs/fgvc/_base_')))
    fgvc = summary['sweeps']['fgvc']
    assert fgvc['linear'] == Config.fromfile(str(ours_linear)).pretty_text
    assert fgvc['vpt-deep'] == Config.fromfile(
        str(REPO / 'configs/fgvc/cub.py')).pretty_text
    assert 0 <= summary['sweeps']['vtab_top1'] <= 100


if __name__ == '__main__':
    main(*sys.argv[1:])
