"""The fast paths (``fused_attn=True``, the default) against the plain
reference paths (``fused_attn=False``): outputs and the gradients of every
trainable parameter agree within float32 rounding for ViT and Swin (shifted
windows, padding, with and without prompts, every prompt layout); the
Swin window index maps move data exactly; activation checkpointing works on
the fast paths; a frozen backbone runs no weight-gradient GEMMs; and the
benchmark tool runs end to end (its timings are never asserted)."""
import json
import subprocess

import pytest
import torch
import torch.nn.functional as F
from mmseg.models.backbones.swin import ShiftWindowMSA

from mmseg_vpt.models import VPTSwinTransformer, VPTVisionTransformer
from mmseg_vpt.models.backbones.vpt_swin import _window_maps, shift_window_mask
from mmseg_vpt.analysis.benchmark import make_spec, measure

from .tools_helpers import PYTHON, REPO
from .vpt_helpers import randomize_

VIT = dict(img_size=32, patch_size=8, embed_dims=32, num_layers=4,
           num_heads=4, mlp_ratio=2, out_indices=(0, 1, 2, 3))
# 64 px: maps 16x16, 8x8, 4x4 with window 4; every stage has a plain and a
# shifted block
SWIN = dict(pretrain_img_size=64, embed_dims=16, patch_size=4, window_size=4,
            depths=(2, 2, 2), num_heads=(2, 2, 4), strides=(4, 2, 2),
            out_indices=(0, 1, 2), mlp_ratio=2, drop_path_rate=0.0)

PROMPTS = {
    'deep': dict(prompt_length=5),
    'shallow': dict(prompt_length=5, prompt_layers='shallow'),
    'list': dict(prompt_length=5, prompt_layers=[1, 3]),
    'no_prompts_full': dict(prompt_length=0, frozen_exclude=['all']),
    'deep_full': dict(prompt_length=5, frozen_exclude=['all']),
    'deep_bias': dict(prompt_length=5, frozen_exclude=['prompt', 'bias']),
}


def assert_close(a: torch.Tensor, b: torch.Tensor, name: str = '') -> None:
    """Equal within float32 rounding, relative to the tensor's scale."""
    assert a.shape == b.shape, name
    err = (a - b).abs().max().item()
    scale = b.abs().max().item()
    assert err <= 1e-5 * max(scale, 1.0), (name, err, scale)


def outputs_and_grads(model, x: torch.Tensor, fused: bool):
    """Features and the gradients of every trainable parameter for a fixed
    weighting of the features, with the fast path on or off."""
    model.fused_attn = fused
    model.zero_grad()
    feats = model(x)
    loss = sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum()
               for f in feats)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return [f.detach() for f in feats], grads


def check_fast_matches_plain(model, x: torch.Tensor) -> None:
    plain_feats, plain_grads = outputs_and_grads(model, x, fused=False)
    fast_feats, fast_grads = outputs_and_grads(model, x, fused=True)
    for i, (a, b) in enumerate(zip(fast_feats, plain_feats)):
        assert_close(a, b, f'output {i}')
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(fast_grads) == set(plain_grads) == trainable
    for name in trainable:
        assert_close(fast_grads[name], plain_grads[name], name)


# ---------------------------------------------------------------------------
# ViT
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('prompts', list(PROMPTS.values()), ids=list(PROMPTS))
@pytest.mark.parametrize('config', [
    dict(),
    dict(with_cls_token=False, qkv_bias=False),
    dict(final_norm=True, out_indices=(1, 3)),
], ids=['cls', 'no_cls_no_qkv_bias', 'final_norm'])
def test_vit_fused_attention_matches_mmcv_attention(prompts, config):
    model = VPTVisionTransformer(**dict(VIT, **config, **prompts))
    randomize_(model)
    model.train()
    check_fast_matches_plain(model, torch.randn(2, 3, 40, 56))


def test_vit_fused_attention_falls_back_for_anything_but_self_attention():
    model = VPTVisionTransformer(**VIT, prompt_length=0, frozen_exclude=[])
    attn = model.layers[0].attn
    x = torch.randn(2, 7, 32)
    mask = torch.zeros(7, 7)
    mask[:, -1] = float('-inf')
    with torch.no_grad():
        fast = attn(x, attn_mask=mask)
        attn.fused_attn = False
        plain = attn(x, attn_mask=mask)
    assert torch.equal(fast, plain)  # the same (mmcv's) code ran


