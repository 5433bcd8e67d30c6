"""``init_cfg=dict(type='Pretrained')`` loads all or nothing into the VPT
backbones: any known layout (timm, official Swin, mmseg) works directly, and
a file that does not fit fails with the file and the keys named, instead of
mmseg's silent non-strict load that would leave a frozen backbone
half-random."""
import pytest
import timm
import torch
from mmseg.models.backbones import VisionTransformer

from mmseg_vpt.models import VPTSwinTransformer, VPTVisionTransformer

from .test_convert_weights import assert_close_features, randomise_

VIT = dict(img_size=64, patch_size=16, embed_dims=64, num_layers=2,
           num_heads=2, patch_bias=True, final_norm=True,
           norm_cfg=dict(type='LN', eps=1e-6), out_indices=(1, ))


def timm_vit_file(tmp_path, **kwargs):
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2,
        num_classes=10, **kwargs)
    randomise_(model)
    path = tmp_path / 'timm_vit.pth'
    torch.save(model.state_dict(), path)
    return model, path


def vit_from(path, **kwargs):
    cfg = dict(VIT, **kwargs)
    model = VPTVisionTransformer(
        init_cfg=dict(type='Pretrained', checkpoint=str(path)), **cfg)
    model.init_weights()
    return model.eval()


@torch.no_grad()
def test_timm_vit_file_loads_directly_and_matches_timm(tmp_path):
    timm_model, path = timm_vit_file(tmp_path)
    ours = vit_from(path)  # VPT-deep, 10 prompts: only prompts missing
    plain = vit_from(path, prompt_length=0, frozen_exclude=['all'])
    x = torch.randn(2, 3, 64, 64)
    ref = timm_model.forward_features(x)[:, 1:]
    feat = plain(x)[0].flatten(2).transpose(1, 2)
    assert_close_features(feat, ref, 'timm ViT via init_cfg')
    # the prompted model got the same frozen weights
    for name, value in plain.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_mmseg_checkpoint_loads_like_mmseg_does(tmp_path):
    ref = VisionTransformer(**VIT)
    ref.init_weights()
    path = tmp_path / 'mmseg_vit.pth'
    torch.save({'state_dict': ref.state_dict()}, path)
    ours = vit_from(path)
    for name, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_pos_embed_is_resized_with_the_backbone_interpolate_mode(tmp_path):
    ref = VisionTransformer(**VIT)
    ref.init_weights()
    path = tmp_path / 'mmseg_vit.pth'
    torch.save(ref.state_dict(), path)
    ours = vit_from(path, img_size=96, interpolate_mode='bilinear')
    expected = VisionTransformer.resize_pos_embed(
        ref.pos_embed, (6, 6), (4, 4), 'bilinear')
    assert torch.allclose(ours.pos_embed, expected, atol=1e-6)


def test_checkpoint_of_another_width_fails_naming_file_and_keys(tmp_path):
    _, path = timm_vit_file(tmp_path)
    with pytest.raises(ValueError) as err:
        vit_from(path, embed_dims=32)
    assert str(path) in str(err.value)
    assert 'Shape mismatches' in str(err.value)
    assert 'pos_embed' in str(err.value)


def test_checkpoint_missing_layers_fails_instead_of_half_loading(tmp_path):
    _, path = timm_vit_file(tmp_path)  # 2 layers
    with pytest.raises(ValueError) as err:
        vit_from(path, num_layers=3, out_indices=(2, ))
    message = str(err.value)
    assert str(path) in message and 'layers.2.' in message
    assert 'do not provide' in message


def test_missing_weights_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        vit_from(tmp_path / 'nowhere.pth')


@torch.no_grad()
def test_swin_release_loads_with_only_output_norms_and_prompts_missing(
        tmp_path):
    timm_model = randomise_(timm.create_model(
        'swin_tiny_patch4_window7_224', pretrained=False, num_classes=5,
        embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)))
    path = tmp_path / 'timm_swin.pth'
    torch.save({'model': timm_model.state_dict()}, path)
    model = VPTSwinTransformer(
        embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
        window_size=7, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    after = model.state_dict()
    unchanged = {k for k in after if torch.equal(before[k], after[k])}
    # everything but prompts, the mmseg-only output norms and the index
    # buffers (identical by construction) came from the file
    assert {k for k in unchanged if 'relative_position_index' not in k} == {
        'prompt_embeddings.0', 'prompt_embeddings.1', 'prompt_embeddings.2',
        'prompt_embeddings.3', 'norm0.weight', 'norm0.bias', 'norm1.weight',
        'norm1.bias', 'norm2.weight', 'norm2.bias'}
    # the final norm is timm's
    assert torch.equal(after['norm3.weight'], timm_model.norm.weight)
