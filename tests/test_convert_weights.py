"""Checkpoint conversion: timm / official ViT and Swin -> our backbones.

timm models are built with random weights (``pretrained=False``, nothing is
downloaded), converted, loaded strictly into our backbones with prompts off,
and must give timm's features within float32 rounding.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from mmseg.models.backbones import VisionTransformer
from mmseg.models.utils.embed import PatchMerging
from timm.models.swin_transformer import PatchMerging as TimmPatchMerging
from timm.models.vision_transformer import VisionTransformer as TimmViT

from mmseg_vpt.models import VPTSwinTransformer, VPTVisionTransformer
from mmseg_vpt.models.convert import (ConversionInfo, adapt_to_model,
                                      convert_to_mmseg, detect_format,
                                      load_checkpoint_file,
                                      unfold_order_norm,
                                      unfold_order_reduction)

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / 'tools/model_converters/convert_weights.py'
sys.path.insert(0, str(CLI.parent))
import convert_weights  # noqa: E402

RTOL = 1e-4  # max abs diff relative to the feature scale (max |feature|)


def randomise_(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter: timm initialises norms to (1, 0) and biases
    to 0, which would hide a wrong permutation of those weights."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return model.eval()


def assert_close_features(ours: torch.Tensor, ref: torch.Tensor, what: str):
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    assert diff <= RTOL * scale, f'{what}: max diff {diff} > {RTOL} * {scale}'


def vpt_vit(prompt_length=0, **kwargs) -> VPTVisionTransformer:
    """Our ViT set up like timm's: patch bias, qkv bias, LN eps 1e-6 and the
    final norm."""
    cfg = dict(patch_bias=True, qkv_bias=True, final_norm=True,
               norm_cfg=dict(type='LN', eps=1e-6))
    cfg.update(kwargs)
    return VPTVisionTransformer(
        prompt_length=prompt_length,
        frozen_exclude=['prompt'] if prompt_length else ['all'], **cfg)


def timm_patch_tokens(model: TimmViT, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        feats = model.forward_features(x)  # after the final norm
    return feats[:, model.num_prefix_tokens:]


def our_patch_tokens(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(x)[-1]
    return out.flatten(2).transpose(1, 2)


def timm_to_ms_swin(sd):
    """The official Swin release's layout from a timm 0.9+ state dict:
    downsample at the end of the previous stage, ``head`` instead of
    ``head.fc``, and the stored ``relative_position_index`` / ``attn_mask``
    buffers."""
    out = {}
    for k, v in sd.items():
        if '.downsample.' in k:
            stage = int(k.split('.')[1])
            k = k.replace(f'layers.{stage}.', f'layers.{stage - 1}.', 1)
        k = k.replace('head.fc.', 'head.')
        out[k] = v
        if k.endswith('attn.relative_position_bias_table'):
            side = int(v.shape[0]**0.5) // 2 + 1  # the window size
            out[k.replace('bias_table', 'index')] = torch.zeros(
                side**2, side**2, dtype=torch.long)
            block = int(k.split('.')[3])
            if block % 2:
                out[k.replace('attn.relative_position_bias_table',
                              'attn_mask')] = torch.zeros(4, side**2, side**2)
    return out


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def vit_b():
    torch.manual_seed(0)
    return randomise_(timm.create_model('vit_base_patch16_224',
                                        pretrained=False))


@pytest.fixture(scope='module')
def vit_b_converted(vit_b, tmp_path_factory):
    """ViT-B/16 saved as a DeiT-style ``{'model': ...}`` file and converted
    by the CLI (the one subprocess run of this module)."""
    tmp = tmp_path_factory.mktemp('vit_b')
    src, dst = tmp / 'vit_b16.pth', tmp / 'out' / 'vit_b16_mmseg.pth'
    torch.save({'model': vit_b.state_dict(), 'epoch': 3}, src)
    proc = subprocess.run([sys.executable, str(CLI), str(src), str(dst)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
    return dst, proc.stdout


@pytest.fixture(scope='module')
def swin_t():
    # Input 448 keeps every stage map (112, 56, 28, 14) larger than the
    # 7x7 window. At 224 the last map is 7x7 == window, where timm (like the
    # original Swin) turns the shift off and mmseg keeps it, so the last
    # stage would differ for reasons that have nothing to do with the
    # weights. img_size only changes timm's attention masks, not the
    # state dict.
    torch.manual_seed(0)
    return randomise_(timm.create_model('swin_tiny_patch4_window7_224',
                                        pretrained=False, img_size=448))


# --------------------------------------------------------------------------
# ViT
# --------------------------------------------------------------------------
def test_cli_vit_b16_matches_timm(vit_b, vit_b_converted):
    dst, log = vit_b_converted
    assert 'Format: timm_vit' in log
    assert 'head.weight' in log and 'head.bias' in log  # dropped
    sd = torch.load(dst, weights_only=True)
    assert f'Wrote {len(sd)} tensors' in log
    model = vpt_vit()
    model.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 224, 224)
    assert_close_features(our_patch_tokens(model, x),
                          timm_patch_tokens(vit_b, x), 'ViT-B/16')


@pytest.mark.parametrize('variant', [
    dict(patch_size=16),
    dict(patch_size=8, class_token=False, global_pool='avg'),
    dict(patch_size=14, img_size=56, no_embed_class=True),
    dict(patch_size=16, qkv_bias=False),
    dict(patch_size=16, pre_norm=True),  # CLIP-style: no patch bias
], ids=['p16', 'p8-no-cls', 'p14-no-embed-class', 'no-qkv-bias', 'pre-norm'])
def test_small_vit_variants_match_timm(variant):
    cfg = dict(img_size=64, embed_dim=64, depth=2, num_heads=2)
    cfg.update(variant)
    torch.manual_seed(0)
    timm_model = randomise_(TimmViT(**cfg))
    info = ConversionInfo()
    sd, fmt = convert_to_mmseg(timm_model.state_dict(), info=info)
    assert fmt == 'timm_vit'
    assert sd['pos_embed'].shape[1] == 1 + (cfg['img_size'] //
                                            cfg['patch_size'])**2
    assert {'head.weight', 'head.bias'} <= set(info.dropped)
    has_cls = variant.get('class_token', True)
    model = vpt_vit(img_size=cfg['img_size'], patch_size=cfg['patch_size'],
                    embed_dims=64, num_layers=2, num_heads=2,
                    with_cls_token=has_cls,
                    final_norm='ln1.weight' in sd,  # avg pool: none
                    pre_norm='ln_pre.weight' in sd,
                    patch_bias='patch_embed.projection.bias' in sd)
    model.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, cfg['img_size'], cfg['img_size'])
    assert_close_features(our_patch_tokens(model, x),
                          timm_patch_tokens(timm_model, x), str(variant))


def test_vit_prompts_on_init_cfg_leaves_only_prompts_missing(
        vit_b_converted):
    dst, _ = vit_b_converted
    sd = torch.load(dst, weights_only=True)
    model = vpt_vit(prompt_length=5,
                    init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    state = model.state_dict()
    assert set(state) - set(sd) == {'prompt_embeddings'}
    assert set(sd) <= set(state)
    for k, v in sd.items():
        assert torch.equal(state[k], v), k
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        ['prompt_embeddings']


def test_vit_pos_embed_resized_to_model_grid(vit_b):
    sd, _ = convert_to_mmseg(vit_b.state_dict())
    model = vpt_vit(img_size=256)  # 16x16 grid instead of 14x14
    adapted = adapt_to_model(sd, model)
    assert adapted['pos_embed'].shape == (1, 1 + 16 * 16, 768)
    assert torch.equal(adapted['pos_embed'][:, 0], sd['pos_embed'][:, 0])
    # the same bicubic resize mmseg applies when loading or at run time
    expected = VisionTransformer.resize_pos_embed(sd['pos_embed'], (16, 16),
                                                  (14, 14), 'bicubic')
    torch.testing.assert_close(adapted['pos_embed'], expected)
    model.load_state_dict(adapted, strict=True)


def test_vit_resized_checkpoint_equals_runtime_resize():
    """A model built for 96 px loading the adapted 64 px weights computes what
    the 64 px model computes when mmseg resizes pos_embed on the fly."""
    torch.manual_seed(0)
    for has_cls in (True, False):
        timm_model = randomise_(TimmViT(img_size=64, patch_size=16,
                                        embed_dim=64, depth=2, num_heads=2,
                                        class_token=has_cls,
                                        global_pool='token' if has_cls
                                        else 'avg', fc_norm=False))
        raw = timm_model.state_dict()
        sd, _ = convert_to_mmseg(raw)
        kwargs = dict(patch_size=16, embed_dims=64, num_layers=2,
                      num_heads=2, with_cls_token=has_cls)
        small, large = vpt_vit(img_size=64, **kwargs), vpt_vit(img_size=96,
                                                               **kwargs)
        small.load_state_dict(sd, strict=True)
        large.load_state_dict(adapt_to_model(sd, large), strict=True)
        x = torch.randn(1, 3, 96, 96)
        torch.testing.assert_close(our_patch_tokens(large, x),
                                   our_patch_tokens(small, x))
        if not has_cls:  # a raw timm pos_embed without class-token slot
            raw_adapted = adapt_to_model({'pos_embed': raw['pos_embed']},
                                         large)
            torch.testing.assert_close(raw_adapted['pos_embed'],
                                       large.pos_embed.detach())


def test_jx_vit_release_layout_with_pre_logits():
    """The old timm ViT releases (``jx_vit_large_p16_384`` for SETR) use the
    same keys; in21k ones add ``pre_logits.fc``, which is dropped."""
    sd = TimmViT(img_size=32, patch_size=16, embed_dim=32, depth=1,
                 num_heads=2).state_dict()
    sd['pre_logits.fc.weight'] = torch.zeros(32, 32)
    sd['pre_logits.fc.bias'] = torch.zeros(32)
    assert detect_format(sd) == 'timm_vit'
    info = ConversionInfo()
    out, _ = convert_to_mmseg(sd, info=info)
    assert 'pre_logits.fc.weight' in info.dropped
    assert not any('pre_logits' in k or 'head' in k for k in out)


def test_unsupported_vit_weights_are_named():
    sd = TimmViT(img_size=32, patch_size=16, embed_dim=32, depth=1,
                 num_heads=2, init_values=1e-5).state_dict()  # layer scale
    with pytest.raises(ValueError, match=r'blocks\.0\.ls1\.gamma'):
        convert_to_mmseg(sd)


# --------------------------------------------------------------------------
# Swin
# --------------------------------------------------------------------------
def swin_features_match(timm_model, sd):
    model = VPTSwinTransformer(prompt_length=0, frozen_exclude=['all'],
                               pretrain_img_size=448)
    sd = adapt_to_model(sd, model)
    # norm0..norm2 (outputs of stages 0-2) exist only in mmseg: take the
    # model's own and apply them to timm's stage outputs too
    own = model.state_dict()
    missing = set(own) - set(sd)
    assert missing == {f'norm{i}.{w}' for i in range(3)
                       for w in ('weight', 'bias')}
    sd.update({k: own[k] for k in missing})
    model.load_state_dict(sd, strict=True)
    model.eval()

    x = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        _, stages = timm_model.forward_intermediates(x)
        outs = model(x)
        for i, (ref, ours) in enumerate(zip(stages, outs)):
            norm = timm_model.norm if i == 3 else getattr(model, f'norm{i}')
            ref = norm(ref.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            assert_close_features(ours, ref, f'Swin-T stage {i}')
    assert len(outs) == 4


def test_swin_t_timm_matches_every_stage(swin_t):
    info = ConversionInfo()
    sd, fmt = convert_to_mmseg(swin_t.state_dict(), info=info)
    assert fmt == 'timm_swin'
    assert set(info.dropped) == {'head.fc.weight', 'head.fc.bias'}
    assert 'norm3.weight' in sd and 'norm.weight' not in sd
    assert any('norm3' in n and 'norm0' in n for n in info.notes)
    swin_features_match(swin_t, sd)


def test_ms_swin_layout_converts_identically(swin_t, tmp_path):
    timm_sd, _ = convert_to_mmseg(swin_t.state_dict())
    ms = timm_to_ms_swin(swin_t.state_dict())
    assert 'layers.0.downsample.reduction.weight' in ms
    assert detect_format(ms) == 'ms_swin'
    path = tmp_path / 'swin_tiny_patch4_window7_224.pth'
    torch.save({'model': ms}, path)  # as the official release wraps it
    info = ConversionInfo()
    sd, fmt = convert_to_mmseg(load_checkpoint_file(str(path)), info=info)
    assert fmt == 'ms_swin'
    assert sd.keys() == timm_sd.keys()
    for k in sd:
        assert torch.equal(sd[k], timm_sd[k]), k
    assert any(k.endswith('attn_mask') for k in info.dropped)
    assert any(k.endswith('relative_position_index') for k in info.dropped)
    assert 'head.weight' in info.dropped
    # a forced format with the other Swin layout still follows the shapes
    forced, _ = convert_to_mmseg(ms, fmt='timm_swin')
    assert torch.equal(forced['stages.0.downsample.reduction.weight'],
                       timm_sd['stages.0.downsample.reduction.weight'])


def test_swin_safetensors_and_prompts_on_init_cfg(swin_t, tmp_path):
    from safetensors.torch import save_file
    src = tmp_path / 'swin_t.safetensors'
    save_file(swin_t.state_dict(), str(src))
    dst = tmp_path / 'swin_t_mmseg.pth'
    assert convert_weights.main([str(src), str(dst)]) == 0
    sd = torch.load(dst, weights_only=True)
    model = VPTSwinTransformer(
        prompt_length=3, init_cfg=dict(type='Pretrained',
                                       checkpoint=str(dst)))
    model.init_weights()
    state = model.state_dict()
    assert set(sd) <= set(state)
    for k, v in sd.items():
        assert torch.equal(state[k], v), k
    # only prompts and the output norms the source cannot have are missing
    missing = {k for k in set(state) - set(sd)
               if not k.endswith('relative_position_index')}
    assert missing == {f'prompt_embeddings.{i}' for i in range(4)} | {
        f'norm{i}.{w}' for i in range(3) for w in ('weight', 'bias')}


def test_patch_merging_unfold_order():
    """timm's merge ([x(0,0), x(1,0), x(0,1), x(1,1)], position-major) and
    mmseg's nn.Unfold merge (channel-major) agree after the reorder."""
    torch.manual_seed(0)
    timm_merge = randomise_(TimmPatchMerging(dim=8))
    ours = PatchMerging(8, 16).eval()
    ours.reduction.weight.data = unfold_order_reduction(
        timm_merge.reduction.weight.data)
    ours.norm.weight.data = unfold_order_norm(timm_merge.norm.weight.data)
    ours.norm.bias.data = unfold_order_norm(timm_merge.norm.bias.data)
    x = torch.randn(2, 6, 6, 8)
    with torch.no_grad():
        ref = timm_merge(x).reshape(2, 9, 16)
        out, hw = ours(x.reshape(2, 36, 8), (6, 6))
    assert hw == (3, 3)
    torch.testing.assert_close(out, ref)


