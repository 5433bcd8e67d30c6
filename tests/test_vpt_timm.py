"""VPTTimmViT: timm's ViT family (DINOv2/v3, EVA-02, CLIP, SigLIP, MAE,
DeiT III) with prompts. Parity with timm's own ``forward_intermediates``,
prompts without position (absolute or rotary), batch independence,
freezing, weights files in timm / DINOv2 / MAE / MoCo v3 layouts and from
timm's hub cache, attention maps and argument errors."""
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_vpt.analysis import PromptAttentionRecorder
from mmseg_vpt.analysis.prompt_attention import timm_attention_probs
from mmseg_vpt.models import VPTTimmViT

from .vpt_helpers import build_segmentor, check_frozen_training, fcn_head

TINY = dict(depth=3, embed_dim=64, num_heads=4)
# one model of each kind the issue names, at test size (random weights)
MODELS_UNDER_TEST = {
    'dinov2_reg': 'vit_large_patch14_reg4_dinov2',  # registers, LayerScale
    'dinov3': 'vit_large_patch16_dinov3',  # Eva, rotary, registers
    'eva02': 'eva02_large_patch14_224',  # Eva, rotary, SwiGLU
    'clip': 'vit_large_patch14_clip_224',  # pre-norm, no patch bias
    'mae': 'vit_large_patch16_224',  # the MAE / MoCo v3 / IN-21k layout
    'siglip': 'vit_base_patch16_siglip_224',  # no class token, MAP pool
    'deit3': 'deit3_large_patch16_224',  # no_embed_class, LayerScale
}
# non-square, and a multiple of neither patch size 14 nor 16
SIZE = (45, 61)


