"""Checkpoint files that are cut short, empty or not checkpoints stop every
tool with an error naming the file, its size, what is wrong and what named
it; ``init_cfg`` base weights load from URLs and mmengine's other schemes
(downloaded once into torch hub's cache), and tuned-only checkpoints work on
such a base."""
import copy
import functools
import hashlib
import http.server
import json
import pickle
import threading
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint as mmengine_load_checkpoint
from mmseg.registry import MODELS

from mmseg_vpt.checkpoint import (load_tuned_checkpoint, plan_tuned,
                                  read_checkpoint)
from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k
from mmseg_vpt.models.convert import load_checkpoint_file

from .tools_helpers import (PYTHON, REPO, eval_cmd, metric_values, run,
                            short_schedule, train_cmd)

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
TINY_VIT = dict(type='VPTVisionTransformer', img_size=(32, 32), patch_size=8,
                embed_dims=16, num_layers=2, num_heads=2, out_indices=(1, ),
                prompt_length=2)

# --------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------
# what the error must say about each kind of bad file
PROBLEM = {
    'truncated': 'is truncated or not a torch checkpoint',
    'empty': 'is an empty file',
    'pickle': 'is not a torch checkpoint',  # pickle.dump of a list
    'text': 'is not a torch checkpoint',  # a text file renamed .pth
    'list': 'holds a list, not a checkpoint',  # torch.save of a list
}
KINDS = list(PROBLEM)
# found from the file's structure alone, before any model is built
STRUCTURAL = [k for k in KINDS if k != 'list']


def make_bad(folder: Path, kind: str, suffix: str = '.pth') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{kind}{suffix}'
    if kind == 'truncated':
        torch.save({'meta': {}, 'state_dict': {'w': torch.randn(64, 64)}},
                   path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'pickle':
        path.write_bytes(pickle.dumps([1, 2, 3]))
    elif kind == 'text':
        path.write_text('this is not a checkpoint\n')
    elif kind == 'list':
        torch.save([torch.zeros(2)], path)
    return path


def assert_names_the_file(message: str, path: Path, kind: str,
                          key: str = None) -> None:
    assert str(path) in message, message
    assert f'({path.stat().st_size} bytes)' in message, message
    assert PROBLEM[kind] in message, message
    if key is not None:
        assert f'named by {key}' in message, message


# --------------------------------------------------------------------------
# in-process: the check and every loader
# --------------------------------------------------------------------------
@pytest.mark.parametrize('kind', STRUCTURAL)
def test_structural_check_names_file_size_problem_and_key(tmp_path, kind):
    from mmseg_vpt.utils.checkpoints import (CheckpointFileError,
                                             check_checkpoint_file)
    path = make_bad(tmp_path, kind)
    with pytest.raises(CheckpointFileError) as err:
        check_checkpoint_file(str(path), 'argument X')
    assert_names_the_file(str(err.value), path, kind, 'argument X')


def test_structural_check_passes_every_format_torch_and_safetensors_write(
        tmp_path):
    from safetensors.torch import save_file

    from mmseg_vpt.utils.checkpoints import check_checkpoint_file
    state = {'w': torch.randn(8, 8)}
    torch.save(state, tmp_path / 'zip.pth')
    torch.save(state, tmp_path / 'hf.bin')
    for protocol in (2, 4):
        torch.save(state, tmp_path / f'legacy{protocol}.pth',
                   _use_new_zipfile_serialization=False,
                   pickle_protocol=protocol)
    save_file(state, tmp_path / 'st.safetensors')
    for path in sorted(tmp_path.iterdir()):
        check_checkpoint_file(str(path))
        assert torch.equal(load_checkpoint_file(str(path))['w'], state['w'])


def test_cut_short_safetensors_and_bin_files_are_named(tmp_path):
    from safetensors.torch import save_file
    state = {'w': torch.randn(32, 32)}
    cases = {'st.safetensors': 'is truncated',
             'pytorch_model.bin': PROBLEM['truncated']}
    save_file(state, tmp_path / 'st.safetensors')
    torch.save(state, tmp_path / 'pytorch_model.bin')
    for name, problem in cases.items():
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:-100])
        with pytest.raises(ValueError) as err:
            load_checkpoint_file(str(path))
        message = str(err.value)
        assert str(path) in message and problem in message, message
        assert f'({path.stat().st_size} bytes)' in message, message


def _mmseg_init_model(path: str):
    from mmseg.apis import init_model
    return init_model(str(REPO / VIT_DEMO), path, device='cpu')