def test_vit_fused_flag_is_a_constructor_argument_and_a_property():
    model = VPTVisionTransformer(**VIT, fused_attn=False)
    assert model.fused_attn is False
    assert not any(layer.attn.fused_attn for layer in model.layers)
    model.fused_attn = True
    assert all(layer.attn.fused_attn for layer in model.layers)
    # no parameter or buffer was added: checkpoints are unchanged
    plain = VPTVisionTransformer(**VIT)
    assert list(model.state_dict()) == list(plain.state_dict())


# ---------------------------------------------------------------------------
# Swin
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('prompts', list(PROMPTS.values()), ids=list(PROMPTS))
@pytest.mark.parametrize('size', [(64, 64), (56, 72), (36, 44)],
                         ids=['window_multiple', 'padded', 'padded_small'])
def test_swin_fast_path_matches_plain_path(prompts, size):
    model = VPTSwinTransformer(**dict(SWIN, **prompts))
    randomize_(model)
    model.train()
    check_fast_matches_plain(model, torch.randn(2, 3, *size))


@pytest.mark.parametrize('batch', [1, 3])
def test_swin_fast_path_matches_plain_path_for_other_batch_sizes(batch):
    model = VPTSwinTransformer(**dict(SWIN, window_size=3), prompt_length=3)
    randomize_(model)
    model.train()
    check_fast_matches_plain(model, torch.randn(batch, 3, 56, 72))


def test_swin_fast_path_is_batch_independent():
    model = VPTSwinTransformer(**SWIN, prompt_length=5)
    randomize_(model)
    model.eval()
    x = torch.randn(3, 3, 56, 72)
    with torch.no_grad():
        batch = model(x)
        for i in range(3):
            for a, b in zip(model(x[i:i + 1]), batch):
                assert_close(a[0], b[i])


def test_swin_fast_path_takes_attention_outputs_in_another_memory_layout(
        monkeypatch):
    """CUDA's SDPA kernels return (B, H, L, d) outputs laid out as
    (B, L, H, d); the shifted-window path once ``view``-ed them and failed on
    the GPU ('view size is not compatible'). Emulate that layout on CPU."""
    model = VPTSwinTransformer(**SWIN, prompt_length=5)
    randomize_(model)
    model.eval()
    x = torch.randn(2, 3, 56, 72)
    with torch.no_grad():
        expected = model(x)
    sdpa = F.scaled_dot_product_attention

    def cuda_like_layout(*args, **kwargs):
        out = sdpa(*args, **kwargs)
        return out.transpose(1, 2).contiguous().transpose(1, 2)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', cuda_like_layout)
    with torch.no_grad():
        got = model(x)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


@pytest.mark.parametrize('fused', [True, False])
def test_swin_trains_after_inference_mode_filled_the_window_caches(fused):
    """The cached index maps and shift masks are built once per shape; when
    the first call ran under torch.inference_mode they must still serve a
    later training step (inference tensors cannot be saved for backward)."""
    _window_maps.cache_clear()
    shift_window_mask.cache_clear()
    # a size no other test uses, so the first build happens here
    model = VPTSwinTransformer(**SWIN, prompt_length=5, fused_attn=fused)
    x = torch.randn(1, 3, 68, 76)
    with torch.inference_mode():
        model(x)
    out = model(x)
    sum(o.sum() for o in out).backward()
    assert model.prompt_embeddings[0].grad.abs().sum() > 0


@pytest.mark.parametrize('hw, shift', [((16, 16), 0), ((16, 16), 2),
                                       ((14, 18), 2), ((5, 7), 1)])
