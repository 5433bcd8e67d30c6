"""Inference API and CLI, prompt attention maps and training curves.

Fast tests build tiny models in-process; tests marked ``slow`` run the
command-line tools as users do (tools/train.py for a few iterations, then
tools/infer.py, tools/analysis/*.py)."""
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from PIL import Image

from mmseg_vpt.analysis import PromptAttentionRecorder
from mmseg_vpt.apis import (CheckpointMismatchError, CheckpointReadError,
                            ImageReadError, find_images, inference,
                            init_segmentor, save_prediction)
from mmseg_vpt.apis.inference import ade20k_meta
from mmseg_vpt.models import VPTSwinTransformer, VPTVisionTransformer

from .tools_helpers import PYTHON, REPO, short_schedule, train_cmd
from .vpt_helpers import assert_outputs_equal, randomize_

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
SWIN_DEMO = 'configs/demo/upernet_swin-tiny_vpt-deep_synthetic-ade20k.py'


# ---------------------------------------------------------------------------
# attention maps: hooks only read, and the recomputation is the layer's own
# ---------------------------------------------------------------------------
def tiny_vit(**kwargs) -> VPTVisionTransformer:
    args = dict(img_size=(32, 48), patch_size=8, embed_dims=32, num_layers=4,
                num_heads=4, out_indices=(1, 3), prompt_length=5,
                final_norm=True)
    args.update(kwargs)
    model = VPTVisionTransformer(**args)
    model.init_weights()
    randomize_(model)
    return model.eval()


def tiny_swin(**kwargs) -> VPTSwinTransformer:
    # 40 px / patch 4 = 10x10 tokens: padded to 12x12, 3x3 windows of 4,
    # shifted blocks; then 5x5 (padded to 8x8) and 3x3
    args = dict(pretrain_img_size=40, embed_dims=16, patch_size=4,
                window_size=4, depths=(2, 2, 2), num_heads=(2, 2, 4),
                strides=(4, 2, 2), out_indices=(0, 1, 2), mlp_ratio=2,
                drop_path_rate=0.0, prompt_length=3)
    args.update(kwargs)
    model = VPTSwinTransformer(**args)
    model.init_weights()
    randomize_(model)
    return model.eval()


def blocks(model):
    if hasattr(model, 'stages'):
        return [b for s in model.stages for b in s.blocks]
    return list(model.layers)


class NormTaps:
    """Inputs of every block's first norm = the block inputs."""

    def __init__(self, model):
        self.inputs = {}
        self.handles = [
            b.norm1.register_forward_hook(self._hook(i))
            for i, b in enumerate(blocks(model))
        ]

    def _hook(self, i):
        def hook(module, args, output):
            self.inputs[i] = args[0].detach()
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize('kwargs', [
    dict(), dict(prompt_layers='shallow'), dict(prompt_layers=[1, 2]),
    dict(with_cls_token=False)
], ids=['deep', 'shallow', 'layers_1_2', 'no_cls'])
def test_vit_attention_hooks_leave_outputs_bit_identical(kwargs):
    model = tiny_vit(**kwargs)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        plain = model(x)
        with PromptAttentionRecorder(model, [0, 1, 2, 3]) as rec:
            hooked = model(x)
        after = model(x)
    assert_outputs_equal(plain, hooked)
    assert_outputs_equal(plain, after)
    maps = rec.maps()
    assert not any(m._forward_hooks or m._forward_pre_hooks
                   for m in model.modules())
    prompted = [m.layer for m in maps if m.num_prompts]
    expected = {'deep': [0, 1, 2, 3], 'shallow': [0, 1, 2, 3],
                'layers_1_2': [1, 2, 3]}
    if kwargs.get('prompt_layers') == [1, 2]:
        assert prompted == expected['layers_1_2']
    else:
        assert prompted == [0, 1, 2, 3]
    for m in maps:
        if m.num_prompts:
            assert m.image_to_prompt.shape == (2, 4, 6)
            assert m.prompt_to_image.shape == (2, 4, 6)
            assert (m.image_to_prompt >= 0).all() and \
                (m.image_to_prompt <= 1).all()