def _vpt_init_cfg(path: str):
    init_default_scope('mmseg')
    backbone = MODELS.build(dict(
        TINY_VIT, init_cfg=dict(type='Pretrained', checkpoint=path)))
    backbone.init_weights()


# every function through which the tools and mmseg's APIs read checkpoints
LOADERS = {
    # load_from, --resume, auto-resume, tools/test.py
    'mmengine_load_checkpoint': lambda p: mmengine_load_checkpoint(
        nn.Linear(2, 2), p, map_location='cpu'),
    'mmseg_init_model': _mmseg_init_model,
    # merge_tuned, extract_tuned, infer
    'read_checkpoint': read_checkpoint,
    # init_cfg base weights, convert_weights
    'load_checkpoint_file': load_checkpoint_file,
    'vpt_backbone_init_cfg': _vpt_init_cfg,
}


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('loader', LOADERS)
def test_every_loader_names_the_file_its_size_and_the_problem(
        tmp_path, loader, kind):
    path = make_bad(tmp_path, kind)
    with pytest.raises(ValueError) as err:  # CheckpointFileError
        LOADERS[loader](str(path))
    assert_names_the_file(str(err.value), path, kind)


# --------------------------------------------------------------------------
# every tool, as users run it
# --------------------------------------------------------------------------
# Runs one tool (as ``__main__``, with its own argv) once per case in one
# interpreter, so the whole matrix costs one start-up per tool; records what
# the user would see: the exception (the traceback's last line) or stderr.
_DRIVER = r'''
import contextlib, io, json, runpy, sys
tool, cases = sys.argv[1], json.loads(sys.argv[2])
results = []
for argv in cases:
    sys.argv = [tool] + argv
    out, err = io.StringIO(), io.StringIO()
    code, error = 0, ''
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(tool, run_name='__main__')
        except SystemExit as exit_:
            code = exit_.code
        except Exception as exc:
            code, error = 1, f'{type(exc).__name__}: {exc}'
    results.append(dict(code=code, error=error, stderr=err.getvalue()))
print('RESULTS ' + json.dumps(results))
'''


def run_tool_cases(tool: str, cases: List[List[str]], cwd: Path) -> list:
    out = run([PYTHON, '-c', _DRIVER, REPO / tool, json.dumps(cases)],
              cwd=cwd)
    line = next(l for l in out.splitlines() if l.startswith('RESULTS '))
    return json.loads(line[len('RESULTS '):])


def write_base(path: Path) -> Path:
    """Base weights for the demo config's backbone (random, no prompts)."""
    cfg = Config.fromfile(REPO / VIT_DEMO)
    backbone = copy.deepcopy(cfg.model.backbone)
    backbone.update(prompt_length=0, frozen_exclude=['all'], init_cfg=None)
    init_default_scope('mmseg')
    module = MODELS.build(backbone)
    module.init_weights()
    torch.save(module.state_dict(), path)
    return path


def base_options(base) -> list:
    return ['model.backbone.init_cfg._delete_=True',
            'model.backbone.init_cfg.type=Pretrained',
            f'model.backbone.init_cfg.checkpoint={base}']


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """Tiny synthetic data, base weights and a tuned-only checkpoint of the
    demo config."""
    root = tmp_path_factory.mktemp('ckptfiles')
    make_synthetic_ade20k(root / 'data/synthetic_ade20k', num_train=4,
                          num_val=2, img_size=64, show_progress=False)
    base = write_base(root / 'base.pth')
    cfg = Config.fromfile(REPO / VIT_DEMO)
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint=str(base))
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'meta': {}, 'state_dict': model.state_dict()},
               root / 'full.pth')
    plan = plan_tuned(model)
    torch.save(plan.apply({'meta': {'cfg': cfg.pretty_text},
                           'state_dict': model.state_dict()}),
               root / 'tuned.pth')
    import cv2
    import numpy as np
    cv2.imwrite(str(root / 'image.png'), np.zeros((64, 64, 3), np.uint8))
    return root


def _auto_resume_case(ws: Path, bad: Path) -> List[str]:
    """A work dir whose last_checkpoint names ``bad``; resume from it."""
    work = ws / 'auto' / bad.stem
    work.mkdir(parents=True, exist_ok=True)
    (work / 'last_checkpoint').write_text(str(bad))
    return [str(REPO / VIT_DEMO), '--work-dir', str(work), '--resume']