def test_relative_position_tables_interpolated(swin_t):
    sd, _ = convert_to_mmseg(swin_t.state_dict())
    key = 'stages.0.blocks.0.attn.w_msa.relative_position_bias_table'
    sd[key] = torch.full_like(sd[key], 0.5)  # bicubic keeps a constant
    model = VPTSwinTransformer(prompt_length=0, frozen_exclude=['all'],
                               window_size=12, out_indices=(3, ))
    info = ConversionInfo()
    adapted = adapt_to_model(sd, model, info=info)
    assert adapted[key].shape == (23 * 23, 3)
    torch.testing.assert_close(adapted[key], torch.full((529, 3), 0.5))
    idx = 'stages.0.blocks.0.attn.w_msa.relative_position_index'
    assert torch.equal(adapted[idx], model.state_dict()[idx])
    model.load_state_dict(adapted, strict=True)  # out_indices=(3,): norm3


# --------------------------------------------------------------------------
# files, formats and errors
# --------------------------------------------------------------------------
def test_mmseg_layout_passes_through(vit_b_converted):
    sd = torch.load(vit_b_converted[0], weights_only=True)
    assert detect_format(sd) == 'mmseg_vit'
    out, fmt = convert_to_mmseg(sd, fmt='mmseg')
    assert fmt == 'mmseg_vit' and out.keys() == sd.keys()
    with pytest.raises(ValueError, match='looks like mmseg_vit'):
        convert_to_mmseg(sd, fmt='timm_swin')


