"""Weights for VPTTimmViT: local files in timm's, the official DINOv2, MAE
and MoCo v3 layouts, and ``timm://NAME`` from the Hugging Face cache, all
loaded all or nothing through ``init_cfg=dict(type='Pretrained')``."""
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from mmseg_vpt.models import VPTTimmViT
from mmseg_vpt.utils.checkpoints import (CheckpointFileError,
                                         local_checkpoint_path)

from .test_convert_weights import randomise_

TINY = dict(depth=2, embed_dim=64, num_heads=4)
DINOV2 = 'vit_large_patch14_reg4_dinov2'
MAE = 'vit_large_patch16_224'


def source(name: str, **kwargs) -> torch.nn.Module:
    """A timm model with random weights, as a release would hold them."""
    model = timm.create_model(name, pretrained=False, **dict(TINY, **kwargs))
    return randomise_(model)


def backbone(name: str, checkpoint, **kwargs) -> VPTTimmViT:
    model = VPTTimmViT(name, timm_kwargs=TINY, prompt_length=4,
                       init_cfg=dict(type='Pretrained',
                                     checkpoint=str(checkpoint)), **kwargs)
    model.init_weights()
    return model


def assert_holds(model: VPTTimmViT, expected: dict) -> None:
    state = model.timm_model.state_dict()
    assert set(expected) == set(state)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_timm_file_loads_every_tensor_and_drops_the_classifier(tmp_path):
    src = source(DINOV2, num_classes=10)
    path = tmp_path / 'dinov2.pth'
    torch.save(src.state_dict(), path)
    model = backbone(DINOV2, path)
    expected = {k: v for k, v in src.state_dict().items()
                if not k.startswith('head.')}
    assert_holds(model, expected)
    assert model.frozen_weights_set


def test_official_dinov2_release_with_registers_loads_as_timm_does(tmp_path):
    """DINOv2's own layout: pos_embed with a class slot, register_tokens,
    mask_token. timm folds the class slot into cls_token."""
    src = source(DINOV2, num_classes=0)
    sd = src.state_dict()
    slot = torch.randn(1, 1, 64)
    official = {k: v for k, v in sd.items()
                if k not in ('cls_token', 'reg_token', 'pos_embed')}
    official.update(cls_token=sd['cls_token'] - slot,
                    register_tokens=sd['reg_token'],
                    pos_embed=torch.cat([slot, sd['pos_embed']], 1),
                    mask_token=torch.zeros(1, 64))
    path = tmp_path / 'dinov2_vitl14_reg4_pretrain.pth'
    torch.save(official, path)
    model = backbone(DINOV2, path)
    state = model.timm_model.state_dict()
    torch.testing.assert_close(state['cls_token'], sd['cls_token'])
    for key in sd:
        if key != 'cls_token':
            assert torch.equal(state[key], sd[key]), key


def test_mae_release_inside_a_model_key_loads(tmp_path):
    src = source(MAE, num_classes=0)
    path = tmp_path / 'mae_pretrain_vit_large.pth'
    torch.save({'model': src.state_dict()}, path)
    assert_holds(backbone(MAE, path), src.state_dict())


def test_mocov3_release_loads_the_base_encoder_only(tmp_path):
    """MoCo v3 keeps the ViT under module.base_encoder. beside the momentum
    encoder and predictor, with a projection MLP as ``head``."""
    base, momentum = source(MAE, num_classes=0), source(MAE, num_classes=0)
    state = {f'module.base_encoder.{k}': v
             for k, v in base.state_dict().items()}
    state.update({f'module.momentum_encoder.{k}': v
                  for k, v in momentum.state_dict().items()})
    state['module.base_encoder.head.0.weight'] = torch.randn(32, 64)
    state['module.predictor.0.weight'] = torch.randn(32, 32)
    path = tmp_path / 'vit-b-300ep.pth.tar'
    torch.save({'epoch': 300, 'arch': 'vit_base', 'state_dict': state,
                'optimizer': {'state': {}, 'param_groups': []}}, path)
    assert_holds(backbone(MAE, path), base.state_dict())


def test_file_missing_a_tensor_fails_instead_of_half_loading(tmp_path):
    sd = source(MAE, num_classes=0).state_dict()
    del sd['blocks.1.mlp.fc2.weight']
    path = tmp_path / 'cut.pth'
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"cut\.pth.*do not provide 1 "
                       r"parameters.*timm_model\.blocks\.1\.mlp\.fc2\.weight"):
        backbone(MAE, path)


def test_file_of_another_model_fails_naming_keys_and_shapes(tmp_path):
    path = tmp_path / 'wide.pth'
    torch.save(source(MAE, embed_dim=96, num_classes=0).state_dict(), path)
    with pytest.raises(ValueError, match=r"wide\.pth.*does not fit the timm "
                       r"model.*Shape mismatches \(checkpoint vs model\): "
                       r".*\(96,\) vs model \(64,"):
        backbone(MAE, path)
    sd = source(MAE, num_classes=0).state_dict()
    sd['blocks.0.attn.extra_scale'] = torch.ones(4)
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r'Not in the model: blocks\.0\.'
                       'attn\\.extra_scale'):
        backbone(MAE, path)


# --------------------------------------------------------------------------
# timm://NAME from the Hugging Face cache (offline here; downloads on a
# machine with network access)
# --------------------------------------------------------------------------
def hf_cache_with(cache: Path, tag: str, state: dict) -> Path:
    """Put ``state`` where the Hugging Face hub client keeps timm's file of
    ``tag`` (``models--timm--TAG/snapshots/REV/model.safetensors``)."""
    repo = cache / f'models--timm--{tag}'
    revision = '0123456789abcdef0123456789abcdef01234567'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(revision)
    snapshot = repo / 'snapshots' / revision
    snapshot.mkdir(parents=True)
    path = snapshot / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture
def offline_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf
    cache = tmp_path / 'hf'
    monkeypatch.setattr(hf, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(hf, 'HF_HUB_OFFLINE', True)
    return cache


def test_timm_scheme_loads_the_tags_file_from_the_cache(offline_hf_cache):
    tag = f'{DINOV2}.lvd142m'
    src = source(DINOV2, num_classes=0)
    path = hf_cache_with(offline_hf_cache, tag, src.state_dict())
    assert local_checkpoint_path(f'timm://{tag}') == str(path)
    assert_holds(backbone(DINOV2, f'timm://{tag}'), src.state_dict())


@pytest.mark.parametrize('name, match', [
    (f'{DINOV2}.lvd142m', r'none of .* of timm/vit_large_patch14_reg4_'
     r'dinov2\.lvd142m is in the Hugging Face cache'),
    ('vit_not_a_model', 'timm has no Hugging Face hub weights'),
    (f'{DINOV2}.no_such_tag', 'Invalid pretrained tag'),
])
def test_timm_scheme_errors_name_the_checkpoint(offline_hf_cache, name,
                                                match):
    with pytest.raises(CheckpointFileError, match=match):
        backbone(DINOV2, f'timm://{name}')