CONFIG = str(REPO / VIT_DEMO)
# entry point -> (tool, argv for a bad file, what names the file[, what the
# error says instead of PROBLEM for some kinds])
ENTRY_POINTS = {
    'test.py CHECKPOINT': (
        'tools/test.py', lambda ws, bad: [CONFIG, str(bad), '--work-dir',
                                          str(ws / 'w_test')],
        'config key `load_from`'),
    'train.py --resume PATH': (
        'tools/train.py', lambda ws, bad: [
            CONFIG, '--work-dir', str(ws / 'w_resume'), '--resume',
            str(bad)], 'config key `load_from`'),
    'train.py auto --resume': ('tools/train.py', _auto_resume_case, None),
    'train.py load_from': (
        'tools/train.py', lambda ws, bad: [
            CONFIG, '--work-dir', str(ws / 'w_load'), '--cfg-options',
            f'load_from={bad}'], 'config key `load_from`'),
    'train.py init_cfg base': (
        'tools/train.py', lambda ws, bad: [
            CONFIG, '--work-dir', str(ws / 'w_base'), '--cfg-options',
            *base_options(bad)],
        'config key `model.backbone.init_cfg.checkpoint`'),
    'merge_tuned.py TUNED': (
        'tools/merge_tuned.py', lambda ws, bad: [
            CONFIG, str(bad), str(ws / 'merged.pth')], 'argument TUNED'),
    'merge_tuned.py BASE': (
        'tools/merge_tuned.py', lambda ws, bad: [
            str(bad), str(ws / 'tuned.pth'), str(ws / 'merged.pth')],
        'argument BASE_OR_CONFIG',
        # a loadable file: its hash is checked (and differs) before it loads
        {'list': 'Base weights mismatch'}),
    'extract_tuned.py FULL': (
        'tools/extract_tuned.py', lambda ws, bad: [
            str(bad), str(ws / 'extracted.pth'), '--config', CONFIG],
        'argument FULL'),
    'extract_tuned.py --base': (
        'tools/extract_tuned.py', lambda ws, bad: [
            str(ws / 'full.pth'), str(ws / 'extracted.pth'), '--config',
            CONFIG, '--base', str(bad)], 'argument --base'),
    'infer.py CHECKPOINT': (
        'tools/infer.py', lambda ws, bad: [
            CONFIG, str(bad), str(ws / 'image.png'), '--out-dir',
            str(ws / 'infer')], 'argument CHECKPOINT'),
    'convert_weights.py SRC': (
        'tools/model_converters/convert_weights.py', lambda ws, bad: [
            str(bad), str(ws / 'converted.pth')], 'argument SRC'),
}


TOOLS = sorted({tool for tool, *_ in ENTRY_POINTS.values()})


@pytest.mark.slow
@pytest.mark.parametrize('tool', TOOLS)
def test_every_tool_names_the_bad_checkpoint_file(workspace, tool):
    """Each entry point of ``tool`` x each kind of bad file; one process
    per tool."""
    entries = [e for e, (t, *_) in ENTRY_POINTS.items() if t == tool]
    cases, expected = [], []
    for entry in entries:
        _, argv, key, *instead = ENTRY_POINTS[entry]
        folder = workspace / 'bad' / entry.replace(' ', '_')
        for kind in KINDS:
            bad = make_bad(folder, kind)
            cases.append(argv(workspace, bad))
            expected.append((entry, kind, bad, key,
                             (instead or [{}])[0].get(kind)))
    results = run_tool_cases(tool, cases, cwd=workspace)
    for (entry, kind, bad, key, instead), result in zip(expected, results):
        seen = result['error'] or result['stderr']
        assert result['code'] not in (0, None), (entry, kind, result)
        if instead:
            assert instead in seen and str(bad) in seen, (entry, seen)
            continue
        # the key is known where the check runs before anything loads
        assert_names_the_file(seen, bad, kind,
                              key if kind in STRUCTURAL else None)


# --------------------------------------------------------------------------
# init_cfg checkpoints from URLs and mmengine's other schemes
# --------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args) -> None:
        pass


class FileServer:
    """A real HTTP server on 127.0.0.1 serving ``folder``, in a thread."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                     handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A tiny VPT-ViT base weights file served over HTTP; torch hub's cache
    (where mmengine's loader keeps downloads) in tmp_path."""
    folder = tmp_path / 'www'
    folder.mkdir()
    init_default_scope('mmseg')
    base = MODELS.build(
        dict(TINY_VIT, prompt_length=0, frozen_exclude=['all']))
    base.init_weights()
    torch.save(base.state_dict(), folder / 'w.pth')
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    server = FileServer(folder)
    yield server, folder / 'w.pth'
    server.stop()