@pytest.mark.parametrize('kwargs', [
    dict(), dict(prompt_layers='shallow'), dict(prompt_layers=[1, 3, 4])
], ids=['deep', 'shallow', 'layers_1_3_4'])
def test_swin_attention_hooks_leave_outputs_bit_identical(kwargs):
    model = tiny_swin(**kwargs)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        plain = model(x)
        with PromptAttentionRecorder(model, range(6)) as rec:
            hooked = model(x)
    assert_outputs_equal(plain, hooked)
    maps = rec.maps()
    assert [m.hw for m in maps] == [(10, 10)] * 2 + [(5, 5)] * 2 + \
        [(3, 3)] * 2
    for m in maps:
        if m.num_prompts:
            assert m.image_to_prompt.shape == (2, *m.hw)
            assert torch.isfinite(m.prompt_to_image).all()
            assert (m.image_to_prompt > 0).all() and \
                (m.image_to_prompt < 1).all()


@pytest.mark.parametrize('kwargs', [dict(), dict(prompt_layers='shallow')],
                         ids=['deep', 'shallow'])
def test_vit_recomputed_attention_reproduces_the_layer_output(kwargs):
    """probs @ V through the layer's projection and FFN gives the next
    layer's input: the recomputed probabilities are the layer's."""
    model = tiny_vit(**kwargs)
    x = torch.randn(2, 3, 32, 48)
    taps = NormTaps(model)
    with torch.no_grad(), PromptAttentionRecorder(model, [0, 1, 2]) as rec:
        model(x)
    taps.remove()
    for m in rec.maps(keep_probs=True):
        layer = model.layers[m.layer]
        xin = taps.inputs[m.layer]
        mha = layer.attn.attn
        B, N, C = xin.shape
        v = F.linear(layer.ln1(xin), mha.in_proj_weight,
                     mha.in_proj_bias).chunk(3, -1)[2]
        v = v.reshape(B, N, mha.num_heads, -1).transpose(1, 2)
        out = (m.probs @ v).transpose(1, 2).reshape(B, N, C)
        y = xin + mha.out_proj(out)
        y = layer.ffn(layer.ln2(y), identity=y)
        nxt = taps.inputs[m.layer + 1]
        # the image tokens (and class token) pass on unchanged; deep
        # prompts are replaced before the next layer
        P = m.num_prompts
        torch.testing.assert_close(y[:, 0], nxt[:, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y[:, 1 + P:], nxt[:, 1 + P:], atol=1e-5,
                                   rtol=1e-5)


def _swin_block_from_probs(block, xin, probs, P, hw):
    """A Swin block's output computed from given attention probabilities,
    with mmseg's padding, cyclic shift and window partition written out."""
    w_msa = block.attn.w_msa
    B, L, C = xin.shape
    H, W = hw
    ws, shift = block.attn.window_size, block.attn.shift_size
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    nW = (Hp // ws) * (Wp // ws)
    x = block.norm1(xin)
    tokens = F.pad(x[:, P:].reshape(B, H, W, C), (0, 0, 0, Wp - W, 0, Hp - H))
    if shift:
        tokens = torch.roll(tokens, (-shift, -shift), (1, 2))
    win = tokens.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(
        0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
    heads = w_msa.num_heads
    v = w_msa.qkv(win).chunk(3, -1)[2]
    pv = w_msa.qkv(x[:, :P]).chunk(3, -1)[2]
    pv = pv[:, None].expand(B, nW, P, C).reshape(B * nW, P, C)
    v = torch.cat([pv, v], 1).reshape(B * nW, P + ws * ws, heads, -1)
    out = (probs @ v.transpose(1, 2)).transpose(1, 2).reshape(
        B * nW, P + ws * ws, C)
    prompts = w_msa.proj(out[:, :P].reshape(B, nW, P, C).mean(1))
    img = w_msa.proj(out[:, P:]).reshape(B, Hp // ws, Wp // ws, ws, ws, C)
    img = img.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    if shift:
        img = torch.roll(img, (shift, shift), (1, 2))
    img = img[:, :H, :W].reshape(B, H * W, C)
    y = xin + torch.cat([prompts, img], 1)
    return block.ffn(block.norm2(y), identity=y)


@pytest.mark.parametrize('kwargs', [dict(), dict(prompt_layers='shallow')],
                         ids=['deep', 'shallow'])
def test_swin_recomputed_window_attention_reproduces_the_block_output(
        kwargs):
    """Window partition, cyclic shift, shift mask, relative position bias
    and prompts joined to every window: the block's output follows from
    the recomputed probabilities, plain and shifted blocks, with padding."""
    model = tiny_swin(**kwargs)
    x = torch.randn(2, 3, 40, 40)
    taps = NormTaps(model)
    with torch.no_grad(), PromptAttentionRecorder(model, [0, 1, 2]) as rec:
        model(x)
    taps.remove()
    bl = blocks(model)
    for m in rec.maps(keep_probs=True):
        xin = taps.inputs[m.layer]
        assert (bl[m.layer].attn.shift_size > 0) == (m.layer % 2 == 1)
        with torch.no_grad():
            y = _swin_block_from_probs(bl[m.layer], xin, m.probs,
                                       m.num_prompts, m.hw)
        if m.layer == 0:  # block 1 is in the same stage
            nxt = taps.inputs[1]
            P = m.num_prompts
            torch.testing.assert_close(y[:, P:], nxt[:, P:], atol=1e-5,
                                       rtol=1e-5)
            if kwargs.get('prompt_layers') == 'shallow':
                # prompts are carried on, so their outputs must match too
                torch.testing.assert_close(y[:, :P], nxt[:, :P], atol=1e-5,
                                           rtol=1e-5)
        elif m.layer == 1:  # last block of stage 0: compare the stage map
            nxt_stage = model.stages[0].downsample
            merged, _ = nxt_stage(y[:, m.num_prompts:], (10, 10))
            P = taps.inputs[2].shape[1] - 25
            torch.testing.assert_close(merged, taps.inputs[2][:, P:],
                                       atol=1e-5, rtol=1e-5)


def test_recorder_rejects_layers_out_of_range():
    with pytest.raises(ValueError, match='has 4 layers'):
        PromptAttentionRecorder(tiny_vit(), [0, 4])


# ---------------------------------------------------------------------------
# inference API (in process, tiny demo model)
# ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def demo_model_files(tmp_path_factory):
    """The demo ViT config, a full checkpoint of it, and a tuned-only
    checkpoint of the same model against a saved base weights file."""
    from mmseg_vpt.checkpoint import model_from_config, plan_tuned
    root = tmp_path_factory.mktemp('api')
    torch.manual_seed(0)
    model = model_from_config(str(REPO / VIT_DEMO))
    model.init_weights()
    randomize_(model.backbone, std=0.05)
    full = root / 'full.pth'
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, full)

    base = root / 'base.pth'
    backbone_state = {k: v for k, v in model.backbone.state_dict().items()
                      if 'prompt' not in k}
    torch.save(backbone_state, base)
    cfg = Config.fromfile(str(REPO / VIT_DEMO))
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint=str(base))
    based = model_from_config(cfg)
    based.load_state_dict(model.state_dict())
    plan = plan_tuned(based, require=True)
    tuned_ckpt = plan.apply({'meta': {}, 'state_dict': based.state_dict()})
    tuned = root / 'tuned.pth'
    torch.save(tuned_ckpt, tuned)
    return dict(root=root, model=model, full=full, tuned=tuned, cfg=cfg)


def test_inference_predicts_at_the_image_size_with_ade20k_palette(
        demo_model_files):
    model = init_segmentor(str(REPO / VIT_DEMO), str(demo_model_files['full']))
    assert model.dataset_meta['palette'] == ade20k_meta()['palette']
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)
    result = inference(model, img)
    label = result.pred_sem_seg.data[0].numpy()
    assert label.shape == (50, 70)
    assert label.min() >= 0 and label.max() < 150
    # a list gives a list; images may differ in size
    results = inference(model, [img, img[:40, :30]])
    assert [r.pred_sem_seg.shape for r in results] == [(50, 70), (40, 30)]
    assert torch.equal(results[0].pred_sem_seg.data, result.pred_sem_seg.data)

    out = demo_model_files['root'] / 'pred'
    label_path, overlay_path = save_prediction(model, img, result, out,
                                               name='x')
    png = Image.open(label_path)
    assert png.mode == 'P' and png.size == (70, 50)
    assert np.array_equal(np.array(png), label)
    assert png.getpalette()[:6] == ade20k_meta()['palette'][0] + \
        ade20k_meta()['palette'][1]
    assert cv2.imread(str(overlay_path)).shape == img.shape


def test_sliding_window_test_cfg_is_used_and_covers_the_image(
        demo_model_files):
    slide = {'model.test_cfg': dict(mode='slide', crop_size=(64, 64),
                                    stride=(40, 40))}
    model = init_segmentor(str(REPO / VIT_DEMO),
                           str(demo_model_files['full']), cfg_options=slide)
    calls = []
    model.slide_inference = (lambda real: lambda *a, **k: calls.append(1)
                             or real(*a, **k))(model.slide_inference)
    # the demo test pipeline resizes to fit 512x128: 100x300 -> 43x128
    img = np.random.default_rng(2).integers(0, 255, (100, 300, 3), np.uint8)
    result = inference(model, img)
    assert calls and result.pred_sem_seg.shape == (100, 300)
    assert result.pred_sem_seg.data.max() < 150


def test_tuned_only_checkpoint_predicts_like_the_full_one(demo_model_files):
    """Base weights come from the config's init_cfg; the result equals the
    full checkpoint's bit for bit."""
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    full = init_segmentor(str(REPO / VIT_DEMO), str(demo_model_files['full']))
    tuned = init_segmentor(demo_model_files['cfg'],
                           str(demo_model_files['tuned']))
    ckpt = torch.load(demo_model_files['tuned'], weights_only=False)
    assert 'vpt_tuned' in ckpt['meta']
    assert not any(k.startswith('backbone.layers') for k in
                   ckpt['state_dict'])
    a = inference(full, img).seg_logits.data
    b = inference(tuned, img).seg_logits.data
    assert torch.equal(a, b)


def test_checkpoint_that_does_not_fit_the_config_is_a_clear_error(
        demo_model_files):
    with pytest.raises(CheckpointMismatchError) as err:
        init_segmentor(str(REPO / VIT_DEMO), str(demo_model_files['full']),
                       cfg_options={'model.backbone.prompt_length': 5})
    msg = str(err.value)
    assert str(demo_model_files['full']) in msg and VIT_DEMO in msg
    assert 'backbone.prompt_embeddings' in msg and 'Shape mismatch' in msg
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        init_segmentor(str(REPO / VIT_DEMO), 'nothing.pth')
    garbage = demo_model_files['root'] / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointReadError, match='garbage.pth'):
        init_segmentor(str(REPO / VIT_DEMO), str(garbage))