@pytest.mark.parametrize('P', [0, 3])
def test_swin_window_maps_move_rows_exactly_like_pad_roll_partition(
        hw, shift, P):
    """One index_select does mmseg's pad + roll + window_partition, and one
    more their inverse, bit for bit."""
    model = VPTSwinTransformer(**SWIN, prompt_length=0, frozen_exclude=[])
    attn = model.stages[0].blocks[0].attn
    attn.shift_size = shift
    ws, (H, W), B, C = 4, hw, 2, 16
    maps = _window_maps(B, H, W, P, P, ws, shift, torch.device('cpu'))
    seq = torch.randn(B, P + H * W, C)

    tokens = seq[:, P:].reshape(B, H, W, C)
    ref = F.pad(tokens, (0, 0, 0, -W % ws, 0, -H % ws))
    ref = torch.roll(ref, (-shift, -shift), (1, 2)) if shift else ref
    ref = attn.window_partition(ref).reshape(-1, C)
    windows = seq.reshape(-1, C).index_select(0, maps.gather)
    if maps.pad_rows is not None:
        windows.index_fill_(0, maps.pad_rows, 0.0)
    assert torch.equal(windows, ref)

    back = windows.index_select(0, maps.scatter).view(B, P + H * W, C)
    assert torch.equal(back[:, P:], seq[:, P:])
    if shift:
        # the shift mask mmseg's own ShiftWindowMSA.forward passes to w_msa
        seen = {}
        hook = attn.w_msa.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.update(kwargs), with_kwargs=True)
        with torch.no_grad():
            ShiftWindowMSA.forward(attn, seq[:, P:], (H, W))
        hook.remove()
        assert torch.equal(maps.mask, seen['mask'])
    else:
        assert maps.mask is None


def test_swin_fused_flag_is_a_constructor_argument_and_a_property():
    model = VPTSwinTransformer(**SWIN, fused_attn=False)
    blocks = [b for s in model.stages for b in s.blocks]
    assert model.fused_attn is False
    assert not any(b.attn.w_msa.fused_attn for b in blocks)
    model.fused_attn = True
    assert all(b.attn.w_msa.fused_attn for b in blocks)


# ---------------------------------------------------------------------------
# activation checkpointing on the fast paths
# ---------------------------------------------------------------------------
@pytest.mark.filterwarnings('ignore:torch.utils.checkpoint')  # mmseg's call
@pytest.mark.parametrize('frozen_exclude', [['prompt'], ['all']])
@pytest.mark.parametrize('backbone', ['vit', 'swin'])
def test_with_cp_on_fast_path_gives_same_outputs_and_grads(
        backbone, frozen_exclude, count_checkpoints):
    cls, cfg = ((VPTVisionTransformer, VIT) if backbone == 'vit' else
                (VPTSwinTransformer, SWIN))
    plain = cls(**cfg, prompt_length=5, frozen_exclude=frozen_exclude)
    randomize_(plain)
    ckpt = cls(**cfg, prompt_length=5, frozen_exclude=frozen_exclude,
               with_cp=True)
    ckpt.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 56, 72)
    results = []
    for model in (plain, ckpt):
        model.eval()  # no dropout: recomputation must reproduce the forward
        results.append(outputs_and_grads(model, x, fused=True))
    assert count_checkpoints() == (4 if backbone == 'vit' else 6)
    (fa, ga), (fb, gb) = results
    for a, b in zip(fa, fb):
        assert_close(a, b)
    assert set(ga) == set(gb) and ga
    for name in ga:
        assert_close(ga[name], gb[name], name)


# ---------------------------------------------------------------------------
# no weight gradients for frozen layers
# ---------------------------------------------------------------------------
def backward_gemm_results(model, x: torch.Tensor) -> set:
    """Result shapes of every matrix product in the backward pass."""
    from torch.profiler import profile
    model.train()
    loss = sum(f.sum() for f in model(x))
    with profile(record_shapes=True) as prof:
        loss.backward()
    shapes = set()
    for event in prof.events():
        dims = [s for s in event.input_shapes if s]
        if event.name in ('aten::mm', 'aten::bmm') and len(dims) >= 2:
            a, b = dims[0], dims[1]
            shapes.add((*a[:-2], a[-2], b[-1]))
        elif event.name == 'aten::addmm' and len(dims) >= 3:
            shapes.add((dims[1][0], dims[2][1]))
    return shapes