def backbone_from(checkpoint: str) -> nn.Module:
    init_default_scope('mmseg')
    backbone = MODELS.build(dict(
        TINY_VIT, init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
    backbone.init_weights()
    return backbone


def assert_same_state(a: Dict[str, torch.Tensor],
                      b: Dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), \
            key


def test_url_init_cfg_loads_bit_equal_then_works_from_the_cache(served,
                                                                 tmp_path):
    server, local = served
    url = f'{server.url}/w.pth'
    torch.manual_seed(1)  # the prompts: same random init in both builds
    expected = backbone_from(str(local)).state_dict()
    torch.manual_seed(1)
    assert_same_state(backbone_from(url).state_dict(), expected)
    cached = tmp_path / 'hub/checkpoints/w.pth'
    assert cached.read_bytes() == local.read_bytes()

    server.stop()  # from now on only the cache has it
    torch.manual_seed(1)
    assert_same_state(backbone_from(url).state_dict(), expected)


def test_url_that_returns_404_is_an_error_naming_the_url(served):
    server, _ = served
    url = f'{server.url}/missing.pth'
    with pytest.raises(ValueError) as err:
        backbone_from(url)
    assert url in str(err.value) and '404' in str(err.value)


def test_open_mmlab_scheme_resolves_through_mmengine(served, tmp_path,
                                                     monkeypatch):
    server, local = served
    home = tmp_path / 'mmengine_home'
    home.mkdir()
    (home / 'open_mmlab.json').write_text(
        json.dumps({'tiny_vit': f'{server.url}/w.pth'}))
    monkeypatch.setenv('MMENGINE_HOME', str(home))
    torch.manual_seed(1)
    expected = backbone_from(str(local)).state_dict()
    torch.manual_seed(1)
    assert_same_state(backbone_from('open-mmlab://tiny_vit').state_dict(),
                      expected)
    from mmseg_vpt.utils.checkpoints import local_checkpoint_path
    assert Path(local_checkpoint_path('open-mmlab://tiny_vit')).read_bytes() \
        == local.read_bytes()


def test_tuned_checkpoint_on_a_url_base_plans_saves_and_reloads(served):
    server, tiny = served
    local = write_base(tiny.parent / 'demo_base.pth')
    url = f'{server.url}/demo_base.pth'
    cfg = Config.fromfile(REPO / VIT_DEMO)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=url)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        model.backbone.prompt_embeddings.add_(1)  # "trained"

    plan = plan_tuned(model)
    assert not isinstance(plan, str), plan
    assert plan.base.checkpoint == url
    assert plan.base_sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert plan.base_bytes == local.stat().st_size
    tuned = plan.apply({'meta': {}, 'state_dict': model.state_dict()})
    assert 'backbone.layers.0.ln1.weight' not in tuned['state_dict']

    server.stop()  # reloading needs only the cache
    for init_cfg in (cfg.model.backbone.init_cfg, None):
        # None: the base comes from the URL recorded in the checkpoint
        again_cfg = copy.deepcopy(cfg)
        again_cfg.model.backbone.init_cfg = init_cfg
        again = MODELS.build(again_cfg.model)
        load_tuned_checkpoint(again, copy.deepcopy(tuned))
        assert_same_state(again.state_dict(), model.state_dict())


@pytest.mark.slow
def test_train_and_test_tools_with_a_url_base(tmp_path):
    """tools/train.py downloads the base from a URL and writes tuned-only
    checkpoints; tools/test.py reloads one from the cache, with the server
    gone, and reproduces validation."""
    make_synthetic_ade20k(tmp_path / 'data/synthetic_ade20k', num_train=4,
                          num_val=2, img_size=64, show_progress=False)
    www = tmp_path / 'www'
    www.mkdir()
    write_base(www / 'base.pth')
    server = FileServer(www)
    url = f'{server.url}/base.pth'
    env = dict(TORCH_HOME=str(tmp_path / 'torch_home'))
    work = tmp_path / 'work'
    try:
        log = run(train_cmd(VIT_DEMO, work, '--cfg-options',
                            *short_schedule(1), *base_options(url)),
                  cwd=tmp_path, env=env)
    finally:
        server.stop()
    assert 'Tuned-only checkpoints:' in log
    ckpt = torch.load(work / 'iter_1.pth', weights_only=False)
    meta = ckpt['meta']['vpt_tuned']
    assert meta['base_checkpoint'] == url
    assert meta['base_sha256'] == hashlib.sha256(
        (www / 'base.pth').read_bytes()).hexdigest()
    test_log = run(eval_cmd(VIT_DEMO, work / 'iter_1.pth', work / 'test',
                            '--cfg-options', *base_options(url)),
                   cwd=tmp_path, env=env)
    assert metric_values(log) and metric_values(test_log) == \
        metric_values(log)