def test_unreadable_image_is_an_error_naming_the_file(tmp_path,
                                                      demo_model_files):
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not an image')
    model = init_segmentor(str(REPO / VIT_DEMO), str(demo_model_files['full']))
    with pytest.raises(ImageReadError, match='broken.jpg'):
        inference(model, str(bad))


def test_find_images_expands_folders_and_globs_and_names_what_is_empty(
        tmp_path):
    (tmp_path / 'imgs').mkdir()
    (tmp_path / 'empty').mkdir()
    for name in ('b.jpg', 'a.png', 'notes.txt'):
        (tmp_path / 'imgs' / name).write_bytes(b'x')
    scan = find_images([str(tmp_path / 'imgs'), str(tmp_path / 'imgs/*.png'),
                        str(tmp_path / 'empty'), str(tmp_path / 'none.jpg'),
                        str(tmp_path / 'nomatch*.jpg')])
    assert [Path(p).name for p in scan.images] == ['a.png', 'b.jpg']
    assert len(scan.errors) == 3
    assert any('empty' in e and 'no images' in e for e in scan.errors)
    assert any('none.jpg' in e for e in scan.errors)
    assert any('nomatch*.jpg' in e for e in scan.errors)


# ---------------------------------------------------------------------------
# the tools, as users run them
# ---------------------------------------------------------------------------
def run_tool(cmd, cwd, timeout=600):
    """Run ``cmd``; return (exit status, stdout, stderr)."""
    import os
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env,
                          timeout=timeout, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Generated images and a demo ViT checkpoint from tools/train.py (2
    iterations); its work dir has the LocalVisBackend scalars."""
    from mmseg_vpt.datasets.synthetic_ade20k import make_synthetic_ade20k
    root = tmp_path_factory.mktemp('tools')
    make_synthetic_ade20k(root / 'data/synthetic_ade20k', num_train=4,
                          num_val=3, img_size=64, show_progress=False)
    work = root / 'work'
    rc, out, err = run_tool(
        train_cmd(VIT_DEMO, work, '--cfg-options', *short_schedule(2)),
        cwd=root)
    assert rc == 0, out[-3000:] + err[-3000:]
    images = root / 'data/synthetic_ade20k/ADEChallengeData2016/images'
    return dict(root=root, work=work, ckpt=work / 'iter_2.pth',
                val=images / 'validation', train=images / 'training')


def infer_cmd(config, ckpt, *args):
    return [PYTHON, REPO / 'tools/infer.py', REPO / config, ckpt, *args]


@pytest.mark.slow
def test_infer_cli_writes_labels_and_overlays_and_reports_bad_files(
        trained):
    root = trained['root']
    bad = root / 'broken.png'
    bad.write_bytes(b'\x89PNG garbage')
    out_dir = root / 'out'
    rc, out, err = run_tool(
        infer_cmd(VIT_DEMO, trained['ckpt'], trained['val'],
                  str(trained['train'] / '*_00000001.jpg'), bad,
                  root / 'missing.jpg', '--out-dir', out_dir,
                  '--opacity', '0.6'), cwd=root)
    # the good images are all written, then the failures listed, status 1
    assert rc == 1, out + err
    assert 'broken.png' in err and 'missing.jpg' in err
    assert '2 input(s) failed' in err
    names = sorted(p.name for p in (out_dir / 'labels').iterdir())
    assert names == ['ADE_train_00000001.png', 'ADE_val_00000001.png',
                     'ADE_val_00000002.png', 'ADE_val_00000003.png']
    palette = ade20k_meta()['palette']
    for name in names:
        src = next(trained['val'].glob(Path(name).stem + '.jpg'), None) or \
            trained['train'] / (Path(name).stem + '.jpg')
        img = cv2.imread(str(src))
        label = Image.open(out_dir / 'labels' / name)
        assert label.mode == 'P' and label.size == img.shape[1::-1]
        values = np.array(label)
        assert values.max() < 150
        assert label.getpalette()[:3] == palette[0]
        over = cv2.imread(str(out_dir / 'overlays' / name))
        assert over.shape == img.shape
        # the overlay is the blend the tool promises
        colors = np.array(palette, np.float32)[values][..., ::-1]
        expect = img.astype(np.float32) * 0.4 + colors * 0.6
        assert np.abs(over.astype(np.float32) - expect).max() <= 1


@pytest.mark.slow
def test_infer_cli_stops_on_a_folder_without_images_or_a_wrong_checkpoint(
        trained):
    root = trained['root']
    empty = root / 'no_images'
    empty.mkdir(exist_ok=True)
    rc, out, err = run_tool(
        infer_cmd(VIT_DEMO, trained['ckpt'], empty, '--out-dir',
                  root / 'o1'), cwd=root)
    assert rc == 2 and 'no_images: folder has no images' in err

    rc, out, err = run_tool(
        infer_cmd(VIT_DEMO, trained['ckpt'], trained['val'], '--out-dir',
                  root / 'o2', '--cfg-options', 'model.backbone.num_layers=3',
                  'model.backbone.out_indices=[0,1,2]'), cwd=root)
    assert rc == 2, out + err
    assert f'Checkpoint {trained["ckpt"]} does not fit' in err
    assert 'backbone.layers.3' in err
    assert not (root / 'o2' / 'labels').exists()


@pytest.mark.slow
def test_prompt_attention_cli_renders_a_grid_for_vit_and_swin(trained):
    root = trained['root']
    image = trained['val'] / 'ADE_val_00000001.jpg'
    for config, ckpt, layers in ((VIT_DEMO, trained['ckpt'], ['0', '2', '3']),
                                 (SWIN_DEMO, 'none', ['0', '3', '7'])):
        out = root / f'att_{Path(config).stem}.png'
        rc, stdout, err = run_tool(
            [PYTHON, REPO / 'tools/analysis/prompt_attention.py',
             REPO / config, ckpt, image, '--layers', *layers, '--out', out],
            cwd=root)
        assert rc == 0, stdout + err
        png = cv2.imread(str(out))
        assert png is not None and png.shape[0] > 600  # three rows
        assert all(f'layer  {i}' in stdout or f'layer {i}' in stdout
                   for i in layers)


@pytest.mark.slow
def test_plot_curves_cli_plots_loss_and_miou_from_the_local_backend(
        trained):
    out = trained['root'] / 'curves.png'
    rc, stdout, err = run_tool(
        [PYTHON, REPO / 'tools/analysis/plot_curves.py', trained['work'],
         '--out', out], cwd=trained['root'])
    assert rc == 0, stdout + err
    assert 'loss, mIoU' in stdout and cv2.imread(str(out)) is not None
