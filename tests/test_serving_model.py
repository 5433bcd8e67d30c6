"""MultiTaskSegmentor: one frozen VPT backbone serving many tasks.

* A batch mixing tasks (prompt lengths, prompted layers, class counts,
  heads, whole-image and sliding-window tests) predicts, sample for sample,
  what each task's own segmentor predicts alone (``init_segmentor`` +
  ``inference``, mmseg's test_step path).
* The backbone runs once per input size, never per task, and its weights
  stay the base file's, bit for bit.
* ``backbone.mixed_prompts`` on mmseg's ViT and Swin and on a timm ViT with
  rotary embeddings: every sample gets exactly the output of its own
  prompt set's backbone.
* Prompt ensembles average their members' softmax; ``tools/test.py`` with
  several task files evaluates the ensemble.
* Tasks come and go at run time without touching the backbone; what cannot
  share it is refused with an error naming why, and the model keeps
  serving.
"""
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_vpt.apis import inference, init_segmentor, preprocess
from mmseg_vpt.checkpoint import (BaseWeightsMismatch, merge_tuned,
                                  model_from_config)
from mmseg_vpt.models.base_weights import file_sha256
from mmseg_vpt.serving import (FrozenWeightsChanged, MultiTaskSegmentor,
                               TaskConflict, TaskError, TaskExists,
                               UnknownTask, slide_boxes)

from .serving_helpers import (CONFIGS, TASKS, base_file, random_images,
                              task_config, write_task_file, write_tasks)
from .tools_helpers import (PYTHON, REPO, metric_values, no_workers, run,
                            run_fails, synthetic_workspace)
from .vpt_helpers import randomize_

KINDS = ['vit', 'swin']


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rel: float,
                     what: str = '') -> None:
    """``max|a - b| <= rel * max|b|`` (same shape)."""
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = float((a - b).abs().max())
    scale = float(b.abs().max())
    assert err <= rel * scale, f'{what}: max error {err} vs {rel} * {scale}'


def mixed_batch(names: List[str]):
    """Six images over the three tasks, interleaved, in two sizes (neither a
    multiple of any patch, window or crop size), and their task names."""
    images = random_images(6, seed=1)
    images[3:5] = random_images(2, seed=2, size=(56, 76))
    a, b, c = names
    return images, [a, b, c, c, a, b]


class Served:
    """The task files of one demo kind, a MultiTaskSegmentor holding all
    three tasks, each task's own segmentor, and the references of the mixed
    batch (each image through its task's segmentor alone)."""

    def __init__(self, kind: str, folder: Path) -> None:
        torch.manual_seed(100 + KINDS.index(kind))
        self.kind = kind
        self.folder = folder
        self.files = write_tasks(kind, folder)
        self.base = self.files['base']
        self.names = list(TASKS[kind])
        self.model = MultiTaskSegmentor(self.cfg(self.names[0]))
        for name in self.names:
            self.model.add_task(name, self.path(name))
        self.refs = {n: init_segmentor(self.cfg(n), str(self.path(n)))
                     for n in self.names}
        self.images, self.mixed = mixed_batch(self.names)
        self.expected = [inference(self.refs[n], img)
                         for img, n in zip(self.images, self.mixed)]

    def cfg(self, name: str) -> Config:
        return self.files[name][0]

    def path(self, name: str) -> Path:
        return self.files[name][1]

    def assert_serves(self) -> None:
        """The mixed batch still predicts its references."""
        for got, ref in zip(self.model.predict(self.images, self.mixed),
                            self.expected):
            assert_close_rel(got.seg_logits.data, ref.seg_logits.data, 1e-5)
            assert torch.equal(got.pred_sem_seg.data, ref.pred_sem_seg.data)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """``demo(kind)``: that kind's :class:`Served`, built once per module."""
    cache: Dict[str, Served] = {}

    def get(kind: str) -> Served:
        if kind not in cache:
            cache[kind] = Served(kind, tmp_path_factory.mktemp(kind))
        return cache[kind]

    return get


@pytest.fixture(params=KINDS)
def served(request, demo) -> Served:
    return demo(request.param)


# --------------------------------------------------------------------------
# 1. mixed batches are exact
# --------------------------------------------------------------------------
def test_mixed_batch_equals_each_tasks_own_segmentor(served):
    """Every sample of a 6-image batch over 3 tasks (deep/shallow/layer
    prompts of lengths 10/3/6, 150/7/4 classes, whole and sliding-window
    tests, two image sizes) gets its own segmentor's logits (1e-5 relative)
    and labels, at the image's size."""
    results = served.model.predict(served.images, served.mixed)
    assert len(results) == len(served.images)
    classes = {}
    for i, (got, ref, img, name) in enumerate(zip(
            results, served.expected, served.images, served.mixed)):
        logits = got.seg_logits.data
        num_classes = served.refs[name].decode_head.num_classes
        classes[name] = num_classes
        assert logits.shape == (num_classes, *img.shape[:2]), (i, name)
        assert got.pred_sem_seg.data.shape == (1, *img.shape[:2])
        assert_close_rel(logits, ref.seg_logits.data, 1e-5,
                         f'sample {i} ({name})')
        assert torch.equal(got.pred_sem_seg.data, ref.pred_sem_seg.data), i
    assert sorted(classes.values()) == [4, 7, 150]
    # the tasks really differ on the same image (a wrong routing would show)
    img = served.images[0]
    own = served.model.predict([img, img], served.names[1:])
    assert not torch.equal(own[0].pred_sem_seg.data, own[1].pred_sem_seg.data)