def build(name: str, **kwargs) -> VPTTimmViT:
    timm_kwargs = dict(TINY, **kwargs.pop('timm_kwargs', {}))
    cfg = dict(type='VPTTimmViT', model_name=MODELS_UNDER_TEST.get(
        name, name), timm_kwargs=timm_kwargs, out_indices=(0, 1, 2))
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def grid(model: VPTTimmViT, size=SIZE):
    p = model.timm_model.patch_embed.patch_size
    return -(-size[0] // p[0]), -(-size[1] // p[1])


class LastTokens:
    """The whole token sequence leaving the last block."""

    def __init__(self, model: VPTTimmViT):
        self.handle = model.timm_model.blocks[-1].register_forward_hook(
            lambda m, args, out: setattr(self, 'tokens', out))


# --------------------------------------------------------------------------
# parity with timm
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', list(MODELS_UNDER_TEST))
@pytest.mark.parametrize('out_norm', [False, True], ids=['raw', 'norm'])
def test_without_prompts_equals_timms_forward_intermediates(name, out_norm):
    model = build(name, prompt_length=0, frozen_exclude=['all'],
                  out_norm=out_norm)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        ours = model(x)
        ref = model.timm_model.forward_intermediates(
            x, indices=[0, 1, 2], norm=out_norm, intermediates_only=True)
    assert len(ours) == 3
    for a, b in zip(ours, ref):
        assert a.shape == (2, 64, *grid(model))
        assert torch.equal(a, b), (a - b).abs().max()


def test_parity_holds_against_a_separately_built_timm_model():
    """The backbone's timm model is timm's: a model built by timm itself
    with the same weights gives the same features."""
    import timm
    model = build('dinov3', prompt_length=0, frozen_exclude=['all'])
    ref = timm.create_model('vit_large_patch16_dinov3', pretrained=False,
                            num_classes=0, dynamic_img_size=True,
                            dynamic_img_pad=True, **TINY).eval()
    ref.load_state_dict(model.timm_model.state_dict())
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        ours = model(x)
        theirs = ref.forward_intermediates(x, indices=[0, 1, 2],
                                           intermediates_only=True)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------
# prompts: where they sit, no position, batch independence
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['dinov2_reg', 'dinov3', 'eva02', 'mae'])
@pytest.mark.parametrize('prompt_layers', ['deep', 'shallow'])
def test_permuting_prompts_permutes_only_prompt_outputs(name, prompt_layers):
    """Prompts get no position, absolute or rotary: reordering them
    reorders their outputs and leaves every other token unchanged."""
    P = 6
    model = build(name, prompt_length=P, prompt_layers=prompt_layers)
    prefix = model.timm_model.num_prefix_tokens
    x = torch.randn(2, 3, *SIZE)
    taps = LastTokens(model)
    with torch.no_grad():
        before = model(x)
        tokens = taps.tokens
        perm = torch.randperm(P)
        model.prompt_embeddings.copy_(model.prompt_embeddings[:, perm])
        after = model(x)
        permuted = taps.tokens
    scale = tokens.abs().max()
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=0)
    prompts = slice(prefix, prefix + P)
    torch.testing.assert_close(permuted[:, prompts],
                               tokens[:, prompts][:, perm],
                               atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(permuted[:, :prefix], tokens[:, :prefix],
                               atol=1e-5 * scale, rtol=0)


@pytest.mark.parametrize('name', ['dinov3', 'eva02'])
def test_rotary_attention_counts_prompts_as_unrotated_leading_tokens(name):
    P = 4
    model = build(name, prompt_length=P, prompt_layers=[1, 2])
    prefix = model.timm_model.num_prefix_tokens
    assert [b.attn.num_prefix_tokens for b in model.timm_model.blocks] == [
        prefix, prefix + P, prefix + P]
    # without prompts timm's count is untouched
    plain = build(name, prompt_length=0, frozen_exclude=[])
    assert {b.attn.num_prefix_tokens
            for b in plain.timm_model.blocks} == {prefix}


def test_prompts_sit_after_class_and_register_tokens():
    P = 3
    model = build('dinov2_reg', prompt_length=P, prompt_layers='shallow')
    seen = {}
    model.timm_model.blocks[0].register_forward_pre_hook(
        lambda m, args: seen.setdefault('x', args[0]))
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        model(x)
        m = model.timm_model
        embedded = m.norm_pre(m._pos_embed(m.patch_embed(x)))
    prefix = m.num_prefix_tokens
    assert prefix == 5  # class token + 4 registers
    tokens = seen['x']
    assert torch.equal(tokens[:, :prefix], embedded[:, :prefix])
    assert torch.equal(tokens[0, prefix:prefix + P],
                       model.prompt_embeddings[0])
    assert torch.equal(tokens[:, prefix + P:], embedded[:, prefix:])


@pytest.mark.parametrize('name', ['dinov2_reg', 'dinov3', 'siglip'])
def test_each_sample_of_a_batch_of_3_equals_its_output_alone(name):
    model = build(name, prompt_length=5)
    x = torch.randn(3, 3, *SIZE)
    with torch.no_grad():
        batch = model(x)
        for i in range(3):
            alone = model(x[i:i + 1])
            for a, b in zip(batch, alone):
                torch.testing.assert_close(a[i:i + 1], b, atol=1e-5,
                                           rtol=1e-5)


def test_class_token_output_for_classification():
    model = build('mae', prompt_length=4, out_indices=-1, out_norm=True,
                  output_cls_token=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (out, ) = model(x)
    patch_map, cls = out
    assert patch_map.shape == (2, 64, 2, 2)
    assert cls.shape == (2, 64)
    taps = LastTokens(model)
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(cls, model.timm_model.norm(taps.tokens)[:, 0])


# --------------------------------------------------------------------------
# what trains
# --------------------------------------------------------------------------
def test_vpt_trains_only_prompts_and_keeps_timm_model_in_eval():
    model = build('dinov2_reg', prompt_length=4)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        'prompt_embeddings']
    assert model.prompt_embeddings.shape == (3, 4, 64)
    model.train()
    assert not model.timm_model.training
    assert model.prompt_dropout.training


def test_bias_and_full_fine_tuning_select_their_parameters():
    bias = build('eva02', prompt_length=0, frozen_exclude=['bias'])
    names = [n for n, p in bias.named_parameters() if p.requires_grad]
    assert names and all('bias' in n for n in names)
    full = build('eva02', prompt_length=0, frozen_exclude=['all'],
                 frozen_eval=False)
    assert all(p.requires_grad for p in full.parameters())
    full.train()
    assert full.timm_model.training


@pytest.mark.parametrize('name', ['dinov2_reg', 'dinov3'])
def test_segmentor_training_moves_prompts_and_head_only(name):
    """AdamW steps on a segmentor: frozen tensors bit-identical, prompts and
    head updated, loss down (tests/vpt_helpers.check_frozen_training)."""
    seg = build_segmentor(
        dict(type='VPTTimmViT', model_name=MODELS_UNDER_TEST[name],
             timm_kwargs=TINY, out_indices=(2, ), prompt_length=4),
        fcn_head(64), size=(32, 32))
    check_frozen_training(seg)


def test_with_cp_gives_the_same_outputs_and_prompt_gradients():
    torch.manual_seed(0)
    plain = build('dinov3', prompt_length=4)
    cp = build('dinov3', prompt_length=4, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (plain, cp):
        model.train()
        loss = sum(o.square().mean() for o in model(x))
        loss.backward()
        grads.append(model.prompt_embeddings.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------
def test_unknown_model_name_is_an_error_naming_close_names():
    with pytest.raises(ValueError, match=r"model_name 'vit_large_patch14_"
                       r"dinov3' is not a timm model.*Close names"):
        VPTTimmViT('vit_large_patch14_dinov3')


@pytest.mark.parametrize('name', ['resnet18', 'swin_tiny_patch4_window7_224',
                                  'beit_base_patch16_224'])
def test_unsupported_timm_class_is_an_error_naming_the_supported_ones(name):
    with pytest.raises(ValueError, match=r'model_name .* builds a timm .*'
                       r'supports the classes timm\.models\.vision_'
                       r'transformer\.VisionTransformer, timm\.models\.eva'
                       r'\.Eva'):
        VPTTimmViT(name)


@pytest.mark.parametrize('out_indices', [3, (0, 5), -4, ()])
def test_out_indices_beyond_the_depth_is_an_error(out_indices):
    with pytest.raises(ValueError, match=r'out_indices must be block '
                       r'indices in \[-3, 3\) \(the model has 3 blocks\)'):
        VPTTimmViT('vit_large_patch16_224', timm_kwargs=TINY,
                   out_indices=out_indices)


@pytest.mark.parametrize('kwargs, match', [
    (dict(timm_kwargs=dict(TINY, num_classes=10)), r'timm_kwargs may not '
     r"set \['num_classes'\]"),
    (dict(timm_kwargs=dict(TINY, patch_drop_rate=0.5)), 'patch_drop_rate'),
    (dict(model_name='vit_base_patch16_siglip_224', output_cls_token=True),
     'has no class token'),
    (dict(frozen_exclude=['nothing_like_this']), "frozen_exclude entry "
     "'nothing_like_this' matches no parameter"),
])
def test_bad_arguments_are_errors_naming_them(kwargs, match):
    args = dict(model_name='vit_large_patch16_224', timm_kwargs=TINY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        VPTTimmViT(**args)


# --------------------------------------------------------------------------
# attention maps
# --------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['dinov2_reg', 'dinov3'])
def test_prompt_attention_maps_come_from_the_layers_own_attention(name):
    """Recording changes nothing, and the recomputed probabilities times V
    through the projection give the attention module's own output."""
    P = 4
    model = build(name, prompt_length=P)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        plain = model(x)
        with PromptAttentionRecorder(model, [0, 2]) as rec:
            recorded = model(x)
        maps = rec.maps(keep_probs=True)
    for a, b in zip(plain, recorded):
        assert torch.equal(a, b)
    H, W = grid(model)
    for m in maps:
        assert m.num_prompts == P and m.hw == (H, W)
        assert m.image_to_prompt.shape == (2, H, W)
        assert ((m.image_to_prompt > 0) & (m.image_to_prompt < 1)).all()
        assert torch.allclose(m.probs.sum(-1), torch.ones(()), atol=1e-5)
    # probs @ V through the output projection is the module's own output
    attn = model.timm_model.blocks[0].attn
    inputs = rec.inputs[0]
    fused = attn.fused_attn
    with torch.no_grad():
        probs = timm_attention_probs(attn, inputs['x'], inputs['rope'])
        kwargs = {} if inputs['rope'] is None else {'rope': inputs['rope']}
        expected = attn(inputs['x'], **kwargs)
        B, N, C = inputs['x'].shape
        v = values(attn, inputs['x'])
        out = (probs @ v).transpose(1, 2).reshape(B, N, C)
        out = attn.proj(attn.norm(out) if hasattr(attn, 'norm') else out)
    assert attn.fused_attn == fused
    assert torch.equal(probs, maps[0].probs)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def values(attn, x):
    """The value heads (B, heads, N, d) of a timm attention module."""
    B, N, C = x.shape
    if getattr(attn, 'qkv', None) is not None:
        bias = None
        if getattr(attn, 'q_bias', None) is not None:
            bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        qkv = torch.nn.functional.linear(x, attn.qkv.weight,
                                         attn.qkv.bias if bias is None
                                         else bias)
        v = qkv.reshape(B, N, 3, attn.num_heads, -1)[:, :, 2]
    else:
        v = attn.v_proj(x).reshape(B, N, attn.num_heads, -1)
    return v.transpose(1, 2)