def test_wrapped_and_prefixed_checkpoints(tmp_path):
    w = torch.ones(2)
    torch.save({'state_dict': {'backbone.norm.weight': w,
                               'decode_head.conv.weight': w}},
               tmp_path / 'seg.pth')
    info = ConversionInfo()
    sd = load_checkpoint_file(str(tmp_path / 'seg.pth'), info=info)
    assert list(sd) == ['norm.weight']
    assert info.dropped == ['decode_head.conv.weight']
    torch.save({'model': {'module.a': w}}, tmp_path / 'ddp.bin')
    assert list(load_checkpoint_file(str(tmp_path / 'ddp.bin'))) == ['a']


def test_unknown_layout_lists_keys():
    sd = {f'encoder.layer.{i}.attention.query.weight': torch.zeros(1)
          for i in range(12)}
    with pytest.raises(ValueError, match='Unknown checkpoint layout') as e:
        detect_format(sd)
    assert 'encoder.layer.0.attention.query.weight' in str(e.value)
    assert '+2 more' in str(e.value)


def test_missing_and_unreadable_files_are_named(tmp_path, capsys):
    missing = tmp_path / 'no_such_vit.pth'
    with pytest.raises(FileNotFoundError, match='no_such_vit.pth'):
        load_checkpoint_file(str(missing))
    assert convert_weights.main([str(missing), str(tmp_path / 'o.pth')]) == 1
    assert 'no_such_vit.pth' in capsys.readouterr().err
    for name in ('garbage.pth', 'garbage.safetensors'):
        (tmp_path / name).write_bytes(b'not a checkpoint')
        with pytest.raises(ValueError, match=name):
            load_checkpoint_file(str(tmp_path / name))