EXTRA_TASKS = {
    'vit': dict(prompt_length=4, prompt_proj_dims=8),  # projected prompts
    'swin': dict(prompt_length=4, prompt_init='normal'),
}


def test_head_only_task_mixes_with_prompted_ones(served, tmp_path):
    """A head-only task (``prompt_length=0``: no prompt slots at all) and a
    task of 4 prompts (projected from 8 dims for ViT) share a batch with
    the 10-prompt task: each sample is still its own segmentor's."""
    model = served.model
    tasks = {'head_only': dict(prompt_length=0, frozen_exclude=[]),
             'extra': EXTRA_TASKS[served.kind]}
    refs = {}
    for seed, (name, backbone) in enumerate(tasks.items()):
        cfg = task_config(served.kind, served.base, backbone)
        path = write_task_file(cfg, tmp_path / f'{name}.pth', 20 + seed)
        refs[name] = init_segmentor(cfg, str(path))
        model.add_task(name, path)
    try:
        names = ['head_only', served.names[0], 'extra', 'head_only']
        images = served.images[2:6]
        for i, got in enumerate(model.predict(images, names)):
            ref = inference(refs[names[i]] if names[i] in refs else
                            served.refs[names[i]], images[i])
            assert_close_rel(got.seg_logits.data, ref.seg_logits.data, 1e-5,
                             f'sample {i} ({names[i]})')
            assert torch.equal(got.pred_sem_seg.data, ref.pred_sem_seg.data)
        info = {t['name']: t for t in model.tasks_info()}
        assert info['head_only']['prompted_layers'] == 0
    finally:
        for name in tasks:
            model.remove_task(name)


def test_predict_data_and_tasks_info_describe_the_loaded_tasks(served):
    """``predict_data`` (a dataloader's already-piped samples) gives what
    ``predict`` gives; ``tasks_info`` reports each task's prompts, classes,
    head and test mode as its config has them."""
    model = served.model
    inputs, samples = [], []
    for img, name in zip(served.images, served.mixed):
        data = model.task(name).pipeline(dict(img=img))
        inputs.append(data['inputs'])
        samples.append(data['data_samples'])
    for a, b in zip(model.predict_data(inputs, samples, served.mixed),
                    model.predict(served.images, served.mixed)):
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)
    info = {t['name']: t for t in model.tasks_info()}
    assert list(info) == served.names
    for name in served.names:
        ref = served.refs[name]
        bcfg = served.cfg(name).model.backbone
        assert info[name]['num_classes'] == ref.decode_head.num_classes
        assert info[name]['prompt_length'] == bcfg.prompt_length
        assert info[name]['prompted_layers'] == len(ref.backbone.prompt_layers)
        assert info[name]['decode_head'] == type(ref.decode_head).__name__
        assert info[name]['test_mode'] == ref.test_cfg.get('mode', 'whole')
        assert info[name]['ensemble_size'] == 1
        assert info[name]['files'] == [str(served.path(name))]


# --------------------------------------------------------------------------
# 2. one backbone pass per input size; the backbone stays the base
# --------------------------------------------------------------------------
def backbone_inputs(ref, img) -> List[tuple]:
    """The (C, h, w) of every backbone input mmseg's test_step gives
    ``ref`` for ``img``: the preprocessed image in ``mode='whole'``, each
    crop of ``slide_boxes`` in ``mode='slide'``."""
    x, _ = preprocess(ref, img)
    C, H, W = x.shape[1:]
    if ref.test_cfg.get('mode', 'whole') != 'slide':
        return [(C, H, W)]
    return [(C, y2 - y1, x2 - x1)
            for y1, y2, x1, x2 in slide_boxes(ref.test_cfg, H, W)]


