"""The paper's prompt ablations as backbone arguments: prompt locations
(add, prepend-pixel, concat-channel), prompts shared across layers and the
classification output choices. Untrained or zero prompts give the frozen
backbone's features exactly, each variant trains exactly its parameters,
and bad settings are named."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from mmseg_vpt.checkpoint import plan_tuned

from .vpt_helpers import build_segmentor, check_frozen_training, fcn_head
from .vpt_helpers import randomize_

VIT = dict(type='VPTVisionTransformer', img_size=(32, 32), patch_size=8,
           embed_dims=32, num_layers=3, num_heads=2, out_indices=(1, 2),
           patch_bias=True, final_norm=True, init_cfg=None)
TIMM = dict(type='VPTTimmViT', model_name='vit_large_patch16_dinov3',
            timm_kwargs=dict(img_size=32, depth=3, embed_dim=32,
                             num_heads=2),
            out_indices=(1, 2))
SWIN = dict(type='VPTSwinTransformer', pretrain_img_size=32, embed_dims=16,
            depths=[2, 2], num_heads=[1, 2], window_size=4,
            out_indices=(0, 1), strides=(4, 2), init_cfg=None)
VITS = {'vit': VIT, 'timm_dinov3': TIMM}
# (location, prompt_length, prompt_layers) per ablation; 16 = the 4x4
# patch grid of 32 px at patch 8 (timm: patch 16 -> 2x2 = 4)
LOCATIONS = {
    'add': lambda cfg: ('add', patches(cfg), 'deep'),
    'prepend-pixel': lambda cfg: ('prepend-pixel', 3, 'shallow'),
    'concat-channel': lambda cfg: ('concat-channel', 2, 'shallow'),
}


def patches(cfg: dict) -> int:
    return 16 if cfg is VIT else 4


def build(cfg: dict, **kwargs):
    model = MODELS.build(dict(cfg, **kwargs))
    model.init_weights()
    return model


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return list(model(x))


def plain_and(cfg: dict, **kwargs):
    """A randomised backbone without prompts and the same weights with the
    given prompt settings."""
    plain = build(cfg, prompt_length=0, frozen_exclude=['all'])
    randomize_(plain)
    prompted = build(cfg, **kwargs)
    missing, unexpected = prompted.load_state_dict(plain.state_dict(),
                                                   strict=False)
    assert not unexpected and all('prompt' in k for k in missing)
    return plain, prompted


@pytest.mark.parametrize('kind', VITS)
def test_add_location_with_zero_prompts_is_the_backbone(kind):
    cfg = VITS[kind]
    plain, added = plain_and(cfg, prompt_location='add',
                             prompt_length=patches(cfg))
    # one vector per patch and layer, nothing joins the sequence
    assert added.prompt_embeddings.shape == (3, patches(cfg), 32)
    assert added.num_prompt_tokens == 0
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(outputs(added, x)[-1], outputs(plain, x)[-1])
    with torch.no_grad():
        added.prompt_embeddings.zero_()
    for a, b in zip(outputs(added, x), outputs(plain, x)):
        assert torch.equal(a, b)
    # another input size: the prompt grid is resized (zero stays zero)
    x = torch.randn(1, 3, 48, 64)
    for a, b in zip(outputs(added, x), outputs(plain, x)):
        assert torch.equal(a, b)


def test_add_location_adds_each_layers_prompts_to_its_patch_tokens():
    """Layer i's input is the previous output plus prompt row i at each
    patch; the class token is left alone."""
    _, added = plain_and(VIT, prompt_location='add', prompt_length=16,
                         prompt_layers=[1])
    seen = {}
    added.layers[1].register_forward_pre_hook(
        lambda m, args: seen.setdefault('in', args[0]))
    added.layers[0].register_forward_hook(
        lambda m, args, out: seen.setdefault('out0', out))
    outputs(added, torch.randn(2, 3, 32, 32))
    expected = seen['out0'].clone()
    expected[:, 1:] += added.prompt_embeddings[0]
    assert torch.equal(seen['in'], expected)


@pytest.mark.parametrize('kind', VITS)
def test_concat_channel_starts_as_the_backbone_and_learns(kind):
    cfg = VITS[kind]
    plain, concat = plain_and(cfg, prompt_location='concat-channel',
                              prompt_length=2, prompt_layers='shallow')
    conv = concat.prompt_patch_embed()[0]
    prompt = conv.prompt_channels
    size = (32, 32)
    assert prompt.image.shape == (1, 2) + size
    assert prompt.weight.shape == (32, 2) + tuple(conv.kernel_size)
    assert concat.prompt_embeddings is None and concat.prompt_layers == []
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(outputs(concat, x), outputs(plain, x)):
        assert torch.equal(a, b)  # zero weights for the new channels
    # with weights, it is the convolution of [image, prompt channels]
    with torch.no_grad():
        prompt.weight.normal_()
    joined = torch.cat([x, prompt.image.expand(2, -1, -1, -1)], 1)
    weight = torch.cat([conv.weight, prompt.weight], 1)
    direct = F.conv2d(joined, weight, conv.bias, conv.stride)
    assert torch.allclose(conv(x), direct, atol=1e-5)
    assert conv(torch.randn(1, 3, 48, 64)).shape[-2:] == (
        48 // conv.stride[0], 64 // conv.stride[1])


@pytest.mark.parametrize('kind', VITS)
def test_pixel_prompts_are_patches_through_the_frozen_embedding(kind):
    """prepend-pixel equals prepending, as latent prompts, the patch
    embedding of the prompt pixels."""
    cfg = VITS[kind]
    _, pixel = plain_and(cfg, prompt_location='prepend-pixel',
                         prompt_length=3, prompt_layers='shallow')
    conv, norm, _ = pixel.prompt_patch_embed()
    ph, pw = conv.kernel_size
    assert pixel.prompt_embeddings.shape == (1, 3, 3 * ph * pw)
    assert pixel.num_prompt_tokens == 3
    with torch.no_grad():
        tokens = conv(pixel.prompt_embeddings[0].view(3, 3, ph, pw))
        tokens = tokens.flatten(1)
        tokens = tokens if norm is None else norm(tokens)
    latent = build(cfg, prompt_length=3, prompt_layers='shallow')
    latent.load_state_dict({k: v for k, v in pixel.state_dict().items()
                            if 'prompt' not in k}, strict=False)
    with torch.no_grad():
        latent.prompt_embeddings.copy_(tokens[None])
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(outputs(pixel, x), outputs(latent, x)):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize('kind', ['vit', 'timm_dinov3', 'swin'])
def test_shared_prompts_are_one_set_read_by_every_layer(kind):
    cfg = dict(VITS, swin=SWIN)[kind]
    _, shared = plain_and(cfg, prompt_length=4, prompt_shared=True)
    own = build(cfg, prompt_length=4)
    own.load_state_dict({k: v for k, v in shared.state_dict().items()
                         if 'prompt' not in k}, strict=False)
    with torch.no_grad():
        for s, o in zip(shared.prompt_tensors(), own.prompt_tensors()):
            assert s.shape[0] == 1 and o.shape[0] > 1
            o.copy_(s.expand_as(o))
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(outputs(shared, x), outputs(own, x)):
        assert torch.equal(a, b)
    assert sum(t.numel() for t in shared.prompt_tensors()) * (
        3 if kind != 'swin' else 2) == sum(
            t.numel() for t in own.prompt_tensors())


@pytest.mark.parametrize('location', LOCATIONS)
def test_each_location_trains_exactly_its_prompts(location, tmp_path):
    loc, length, layers = LOCATIONS[location](VIT)
    base = tmp_path / 'base.pth'
    torch.save(build(VIT, prompt_length=0, frozen_exclude=[]).state_dict(),
               base)
    cfg = dict(VIT, prompt_location=loc, prompt_length=length,
               prompt_layers=layers, prompt_shared=location == 'add',
               init_cfg=dict(type='Pretrained', checkpoint=str(base)))
    seg = build_segmentor(cfg, fcn_head(32) | dict(in_index=1))
    tuned = {n for n, p in seg.backbone.named_parameters()
             if p.requires_grad}
    expected = {'concat-channel': {
        'patch_embed.projection.prompt_channels.image',
        'patch_embed.projection.prompt_channels.weight'}}.get(
            location, {'prompt_embeddings'})
    assert tuned == expected
    check_frozen_training(seg, steps=3)
    # the task file keeps exactly them (and the head)
    plan = plan_tuned(seg, require=True)
    stored = set(seg.state_dict()) - set(plan.omitted)
    assert {k for k in stored if k.startswith('backbone.')} == {
        f'backbone.{n}' for n in expected}


@pytest.mark.parametrize('kind', VITS)
def test_output_choices_for_classification(kind):
    """cls / image-pool / prompt-pool / global-pool read the last layer's
    (normed) sequence [prefix, prompts, patches]."""
    cfg = dict(VITS[kind], out_indices=(2, ), output_cls_token=True)
    if kind == 'timm_dinov3':
        cfg.update(out_norm=True)
    x = torch.randn(2, 3, 32, 32)
    ref = build(cfg, prompt_length=5)
    randomize_(ref)
    seq = {}
    final = ref.ln1 if kind == 'vit' else ref.timm_model.norm
    final.register_forward_hook(lambda m, a, out: seq.setdefault('x', out))
    outputs(ref, x)
    seq = seq['x']
    prefix = 1 if kind == 'vit' else ref.timm_model.num_prefix_tokens
    expected = {'cls': seq[:, 0],
                'image-pool': seq[:, prefix + 5:].mean(1),
                'prompt-pool': seq[:, prefix:prefix + 5].mean(1),
                'global-pool': seq.mean(1)}
    for feature, vector in expected.items():
        model = build(cfg, prompt_length=5, cls_feature=feature)
        model.load_state_dict(ref.state_dict())
        patch_map, got = outputs(model, x)[0]
        assert torch.allclose(got, vector, atol=1e-6), feature
        assert patch_map.shape == (2, 32) + tuple(ref.prompt_patch_embed()[2])
    assert not torch.allclose(expected['cls'], expected['prompt-pool'])


@pytest.mark.parametrize('cfg, match', [
    (dict(prompt_location='above'), 'prompt_location must be one of'),
    (dict(prompt_location='add', prompt_length=10),
     r'4x4 = 16 \(or 0\), got 10'),
    (dict(prompt_location='prepend-pixel', prompt_layers='deep'),
     "use prompt_layers='shallow'"),
    (dict(prompt_location='concat-channel', prompt_layers=[1]),
     "use prompt_layers='shallow'"),
    (dict(prompt_location='add', prompt_length=16, prompt_proj_dims=8),
     'prompt_proj_dims needs latent prompts'),
    (dict(prompt_shared='yes'), 'prompt_shared must be True or False'),
    (dict(cls_feature='max-pool'), 'cls_feature must be one of'),
    (dict(cls_feature='prompt-pool', prompt_location='add',
          prompt_length=16), "'prompt-pool' averages the prompt tokens"),
])
def test_bad_ablation_settings_are_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(VIT, **cfg))


def test_swin_names_the_locations_it_supports():
    with pytest.raises(ValueError, match=r"prompt_location='add' is not "
                       r"available for VPTSwinTransformer, which supports "
                       r"\('prepend',\)"):
        MODELS.build(dict(SWIN, prompt_location='add'))


def test_mixed_task_batches_refuse_other_locations():
    added = build(VIT, prompt_location='add', prompt_length=16)
    with pytest.raises(ValueError, match="prompt_location='add'"):
        with added.mixed_prompts([added], torch.zeros(1, dtype=torch.long)):
            pass


def test_serving_refuses_a_backbone_with_another_location(tmp_path):
    from mmengine.config import Config

    from mmseg_vpt.serving import MultiTaskSegmentor, TaskError

    from .tools_helpers import REPO
    cfg = Config.fromfile(
        REPO / 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py')
    cfg.model.backbone.update(prompt_location='add', prompt_length=64)
    with pytest.raises(TaskError, match="prompt_location='add'; a shared "
                       "backbone serves prepended prompts only"):
        MultiTaskSegmentor(cfg, base_weights=str(tmp_path / 'base.pth'))