def test_safetensors_without_package_says_how_to_install(tmp_path,
                                                         monkeypatch):
    path = tmp_path / 'model.safetensors'
    path.write_bytes(b'{}')
    monkeypatch.setitem(sys.modules, 'safetensors.torch', None)
    with pytest.raises(ImportError, match='pip install safetensors'):
        load_checkpoint_file(str(path))


def test_mmseg_pos_embed_of_non_square_grid_keeps_class_slot():
    """mmseg's ViT always stores a class-token slot: a 14x16 grid gives
    1 + 224 = 225 entries, a perfect square that must not be read as a
    slot-less 15x15 grid. Its grid shape cannot be told from the length, so
    resizing needs ``src_grid``; without it the error names the key and the
    shapes instead of a silently wrong resize."""
    kwargs = dict(patch_size=16, embed_dims=32, num_layers=1, num_heads=2)
    src = vpt_vit(img_size=(224, 256), **kwargs)  # 14x16 grid
    sd = src.state_dict()
    assert sd['pos_embed'].shape == (1, 225, 32)
    model = vpt_vit(img_size=(224, 288), **kwargs)  # 14x18 grid
    with pytest.raises(ValueError,
                       match=r'pos_embed.*\(1, 225, 32\).*\(1, 253, 32\)'):
        adapt_to_model(sd, model)
    adapted = adapt_to_model(sd, model, src_grid=(14, 16))
    expected = VisionTransformer.resize_pos_embed(sd['pos_embed'], (14, 18),
                                                  (14, 16), 'bicubic')
    torch.testing.assert_close(adapted['pos_embed'], expected)
    model.load_state_dict(adapted, strict=True)
    # the same grid needs no resize
    same = adapt_to_model(sd, vpt_vit(img_size=(224, 256), **kwargs))
    assert torch.equal(same['pos_embed'], sd['pos_embed'])