class CountCalls:
    """Record the input shape of every call of ``module``."""

    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_pre_hook(
            lambda m, args: self.calls.append(tuple(args[0].shape)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_backbone_runs_once_per_input_size_not_per_task(served):
    """One predict over the mixed batch calls the shared backbone once per
    distinct input shape (whole images of two sizes, 48x48 crops), each
    call holding every sample or crop of that shape, whatever its task."""
    model = served.model
    units = Counter()
    for img, name in zip(served.images, served.mixed):
        ref = served.refs[name]
        shapes = backbone_inputs(ref, img)
        # mmseg's own test_step runs the backbone once per crop: the
        # derivation above is what mmseg does
        with CountCalls(ref.backbone) as own:
            inference(ref, img)
        assert [c[1:] for c in own.calls] == shapes
        units.update(shapes)
    num_tasks_and_crops = sum(units.values())
    with CountCalls(model.backbone) as shared:
        model.predict(served.images, served.mixed)
    assert len(shared.calls) == len(units)
    assert Counter({c[1:]: c[0] for c in shared.calls}) == units
    # here: 3 calls (128x165 and 128x174 images, 48x48 crops) for 44
    # backbone inputs (4 whole images, 20 + 20 crops)
    assert len(units) == 3 and num_tasks_and_crops == 44
    assert len(shared.calls) < num_tasks_and_crops


def test_shared_backbone_keeps_the_base_weights_bit_for_bit(served):
    """The shared backbone holds exactly the base file's tensors (no
    prompts of its own), before and after serving every task."""
    model = served.model
    base = torch.load(served.base, map_location='cpu')
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.predict(served.images, served.mixed)
    after = model.backbone.state_dict()
    assert list(after) == list(before)
    assert set(after) == set(base)
    for key, value in after.items():
        assert torch.equal(value, before[key]), key
        assert torch.equal(value, base[key]), key
    assert not [k for k in after if 'prompt' in k]


# --------------------------------------------------------------------------
# 3. backbone-level mixed prompts
# --------------------------------------------------------------------------
TIMM_TINY = dict(depth=3, embed_dim=64, num_heads=4)
BACKBONES = {
    'mmseg_vit': (dict(type='VPTVisionTransformer', img_size=32,
                       patch_size=8, embed_dims=32, num_layers=4,
                       num_heads=4, mlp_ratio=2, out_indices=(0, 1, 2, 3)),
                  (44, 60)),
    'mmseg_swin': (dict(type='VPTSwinTransformer', pretrain_img_size=64,
                        embed_dims=16, patch_size=4, window_size=4,
                        depths=(2, 2, 2), num_heads=(2, 2, 4),
                        strides=(4, 2, 2), out_indices=(0, 1, 2),
                        mlp_ratio=2, drop_path_rate=0.0), (56, 72)),
    # Eva blocks with rotary position embeddings and register tokens
    'timm_dinov3': (dict(type='VPTTimmViT',
                         model_name='vit_small_patch16_dinov3',
                         timm_kwargs=TIMM_TINY, out_indices=(0, 1, 2)),
                    (45, 61)),
    # rotary embeddings and SwiGLU
    'timm_eva02': (dict(type='VPTTimmViT',
                        model_name='eva02_large_patch14_224',
                        timm_kwargs=TIMM_TINY, out_indices=(0, 1, 2)),
                   (45, 61)),
}
# deep 5, shallow 2, layer [1] with 3, and a head-only task (no prompts)
PROMPT_SETS = [dict(prompt_length=5, prompt_layers='deep'),
               dict(prompt_length=2, prompt_layers='shallow'),
               dict(prompt_length=3, prompt_layers=[1]),
               dict(prompt_length=0, frozen_exclude=[])]
# the backbone that runs: its own 7 deep prompts must play no part
HOST = dict(prompt_length=7, prompt_layers='deep')


def prompt_variants(arch: str):
    """A host backbone and one backbone per prompt set, all with the same
    random frozen weights and each with its own random prompts."""
    cfg, _ = BACKBONES[arch]

    def build(**prompts):
        model = MODELS.build(dict(cfg, **prompts))
        model.init_weights()
        return model

    host = randomize_(build(**HOST))
    frozen = {k: v for k, v in host.state_dict().items() if 'prompt' not in k}
    sets = []
    for prompts in PROMPT_SETS:
        model = build(**prompts)
        model.load_state_dict(frozen, strict=False)
        with torch.no_grad():
            for tensor in model.prompt_tensors():
                tensor.normal_(0, 1)
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in frozen.items())
        sets.append(model.eval())
    return host.eval(), sets


def forward(model, x):
    with torch.no_grad():
        return [o for o in model(x)]


@pytest.mark.parametrize('arch', list(BACKBONES))
def test_mixed_prompts_give_each_sample_its_own_sets_output(arch):
    """Seven samples over four prompt sets (lengths 5/2/3/0, deep, shallow,
    one layer), run by a fifth backbone: each sample's outputs equal its
    set's backbone run alone on it (1e-5 relative)."""
    host, sets = prompt_variants(arch)
    size = BACKBONES[arch][1]
    x = torch.randn(7, 3, *size)
    index = torch.tensor([0, 1, 2, 3, 2, 0, 1])
    with torch.no_grad(), host.mixed_prompts(sets, index):
        mixed = list(host(x))
    alone = [forward(sets[s], x[i:i + 1])
             for i, s in enumerate(index.tolist())]
    for i, s in enumerate(index.tolist()):
        assert len(mixed) == len(alone[i])
        for level, (a, b) in enumerate(zip(mixed, alone[i])):
            assert_close_rel(a[i:i + 1], b, 1e-5,
                             f'{arch} sample {i} (set {s}) output {level}')
    # another set's output is 100x the tolerance away: a sample given the
    # wrong prompts would fail
    other = forward(sets[1], x[:1])
    assert (mixed[-1][:1] - other[-1]).abs().max() > \
        1e-3 * other[-1].abs().max()


@pytest.mark.parametrize('arch', list(BACKBONES))
def test_one_prompt_set_for_every_sample_is_the_ordinary_forward(arch):
    """With all samples on one set (each of the four, the length-0 one
    included), the mixed forward is that backbone's own forward (1e-6)."""
    host, sets = prompt_variants(arch)
    x = torch.randn(3, 3, *BACKBONES[arch][1])
    for k, prompt_set in enumerate(sets):
        with torch.no_grad(), host.mixed_prompts(
                [prompt_set], torch.zeros(3, dtype=torch.long)):
            mixed = list(host(x))
        for a, b in zip(mixed, forward(prompt_set, x)):
            assert_close_rel(a, b, 1e-6, f'{arch} set {k}')
    # and the host on its own prompts, outside the context, is unchanged
    plain = forward(host, x)
    with torch.no_grad(), host.mixed_prompts([host],
                                             torch.zeros(3, dtype=torch.long)):
        again = list(host(x))
    for a, b in zip(again, plain):
        assert_close_rel(a, b, 1e-6, f'{arch} host')


def test_mixed_prompts_refuse_other_layouts_and_batch_sizes():
    """A prompt set of another backbone's layout, or a sample list of
    another length than the batch, is an error naming both."""
    host, sets = prompt_variants('mmseg_vit')
    swin, _ = prompt_variants('mmseg_swin')
    with pytest.raises(ValueError, match=r'stage widths and depths '
                       r'\(\[16, 32, 64\], \[2, 2, 2\]\) cannot run in '
                       r'VPTVisionTransformer with \(\[32\], \[4\]\)'):
        with host.mixed_prompts([sets[0], swin], torch.tensor([0, 1])):
            pass
    with pytest.raises(ValueError, match='prompt sets of 2 samples, but the '
                       'batch has 3'):
        with torch.no_grad(), host.mixed_prompts(sets, torch.tensor([0, 1])):
            host(torch.randn(3, 3, 32, 32))


# --------------------------------------------------------------------------
# 4. prompt ensembles
# --------------------------------------------------------------------------
ENSEMBLE_TASK = {'vit': 'ade', 'swin': 'slide4'}


def softmax(sample) -> torch.Tensor:
    return sample.seg_logits.data.softmax(0)


def test_ensemble_of_one_predicts_like_its_member(served):
    """A list of one file: the probabilities (softmax of ``seg_logits``) are
    the single task's (1e-6) and the labels equal."""
    name = served.names[0]
    served.model.add_task('e1', [served.path(name)])
    try:
        img = served.images[0]
        got = served.model.predict([img], ['e1'])[0]
        ref = served.expected[0]
        assert served.mixed[0] == name
        assert (softmax(got) - softmax(ref)).abs().max() <= 1e-6
        assert torch.equal(got.pred_sem_seg.data, ref.pred_sem_seg.data)
    finally:
        served.model.remove_task('e1')


def test_ensemble_of_one_reports_log_probabilities_like_any_ensemble(served):
    """``predict`` documents an ensemble's ``seg_logits`` as the log of its
    members' mean softmax, and ``add_task`` takes a list as an ensemble:
    for a list of one, ``exp(seg_logits)`` is then the member's softmax."""
    name = served.names[0]
    served.model.add_task('e1', [served.path(name)])
    try:
        got = served.model.predict([served.images[0]], ['e1'])[0]
        ref = served.expected[0]
        probs = got.seg_logits.data.exp()
        err = float((probs - softmax(ref)).abs().max())
        assert err <= 1e-6, (
            f'exp(seg_logits) is off by {err:.3g} and sums to '
            f'{float(probs.sum(0).mean()):.3g} per pixel, not 1: a one-file '
            'ensemble returns raw logits')
    finally:
        served.model.remove_task('e1')


def test_ensemble_members_must_agree_on_classes_and_test_settings(served):
    """Members of other class counts cannot be averaged: refused naming
    both files and the counts; the model keeps serving its tasks."""
    a, b = served.names[0], served.names[1]
    with pytest.raises(TaskConflict, match=r"ensemble 'bad': .* has another "
                       r'num_classes than .* \(7 vs 150\)'):
        served.model.add_task('bad', [served.path(a), served.path(b)])
    assert 'bad' not in served.model.tasks
    got = served.model.predict(served.images[:1], [served.mixed[0]])[0]
    assert torch.equal(got.pred_sem_seg.data,
                       served.expected[0].pred_sem_seg.data)


def test_ensemble_of_three_seeds_averages_their_softmax(served):
    """Three seeds of one task (the sliding-window one for Swin), in a
    batch mixed with another task: probabilities are the mean of the three
    own segmentors' softmax (1e-5), labels its argmax, and the other task
    is unaffected."""
    name = ENSEMBLE_TASK[served.kind]
    cfg = served.cfg(name)
    paths = [write_task_file(cfg, served.folder / f'ens/s{seed}.pth', seed)
             for seed in (10, 11, 12)]
    refs = [init_segmentor(cfg, str(p)) for p in paths]
    served.model.add_task('e3', paths)
    try:
        images = served.images[:3]
        other = served.names[1]
        names = ['e3', other, 'e3']
        results = served.model.predict(images, names)
        for i in (0, 2):
            outs = [inference(r, images[i]) for r in refs]
            probs = [softmax(o) for o in outs]
            mean = torch.stack(probs).mean(0)
            got = results[i].seg_logits.data.exp()
            assert got.shape == mean.shape == (
                refs[0].decode_head.num_classes, *images[i].shape[:2])
            # logits agree within 1e-5 of their scale, as everywhere here; a
            # softmax moves by at most half of its logits' largest change
            scale = max(float(o.seg_logits.data.abs().max()) for o in outs)
            err = float((got - mean).abs().max())
            assert err <= 0.5 * 1e-5 * scale, (err, scale)
            assert torch.equal(results[i].pred_sem_seg.data,
                               mean.argmax(0, keepdim=True))
            # the members disagree: the mean is not any one of them
            assert min(float((p - mean).abs().max()) for p in probs) > 1e-3
        ref = inference(served.refs[other], images[1])
        assert_close_rel(results[1].seg_logits.data, ref.seg_logits.data,
                         1e-5)
        info = {t['name']: t for t in served.model.tasks_info()}['e3']
        assert info['ensemble_size'] == 3
        assert info['files'] == [str(p) for p in paths]
    finally:
        served.model.remove_task('e3')


# --------------------------------------------------------------------------
# 5. tasks at run time
# --------------------------------------------------------------------------
def test_adding_and_removing_tasks_never_touches_the_backbone(
        demo, monkeypatch):
    """Tasks added, removed and re-added: the backbone is the same object
    with the same tensors (same storage), its weights file is never read or
    hashed again, a removed task is an UnknownTask listing the loaded ones,
    and a name already loaded is TaskExists."""
    import mmseg_vpt.models.prompts as prompts_module
    import mmseg_vpt.serving.multitask as multitask_module
    vit = demo('vit')
    counts = Counter()
    loaded = []
    real_load_pretrained = prompts_module.load_pretrained
    real_sha = multitask_module.file_sha256
    real_torch_load = torch.load

    def load_pretrained(*args, **kwargs):
        counts['load_pretrained'] += 1
        return real_load_pretrained(*args, **kwargs)

    def sha(*args, **kwargs):
        counts['sha256'] += 1
        return real_sha(*args, **kwargs)

    def torch_load(f, *args, **kwargs):
        loaded.append(str(f))
        return real_torch_load(f, *args, **kwargs)

    monkeypatch.setattr(prompts_module, 'load_pretrained', load_pretrained)
    monkeypatch.setattr(multitask_module, 'file_sha256', sha)
    monkeypatch.setattr(torch, 'load', torch_load)
    model = MultiTaskSegmentor(vit.cfg('ade'))
    # the patches see the one load of the base
    assert counts == Counter(load_pretrained=1, sha256=1)
    assert str(vit.base) in loaded
    backbone = model.backbone
    storage = {k: v.data_ptr() for k, v in backbone.state_dict().items()}
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    loaded.clear()

    for name in vit.names:
        model.add_task(name, vit.path(name))
    model.add_task('pair', [vit.path('ade'), vit.path('ade')])
    img = vit.images[2]
    first = model.predict([img], [vit.names[2]])[0]
    model.remove_task(vit.names[2])
    assert list(model.tasks) == [vit.names[0], vit.names[1], 'pair']
    with pytest.raises(UnknownTask) as err:
        model.predict([img], [vit.names[2]])
    message = str(err.value)
    assert f"unknown task '{vit.names[2]}'" in message
    assert str(sorted(model.tasks)) in message
    with pytest.raises(KeyError):  # a KeyError too, for dict-like use
        model.task(vit.names[2])
    with pytest.raises(UnknownTask, match="unknown task 'nothing'"):
        model.remove_task('nothing')

    task = model.task('ade')
    with pytest.raises(TaskExists, match="task 'ade' is already loaded"):
        model.add_task('ade', vit.path('shallow7'))
    assert model.task('ade') is task
    model.add_task(vit.names[2], vit.path(vit.names[2]))
    again = model.predict([img], [vit.names[2]])[0]
    assert torch.equal(again.seg_logits.data, first.seg_logits.data)

    assert counts == Counter(load_pretrained=1, sha256=1)
    assert str(vit.base) not in loaded
    assert set(loaded) <= {str(vit.path(n)) for n in vit.names}
    assert model.backbone is backbone
    state = backbone.state_dict()
    assert {k: v.data_ptr() for k, v in state.items()} == storage
    assert all(torch.equal(state[k], v) for k, v in before.items())
    # the tasks' modules are the model's submodules (for .to() and friends)
    assert set(model.task_models) == {'ade:0', 'shallow7:0', 'pair:0',
                                      'pair:1', 'fcn4:0'}


# --------------------------------------------------------------------------
# 6. what cannot share the backbone is refused, clearly
# --------------------------------------------------------------------------
# a backbone argument the task may not set its own way, with a value that
# still loads the base weights (same tensor shapes)
CONFLICT = {'vit': ('num_heads', 2, 4), 'swin': ('qk_scale', 0.5, None)}


def test_refused_tasks_name_the_reason_and_leave_the_model_serving(
        served, tmp_path):
    """Another base (both sha256 named), VPT+Bias (a bias tensor named), a
    full checkpoint with a changed backbone weight (named), another
    backbone setting, an Adapter or a Partial-1 task (the key named),
    mismatched images and names: each is refused, and afterwards the tasks
    are the same and the mixed batch still predicts its references. A full
    checkpoint of a task predicts exactly like the task file."""
    model, kind = served.model, served.kind
    loaded = dict(model.tasks)

    def refused(exc, name, path, *texts):
        with pytest.raises(exc) as err:
            model.add_task(name, path)
        for text in texts:
            assert text in str(err.value), (text, str(err.value))
        assert model.tasks == loaded
        served.assert_serves()
        return str(err.value)

    # tuned on another base file (other random values, other hash)
    torch.manual_seed(1234)
    other = base_file(kind, tmp_path / 'other_base.pth')
    assert file_sha256(str(other)) != model.base_sha256
    path = write_task_file(task_config(kind, other), tmp_path / 'other.pth',
                           0)
    refused(BaseWeightsMismatch, 'other', path, str(path),
            file_sha256(str(other)), model.base_sha256, str(served.base))

    # VPT+Bias: the task file carries tuned backbone biases
    cfg = task_config(kind, served.base,
                      dict(frozen_exclude=['prompt', 'bias']))
    path = write_task_file(cfg, tmp_path / 'bias.pth', 0)
    message = refused(FrozenWeightsChanged, 'bias', path, str(path),
                      "frozen_exclude=['prompt', 'bias']")
    named = re.findall(r'backbone\.[\w.]+\.bias', message)
    assert named, message
    tuned = torch.load(path, map_location='cpu')['state_dict']
    base = torch.load(served.base, map_location='cpu')
    assert not torch.equal(tuned[named[0]], base[named[0][9:]])

    # another backbone setting that the shared forward would not honour
    key, value, shared = CONFLICT[kind]
    path = write_task_file(task_config(kind, served.base, {key: value}),
                           tmp_path / 'conflict.pth', 0)
    refused(TaskConflict, 'conflict', path,
            f'{key}={value!r} (shared: {shared!r})')

    # Adapter and Partial-k tasks change what the frozen blocks compute, so
    # the shared forward cannot serve them: refused, naming the argument
    for extra, text in ((dict(adapter_reduction=4,
                              frozen_exclude=['prompt', 'adapter']),
                         'adapter_reduction=4 (shared: None)'),
                        (dict(partial_k=1), 'partial_k=1 (shared: 0)')):
        name = next(iter(extra))
        path = write_task_file(task_config(kind, served.base, extra),
                               tmp_path / f'{name}.pth', 0)
        refused(TaskConflict, name, path, text)

    # a full checkpoint (base merged in) of a loaded task: accepted ...
    name = served.names[0]
    full = merge_tuned(model_from_config(served.cfg(name)),
                       str(served.path(name)))
    torch.save(full, tmp_path / 'full.pth')
    model.add_task('full', tmp_path / 'full.pth')
    try:
        img = served.images[0]
        a = model.predict([img], ['full'])[0]
        b = model.predict([img], [name])[0]
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
    finally:
        model.remove_task('full')
    # ... unless its backbone weights are not the base's (fine-tuned)
    key = next(k for k in full['state_dict'] if k.startswith('backbone.')
               and k.endswith(('ln1.weight', 'norm1.weight')))
    full['state_dict'][key] = full['state_dict'][key] + 0.5
    torch.save(full, tmp_path / 'full_tuned.pth')
    refused(FrozenWeightsChanged, 'full_tuned', tmp_path / 'full_tuned.pth',
            key, 'changes 1 weights of the frozen backbone')

    # requests that do not fit
    with pytest.raises(TaskError, match='2 images but 3 task names'):
        model.predict(served.images[:2], served.names)
    with pytest.raises(UnknownTask, match="unknown task 'nothing'"):
        model.predict(served.images[:2], [served.names[0], 'nothing'])
    with pytest.raises(TaskError, match='no checkpoint given'):
        model.add_task('empty', [])
    assert model.tasks == loaded
    served.assert_serves()


def test_task_spelling_out_a_backbone_default_can_share_the_backbone(
        demo, tmp_path):
    """A task config that writes a backbone argument at its default value
    (mmseg's ViT: ``mlp_ratio=4``, ``qkv_bias=True``), where the base
    config leaves it out, builds the same backbone: it is no conflict, and
    the task predicts as its own segmentor."""
    vit = demo('vit')
    cfg = task_config('vit', vit.base, dict(mlp_ratio=4, qkv_bias=True))
    path = write_task_file(cfg, tmp_path / 'defaults.pth', 3)
    ref = init_segmentor(cfg, str(path))
    model = MultiTaskSegmentor(vit.cfg('ade'))
    model.add_task('defaults', path)
    got = model.predict(vit.images[:1], ['defaults'])[0]
    assert_close_rel(got.seg_logits.data,
                     inference(ref, vit.images[0]).seg_logits.data, 1e-5)


@pytest.mark.parametrize('backbone, text', [
    (dict(type='VPTResNetV1c', prompt_pad=4, img_size=(32, 32)),
     'VPTResNetV1c prompts by padding the input image'),
    (dict(type='ResNetV1c'), 'ResNetV1c is not a VPT backbone'),
], ids=['padding-prompts', 'plain-resnet'])
def test_convnet_bases_are_refused_by_name(demo, backbone, text):
    """A ConvNet base, with padding prompts (they change the input image
    per task) or none, is refused before anything is built, with the
    reason in the message (the 'add' location: test_prompt_ablations)."""
    cfg = task_config('vit', demo('vit').base)
    cfg.model.backbone = dict(backbone, depth=18,
                              init_cfg=cfg.model.backbone.init_cfg)
    with pytest.raises(TaskError) as err:
        MultiTaskSegmentor(cfg)
    assert text in str(err.value), str(err.value)


# --------------------------------------------------------------------------
# 7. tools/test.py evaluates an ensemble
# --------------------------------------------------------------------------
# labels 1..8 of the synthetic dataset, 0..7 after reduce_zero_label
USED_CLASSES = 8


def biased_task_file(cfg: Config, path: Path, seed: int) -> Path:
    """A random task file whose decode head favours the dataset's 8 classes
    (a bias of 30 on their logits, whose spread is about 7), so that it
    predicts only them and the mIoU is not ~0; the seeds still disagree
    pixel by pixel."""
    write_task_file(cfg, path, seed)
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    with torch.no_grad():
        ckpt['state_dict']['decode_head.conv_seg.bias'][:USED_CLASSES] += 30
    torch.save(ckpt, path)
    return path


def ensemble_miou(cfg: Config, paths: List[Path], data_root: Path) -> float:
    """mmseg's IoUMetric on the argmax of the mean softmax of the
    ``init_segmentor`` models of ``paths`` over the config's test set."""
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.evaluation import IoUMetric
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    models = [init_segmentor(cfg, str(p)) for p in paths]
    dataset_cfg = cfg.test_dataloader.dataset.copy()
    dataset_cfg.data_root = str(data_root)
    dataset = DATASETS.build(dataset_cfg)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        data = dataset[i]
        batch = dict(inputs=[data['inputs']],
                     data_samples=[data['data_samples']])
        with torch.no_grad():
            outs = [m.test_step(batch)[0] for m in models]
        probs = torch.stack([o.seg_logits.data.softmax(0) for o in outs])
        sample = outs[0]
        sample.pred_sem_seg = PixelData(data=probs.mean(0).argmax(
            0, keepdim=True))
        metric.process(batch, [sample.to_dict()])
    return metric.evaluate(len(dataset))['mIoU']


@pytest.mark.slow
def test_test_py_with_several_task_files_evaluates_their_ensemble(
        tmp_path_factory):
    """``tools/test.py CONFIG s0 s1 s2`` prints the mIoU of the mean
    softmax of the three task files' own segmentors (computed here with
    IoUMetric on the same test set, within 0.01 points); ``s0 s0 s0`` gives
    ``s0``'s own mIoU; ``--load-partial`` with several files is refused."""
    ws = synthetic_workspace(tmp_path_factory, 'ensemble_eval')
    torch.manual_seed(7)
    base = base_file('vit', ws / 'base.pth')
    cfg = task_config('vit', base)
    seeds = [biased_task_file(cfg, ws / f's{s}.pth', s) for s in range(3)]
    options = ['--cfg-options', 'model.backbone.init_cfg._delete_=True',
               'model.backbone.init_cfg.type=Pretrained',
               f'model.backbone.init_cfg.checkpoint={base}', *no_workers()]

    def test_py(*ckpts, work='work'):
        log = run([PYTHON, REPO / 'tools/test.py', REPO / CONFIGS['vit'],
                   *ckpts, '--work-dir', ws / work, *options], cwd=ws)
        values = metric_values(log)
        assert len(values) == 1, log[-3000:]
        return values[0]

    ensemble = test_py(*seeds, work='ens')
    expected = ensemble_miou(
        cfg, seeds, ws / 'data/synthetic_ade20k/ADEChallengeData2016')
    singles = [ensemble_miou(cfg, [p], ws /
                             'data/synthetic_ade20k/ADEChallengeData2016')
               for p in seeds]
    # the numbers: the biased random heads give mIoUs of a few percent
    # (8.04, 2.24 and 4.59 for the three seeds, 7.64 for their ensemble, on
    # this seeded base); what is tested is that tools/test.py agrees with
    # the computation here, and that the ensemble is none of its members
    assert abs(ensemble - expected) <= 0.01, (ensemble, expected, singles)
    assert expected > 0 and min(abs(expected - s) for s in singles) > 0.01

    single = test_py(seeds[0], work='s0')
    assert abs(single - singles[0]) <= 0.01
    assert test_py(seeds[0], seeds[0], seeds[0], work='s000') == single

    message = run_fails([PYTHON, REPO / 'tools/test.py',
                         REPO / CONFIGS['vit'], *seeds, '--load-partial',
                         '--work-dir', ws / 'partial', *options], cwd=ws)
    assert '--ignore-base-hash and --load-partial apply to one checkpoint' \
        in message
    assert 'Iter(test)' not in message


# --------------------------------------------------------------------------
# 8. a timm foundation backbone (rotary attention) behind MultiTaskSegmentor
# --------------------------------------------------------------------------
def test_timm_rotary_backbone_tasks_mix_exactly(tmp_path):
    """Two tasks on a tiny DINOv3-architecture ``VPTTimmViT`` (rotary
    attention, register tokens) with other prompt lengths, layers and class
    counts: a mixed batch equals each task's own segmentor (1e-5)."""
    tiny = dict(depth=3, embed_dim=64, num_heads=4)
    backbone = dict(type='VPTTimmViT', model_name='vit_large_patch16_dinov3',
                    timm_kwargs=tiny, out_indices=(0, 1, 2))
    base_model = MODELS.build(dict(backbone, prompt_length=0,
                                   frozen_exclude=[]))
    base_model.init_weights()
    base = tmp_path / 'dinov3_base.pth'
    torch.save(base_model.timm_model.state_dict(), base)  # timm's layout
    head = dict(_delete_=True, type='FCNHead', in_channels=64, channels=16,
                num_convs=1, in_index=2, concat_input=False,
                norm_cfg=dict(type='BN', requires_grad=True),
                align_corners=False)
    specs = {'deep4': (dict(prompt_length=4), 5),
             'layer1x2': (dict(prompt_length=2, prompt_layers=[1]), 3)}
    files = {}
    for seed, (name, (prompts, classes)) in enumerate(specs.items()):
        cfg = task_config('vit', base)
        cfg.model.backbone = dict(
            backbone, **prompts,
            init_cfg=dict(type='Pretrained', checkpoint=str(base)))
        cfg.merge_from_dict({'model.decode_head': dict(head,
                                                       num_classes=classes),
                             'model.auxiliary_head': None})
        files[name] = (cfg, write_task_file(cfg, tmp_path / f'{name}.pth',
                                            seed))
    model = MultiTaskSegmentor(str(files['deep4'][1]))
    for name, (_, path) in files.items():
        model.add_task(name, str(path))
    images = random_images(4, seed=3)
    names = ['deep4', 'layer1x2', 'layer1x2', 'deep4']
    results = model.predict(images, names)
    for img, name, got in zip(images, names, results):
        ref = inference(init_segmentor(files[name][0], str(files[name][1])),
                        img)
        a, b = got.seg_logits.data, ref.seg_logits.data
        assert a.shape == b.shape == (specs[name][1], 70, 90)
        assert (a - b).abs().max() <= 1e-5 * b.abs().max(), name
        assert torch.equal(got.pred_sem_seg.data, ref.pred_sem_seg.data)


def test_random_base_tool_writes_a_base_the_backbone_loads_all_or_nothing(
        tmp_path):
    """``tools/model_converters/random_base.py``: seeded, and the file is
    a complete base for the demo config's backbone (the serving demo)."""
    config = REPO / 'configs/demo/serving/setr_vit-tiny_vpt-deep-10_base.py'
    outs = []
    for name in ('a.pth', 'b.pth'):
        out = run([PYTHON, REPO / 'tools/model_converters/random_base.py',
                   config, tmp_path / name, '--seed', '3'], cwd=tmp_path)
        assert 'VPTVisionTransformer, 472,224 values (seed 3)' in out
        outs.append(torch.load(tmp_path / name))
    assert list(outs[0]) == list(outs[1])
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'a.pth')
    model = MultiTaskSegmentor(cfg)
    state = model.backbone.state_dict()
    assert set(state) == set(outs[0])
    assert all(torch.equal(state[k], v) for k, v in outs[0].items())