@pytest.mark.parametrize('backbone', ['vit', 'swin'])
def test_frozen_backbone_runs_no_weight_gradient_gemms(backbone):
    """Prompt gradients flow back through every layer, but only as input
    gradients: no GEMM in the backward produces a frozen weight's shape. The
    same detector finds them when the backbone trains (full fine-tuning).
    Sizes are chosen so that no token count equals a layer width (e.g. Swin
    width 24: window rows 640/192/64, weights 24..192 wide)."""
    cls, cfg = ((VPTVisionTransformer, VIT) if backbone == 'vit' else
                (VPTSwinTransformer, dict(SWIN, embed_dims=24)))
    x = torch.randn(2, 3, 56, 72)
    vpt = cls(**cfg, prompt_length=5)
    frozen = {tuple(p.shape) for n, p in vpt.named_parameters()
              if p.dim() == 2 and not p.requires_grad}
    assert frozen
    vpt_gemms = backward_gemm_results(vpt, x)
    assert vpt_gemms, 'the backward ran no GEMM at all'
    assert not vpt_gemms & frozen
    full = cls(**cfg, prompt_length=5, frozen_exclude=['all'])
    assert backward_gemm_results(full, x) & frozen


# ---------------------------------------------------------------------------
# the benchmark tool
# ---------------------------------------------------------------------------
TINY_VIT = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
RESULT_FIELDS = {'label', 'mode', 'batch_size', 'crop_size', 'times',
                 'median', 'min', 'max', 'images_per_s', 'peak_mem',
                 'mem_kind', 'peak_raw', 'baseline', 'trainable_params',
                 'trainable_fp32_bytes', 'params', 'device', 'threads',
                 'backbone', 'prompt_length', 'fused_attn', 'with_cp', 'amp'}


@pytest.mark.parametrize('mode', ['train', 'train_backbone', 'backbone'])
def test_measure_reports_every_field_in_process(mode):
    spec = make_spec(config=str(REPO / TINY_VIT), mode=mode, batch_size=1,
                     warmup=0, iters=2, threads=1)
    result = measure(spec, progress=lambda msg: None)
    assert RESULT_FIELDS <= set(result)
    assert len(result['times']) == 2
    assert result['min'] <= result['median'] <= result['max']
    assert result['crop_size'] == [64, 64]
    assert result['prompt_length'] == 10 and result['fused_attn'] is True
    assert 0 < result['trainable_params'] < result['params']


@pytest.mark.slow
def test_benchmark_cli_compares_two_variants_and_writes_json(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run(
        [PYTHON, REPO / 'tools/analysis/benchmark.py', REPO / TINY_VIT,
         '--vs-cfg-options', 'model.backbone.prompt_length=0',
         'model.backbone.frozen_exclude=[all]', '--batch-size', '1',
         '--warmup', '0', '--iters', '1', '--repeats', '2', '--threads', '1',
         '--out', out],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'median A/B' in proc.stdout
    assert 'iter 1/1' in proc.stderr  # progress while running
    summary = json.loads(out.read_text())
    assert len(summary['results']) == 4  # A B A B
    assert [r['prompt_length'] for r in summary['results']] == [10, 0] * 2
    for r in summary['results']:
        assert RESULT_FIELDS <= set(r)
    assert len(summary['pairs']) == 2
    assert set(summary['median_ratio']) == {'time', 'peak_mem'}
    assert summary['command'].startswith('python tools/analysis/benchmark.py')


def test_memory_breakdown_separates_backbone_savings_from_the_heads():
    """VPT-deep vs full fine-tuning of one model: same parameters and the
    same head activations; fewer gradients, less optimizer state and fewer
    backbone activations kept for backward."""
    common = dict(config=str(REPO / TINY_VIT), mode='train', batch_size=1,
                  warmup=0, iters=1, threads=1, breakdown=True)
    vpt = measure(make_spec(**common), progress=lambda msg: None)
    full = measure(make_spec(cfg_options={
        'model.backbone.prompt_length': 0,
        'model.backbone.frozen_exclude': ['all']}, **common),
        progress=lambda msg: None)
    a, b = vpt['breakdown'], full['breakdown']
    assert a['grads'] == vpt['trainable_fp32_bytes']
    assert b['grads'] == full['trainable_fp32_bytes'] > a['grads']
    assert b['optimizer_state'] > a['optimizer_state'] > 0
    assert 0 < a['saved_backbone'] < b['saved_backbone']
    # the heads see one more token-free feature map either way
    assert a['saved_decode_head'] == b['saved_decode_head'] > 0
    assert a['saved_total'] == sum(v for k, v in a.items()
                                   if k.startswith('saved_') and
                                   k != 'saved_total')
