"""VPTVisionTransformer: equivalence with mmseg's VisionTransformer, where
prompts enter and leave the token sequence, deep/shallow/list semantics,
freezing, train/eval behaviour and argument checking."""
import math

import pytest
import torch
import torch.nn as nn
from mmseg.models.backbones import VisionTransformer

from mmseg_vpt.models import VPTVisionTransformer

from .vpt_helpers import (Taps, assert_outputs_equal, build_segmentor,
                          check_frozen_training, fcn_head,
                          prompt_only_loss_ratio, randomize_, snapshot,
                          trainable)

D = 32  # embed dims
P = 5  # prompt length
BASE = dict(img_size=32, patch_size=8, embed_dims=D, num_layers=4,
            num_heads=4, mlp_ratio=2, out_indices=(0, 1, 2, 3))


def cfg(**kwargs) -> dict:
    out = dict(BASE)
    out.update(kwargs)
    return out


def make_parent(**kwargs) -> VisionTransformer:
    """mmseg's VisionTransformer with every weight randomised."""
    parent = VisionTransformer(**cfg(**kwargs))
    parent.init_weights()
    randomize_(parent)
    parent.eval()  # mmseg's train()/eval() return None, not self
    return parent


def make_vpt(parent=None, **kwargs) -> VPTVisionTransformer:
    """A VPTVisionTransformer holding ``parent``'s weights (or random
    ones)."""
    model = VPTVisionTransformer(**cfg(**kwargs))
    if parent is not None:
        model.load_state_dict(parent.state_dict(), strict=False)
    else:
        randomize_(model)
    model.eval()
    return model


def patch_map(tokens: torch.Tensor, hw) -> torch.Tensor:
    B, _, C = tokens.shape
    return tokens.reshape(B, hw[0], hw[1], C).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------
# equivalence with mmseg's VisionTransformer
# ---------------------------------------------------------------------------
PARENT_CONFIGS = {
    'cls_all_outs': dict(out_indices=(0, 1, 2, 3)),
    'no_cls_token': dict(with_cls_token=False, out_indices=(1, 3)),
    'final_norm_last_out': dict(final_norm=True, out_indices=-1),
    'origin_and_cls_out': dict(out_origin=True, output_cls_token=True,
                               out_indices=(0, 3)),
    'pre_norm_patch_norm_bias': dict(pre_norm=True, patch_norm=True,
                                     patch_bias=True, out_indices=(2, )),
    'no_qkv_bias_final_norm_no_cls': dict(qkv_bias=False, final_norm=True,
                                          with_cls_token=False,
                                          out_indices=(0, 3)),
}


@pytest.mark.parametrize('size', [(32, 32), (40, 56)],
                         ids=['square', 'nonsquare_pos_resize'])
@pytest.mark.parametrize('config', list(PARENT_CONFIGS.values()),
                         ids=list(PARENT_CONFIGS))
def test_without_prompts_loads_parent_strictly_and_is_bit_identical(
        config, size):
    parent = make_parent(**config)
    model = VPTVisionTransformer(prompt_length=0, frozen_exclude=['all'],
                                 fused_attn=False, **cfg(**config))
    result = model.load_state_dict(parent.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model.prompt_embeddings is None
    assert set(model.state_dict()) == set(parent.state_dict())
    model.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert_outputs_equal(model(x), parent(x))
    # also in train mode, where nothing is frozen so nothing is put in eval
    model.train()
    parent.train()
    with torch.no_grad():
        assert_outputs_equal(model(x), parent(x))


@pytest.mark.parametrize(
    'kwargs, missing',
    [(dict(prompt_layers='deep'), ['prompt_embeddings']),
     (dict(prompt_layers='shallow'), ['prompt_embeddings']),
     (dict(prompt_layers=[1, 3]), ['prompt_embeddings']),
     (dict(prompt_proj_dims=8),
      ['prompt_embeddings', 'prompt_proj.weight', 'prompt_proj.bias'])],
    ids=['deep', 'shallow', 'list', 'proj'])
def test_prompted_model_loads_parent_state_dict_with_only_prompt_keys_missing(
        kwargs, missing):
    parent = make_parent()
    model = VPTVisionTransformer(prompt_length=P, **cfg(**kwargs))
    result = model.load_state_dict(parent.state_dict(), strict=False)
    assert sorted(result.missing_keys) == sorted(missing)
    assert result.unexpected_keys == []


# ---------------------------------------------------------------------------
# where prompts sit in the sequence
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('with_cls_token', [True, False])
def test_layer0_input_is_cls_then_raw_prompts_then_patches(with_cls_token):
    """[CLS+pos, prompts, patches+pos] (or [prompts, patches+pos]); the
    prompts are exactly prompt_embeddings[0]: no position embedding."""
    parent = make_parent(with_cls_token=with_cls_token)
    model = make_vpt(parent, prompt_length=P, with_cls_token=with_cls_token)
    model.train()  # prompt dropout 0 must leave prompts untouched
    x = torch.randn(2, 3, 32, 32)
    with Taps(parent.layers[:1]) as ref, torch.no_grad():
        parent(x)
    with Taps(model.layers[:1]) as taps, torch.no_grad():
        model(x)
    seq, ref_seq = taps.inputs[0], ref.inputs[0]
    n = int(with_cls_token)
    assert seq.shape == (2, n + P + 16, D)
    assert ref_seq.shape == (2, n + 16, D)
    if with_cls_token:
        cls = (model.cls_token + model.pos_embed[:, :1])[0, 0]
        assert torch.equal(seq[:, 0], cls.expand(2, D))
        assert torch.equal(seq[:, :1], ref_seq[:, :1])
    assert torch.equal(seq[:, n:n + P],
                       model.prompt_embeddings[0].expand(2, P, D))
    assert torch.equal(seq[:, n + P:], ref_seq[:, n:])


# ---------------------------------------------------------------------------
# deep / shallow / list semantics
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('with_cls_token', [True, False])
def test_deep_inserts_fresh_prompts_at_every_layer_replacing_prompt_outputs(
        with_cls_token):
    model = make_vpt(prompt_length=P, prompt_layers='deep',
                     with_cls_token=with_cls_token)
    assert model.prompt_embeddings.shape == (4, P, D)
    assert model.prompt_layers == [0, 1, 2, 3]
    n = int(with_cls_token)
    with Taps(model.layers) as t, torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for i in range(4):
        assert t.inputs[i].shape == (2, n + P + 16, D)
        assert torch.equal(t.inputs[i][:, n:n + P],
                           model.prompt_embeddings[i].expand(2, P, D))
        if i > 0:
            prev = t.outputs[i - 1]
            assert torch.equal(t.inputs[i][:, :n], prev[:, :n])
            assert torch.equal(t.inputs[i][:, n + P:], prev[:, n + P:])
            # the previous layer's prompt outputs are discarded
            assert not torch.allclose(t.inputs[i][:, n:n + P],
                                      prev[:, n:n + P])


def test_shallow_prompts_only_layer0_and_carries_prompt_outputs_forward():
    model = make_vpt(prompt_length=P, prompt_layers='shallow')
    assert model.prompt_embeddings.shape == (1, P, D)
    assert model.prompt_layers == [0]
    with Taps(model.layers) as t, torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert torch.equal(t.inputs[0][:, 1:1 + P],
                       model.prompt_embeddings[0].expand(2, P, D))
    for i in range(1, 4):
        # the whole sequence, prompt outputs included, goes on unchanged
        assert t.inputs[i].shape == (2, 1 + P + 16, D)
        assert torch.equal(t.inputs[i], t.outputs[i - 1])


def test_layer_list_prompts_listed_layers_and_carries_in_between():
    """prompt_layers=[1, 3]: layer 0 sees no prompts (and matches the
    parent), layer 1 fresh, layer 2 carries layer 1's prompt outputs, layer 3
    fresh."""
    parent = make_parent()
    # frozen like the model: torch's matmul picks its kernel by requires_grad
    parent.requires_grad_(False)
    model = make_vpt(parent, prompt_length=P, prompt_layers=[3, 1],
                     fused_attn=False)
    assert model.prompt_layers == [1, 3]
    assert model.prompt_embeddings.shape == (2, P, D)
    x = torch.randn(2, 3, 32, 32)
    with Taps(model.layers) as t, torch.no_grad():
        feats = model(x)
        parent_feats = parent(x)
    pe = model.prompt_embeddings
    # layer 0: exactly the parent's layer, no prompts
    assert t.inputs[0].shape == (2, 1 + 16, D)
    assert torch.equal(feats[0], parent_feats[0])
    # layer 1: fresh prompts after CLS
    assert torch.equal(t.inputs[1], torch.cat(
        [t.outputs[0][:, :1], pe[0].expand(2, P, D), t.outputs[0][:, 1:]], 1))
    # layer 2: carries layer 1's outputs, prompt outputs included
    assert torch.equal(t.inputs[2], t.outputs[1])
    # layer 3: fresh prompts replace the carried prompt outputs
    assert torch.equal(t.inputs[3], torch.cat(
        [t.outputs[2][:, :1], pe[1].expand(2, P, D),
         t.outputs[2][:, 1 + P:]], 1))


@pytest.mark.parametrize('layers', ['deep', 'shallow', [1, 3]])
def test_perturbing_prompts_of_layer_k_changes_layer_k_not_earlier_layers(
        layers):
    model = make_vpt(prompt_length=P, prompt_layers=layers)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = model(x)
        for row, k in enumerate(model.prompt_layers):
            saved = model.prompt_embeddings.detach().clone()
            model.prompt_embeddings[row] += torch.randn(P, D)
            out = model(x)
            model.prompt_embeddings.copy_(saved)
            for i in range(k):
                assert torch.equal(out[i], base[i]), (k, i)
            for i in range(k, 4):
                assert (out[i] - base[i]).abs().max() > 1e-3, (k, i)


# ---------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('config', [
    dict(),
    dict(with_cls_token=False),
    dict(final_norm=True),
    dict(out_origin=True, output_cls_token=True),
], ids=['cls', 'no_cls', 'final_norm', 'origin_and_cls_out'])
def test_outputs_have_parent_shapes_and_hold_patch_tokens_only(config):
    config = dict(config, out_indices=(1, 3))
    parent = make_parent(**config)
    model = make_vpt(parent, prompt_length=P, **config)
    x = torch.randn(2, 3, 40, 56)  # 5 x 7 patches
    hw = (5, 7)
    with Taps(model.layers) as t, torch.no_grad():
        feats = model(x)
        parent_feats = parent(x)

    def shapes(o):
        return [shapes(i) for i in o] if isinstance(o, (list, tuple)) \
            else tuple(o.shape)

    assert shapes(feats) == shapes(parent_feats)
    n = int(config.get('with_cls_token', True))
    feats = list(feats)
    if config.get('out_origin'):
        origin = feats.pop(0)
        assert torch.equal(origin[0], patch_map(t.inputs[0][:, n + P:], hw))
        assert torch.equal(origin[1], t.inputs[0][:, 0])
    for feat, i in zip(feats, (1, 3)):
        tokens = t.outputs[i]
        if i == 3 and config.get('final_norm'):
            with torch.no_grad():
                tokens = model.norm1(tokens)
        if config.get('output_cls_token'):
            feat, cls = feat
            assert torch.equal(cls, tokens[:, 0])
        assert torch.equal(feat, patch_map(tokens[:, n + P:], hw))


# ---------------------------------------------------------------------------
# freezing
# ---------------------------------------------------------------------------
def test_default_frozen_exclude_trains_only_prompt_embeddings():
    model = VPTVisionTransformer(**cfg(prompt_length=P))
    assert trainable(model) == {'prompt_embeddings'}


def test_prompt_and_bias_trains_prompts_and_every_bias_but_no_weight():
    model = VPTVisionTransformer(
        **cfg(prompt_length=P, frozen_exclude=['prompt', 'bias'],
              patch_bias=True))
    names = {n for n, _ in model.named_parameters()}
    biases = {n for n in names if 'bias' in n}
    assert trainable(model) == {'prompt_embeddings'} | biases
    assert {'patch_embed.projection.bias', 'layers.0.ln1.bias',
            'layers.0.attn.attn.in_proj_bias',
            'layers.0.attn.attn.out_proj.bias',
            'layers.3.ffn.layers.1.bias'} <= biases
    assert not any(n.endswith('weight') for n in trainable(model))


def test_bias_tuning_without_prompts_trains_only_biases():
    model = VPTVisionTransformer(
        **cfg(prompt_length=0, frozen_exclude=['bias']))
    assert model.prompt_embeddings is None
    names = {n for n, _ in model.named_parameters()}
    assert trainable(model) == {n for n in names if 'bias' in n}
    assert trainable(model)


def test_all_trains_every_parameter_including_prompts():
    model = VPTVisionTransformer(
        **cfg(prompt_length=P, frozen_exclude=['all']))
    names = {n for n, _ in model.named_parameters()}
    assert trainable(model) == names and 'prompt_embeddings' in names


def test_empty_frozen_exclude_freezes_backbone_and_head_only_training_runs():
    backbone = cfg(type='VPTVisionTransformer', prompt_length=0,
                   frozen_exclude=[], out_indices=(3, ))
    seg = build_segmentor(backbone, fcn_head(D))
    assert trainable(seg.backbone) == set()
    assert trainable(seg) == {'decode_head.' + n
                              for n, _ in seg.decode_head.named_parameters()}
    check_frozen_training(seg, steps=2)


@pytest.mark.parametrize('frozen_exclude', [['prompt'], ['prompt', 'bias']])
def test_adamw_steps_leave_frozen_backbone_bit_identical_and_update_the_rest(
        frozen_exclude):
    backbone = cfg(type='VPTVisionTransformer', prompt_length=P,
                   frozen_exclude=frozen_exclude, out_indices=(3, ),
                   drop_rate=0.1, drop_path_rate=0.1)
    seg = build_segmentor(backbone, fcn_head(D))
    randomize_(seg.backbone)
    check_frozen_training(seg, steps=3)
    assert 'backbone.prompt_embeddings' in trainable(seg)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_training_only_prompts_with_frozen_backbone_and_head_lowers_loss(seed):
    torch.manual_seed(seed)
    backbone = cfg(type='VPTVisionTransformer', prompt_length=8,
                   out_indices=(3, ))
    seg = build_segmentor(backbone, fcn_head(D))
    # a backbone far enough from initialisation to attend selectively, and
    # a head whose (frozen) readout is not near zero
    randomize_(seg.backbone, std=0.3)
    with torch.no_grad():
        seg.decode_head.conv_seg.weight.normal_(0, 1.0)
    frozen = snapshot(seg.backbone)
    frozen.pop('prompt_embeddings')
    head = {k: v for k, v in snapshot(seg.decode_head).items()
            if 'running' not in k and 'num_batches' not in k}
    ratio = prompt_only_loss_ratio(seg, steps=30, lr=0.05, seed=seed)
    # measured 0.12-0.38 over 8 seeds
    assert ratio < 0.7
    for k, v in frozen.items():
        assert torch.equal(seg.backbone.state_dict()[k], v), k
    for k, v in head.items():
        assert torch.equal(seg.decode_head.state_dict()[k], v), k


@pytest.mark.parametrize('kwargs', [
    dict(prompt_layers='deep'), dict(prompt_layers='shallow'),
    dict(prompt_layers=[1, 3]), dict(prompt_proj_dims=8),
    dict(frozen_exclude=['prompt', 'bias'])],
    ids=['deep', 'shallow', 'list', 'proj', 'prompt_bias'])
def test_every_trainable_parameter_receives_a_gradient(kwargs):
    """(DDP with find_unused_parameters=False needs this.)"""
    model = make_vpt(**dict(dict(prompt_length=P), **kwargs))
    sum(f.sum() for f in model(torch.randn(2, 3, 32, 32))).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name


# ---------------------------------------------------------------------------
# train / eval modes
# ---------------------------------------------------------------------------
def modes(model: nn.Module) -> dict:
    return {n: m.training for n, m in model.named_modules() if n}


@pytest.mark.parametrize('frozen_exclude', [['prompt'], ['prompt', 'bias']])
def test_train_keeps_frozen_backbone_in_eval_except_prompt_dropout(
        frozen_exclude):
    model = VPTVisionTransformer(
        **cfg(prompt_length=P, prompt_dropout=0.1, drop_rate=0.1,
              attn_drop_rate=0.1, drop_path_rate=0.1,
              frozen_exclude=frozen_exclude))
    assert model.train() is model
    assert model.training
    m = modes(model)
    assert m.pop('prompt_dropout') is True
    assert m and not any(m.values())
    model.eval()
    assert not any(modes(model).values())


def test_frozen_eval_false_puts_frozen_backbone_in_train_mode():
    model = VPTVisionTransformer(**cfg(prompt_length=P, frozen_eval=False))
    model.train()
    assert all(modes(model).values())


def test_full_finetuning_puts_backbone_in_train_mode():
    model = VPTVisionTransformer(**cfg(prompt_length=P,
                                       frozen_exclude=['all']))
    model.train()
    assert all(modes(model).values())


def test_segmentor_train_sets_head_train_and_frozen_backbone_eval():
    seg = build_segmentor(
        cfg(type='VPTVisionTransformer', prompt_length=P, out_indices=(3, )),
        fcn_head(D))
    seg.train()
    assert seg.decode_head.training
    assert all(m.training for m in seg.decode_head.modules())
    m = modes(seg.backbone)
    assert m.pop('prompt_dropout') is True
    assert not any(m.values())


@pytest.mark.parametrize('frozen_eval', [True, False])
def test_drop_path_is_off_in_train_mode_only_with_frozen_eval(frozen_eval):
    model = make_vpt(prompt_length=P, drop_path_rate=0.5, drop_rate=0.2,
                     attn_drop_rate=0.2, frozen_eval=frozen_eval)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), model(x)
    same = all(torch.equal(i, j) for i, j in zip(a, b))
    assert same is frozen_eval


# ---------------------------------------------------------------------------
# prompt projection and initialisation
# ---------------------------------------------------------------------------
def test_prompt_proj_dims_projects_narrow_prompts_to_embed_dims():
    parent = make_parent()
    model = VPTVisionTransformer(**cfg(prompt_length=P, prompt_proj_dims=8))
    model.init_weights()
    model.load_state_dict(parent.state_dict(), strict=False)
    model.eval()
    assert model.prompt_embeddings.shape == (4, P, 8)
    assert isinstance(model.prompt_proj, nn.Linear)
    assert model.prompt_proj.weight.shape == (D, 8)
    assert trainable(model) == {'prompt_embeddings', 'prompt_proj.weight',
                                'prompt_proj.bias'}
    x = torch.randn(2, 3, 32, 32)
    with Taps(model.layers) as t:
        feats = model(x)
    with torch.no_grad():
        for i in range(4):
            projected = model.prompt_proj(model.prompt_embeddings[i])
            assert torch.allclose(t.inputs[i][:, 1:1 + P],
                                  projected.expand(2, P, D), atol=1e-6)
    assert [f.shape for f in feats] == [f.shape for f in parent(x)]
    sum(f.square().mean() for f in feats).backward()
    assert model.prompt_proj.weight.grad.abs().sum() > 0
    assert model.prompt_embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize('proj', [None, 8])
def test_uniform_prompt_init_fills_the_papers_bound(proj):
    model = VPTVisionTransformer(
        **cfg(prompt_length=50, embed_dims=64, num_heads=4,
              prompt_proj_dims=proj))
    model.init_weights()  # must not re-draw prompts outside the rule
    width = proj or 64
    bound = math.sqrt(6.0 / (3 * 8 * 8 + width))
    values = model.prompt_embeddings.detach()
    assert values.abs().max() <= bound
    assert values.abs().max() > 0.98 * bound
    assert abs(values.std().item() - bound / math.sqrt(3)) < 0.05 * bound


def test_normal_prompt_init_has_std_0_02():
    model = VPTVisionTransformer(
        **cfg(prompt_length=50, embed_dims=64, prompt_init='normal'))
    model.init_weights()
    values = model.prompt_embeddings.detach()
    assert abs(values.std().item() - 0.02) < 0.001
    assert abs(values.mean().item()) < 0.001


# ---------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------
BAD_ARGS = {
    'negative_length': (dict(prompt_length=-1), 'prompt_length'),
    'float_length': (dict(prompt_length=2.5), 'prompt_length'),
    'layer_out_of_range': (dict(prompt_layers=[0, 4]), 'prompt_layers'),
    'negative_layer': (dict(prompt_layers=[-1]), 'prompt_layers'),
    'repeated_layer': (dict(prompt_layers=[1, 1]), 'prompt_layers'),
    'unknown_layers_string': (dict(prompt_layers='middle'), 'prompt_layers'),
    'empty_layers': (dict(prompt_layers=[]), 'prompt_layers'),
    'unknown_init': (dict(prompt_init='xavier'), 'prompt_init'),
    'exclude_typo': (dict(frozen_exclude=['promt']), 'frozen_exclude'),
    'exclude_string': (dict(frozen_exclude='prompt'), 'frozen_exclude'),
    'prompt_exclude_without_prompts': (dict(prompt_length=0,
                                            frozen_exclude=['prompt']),
                                       'frozen_exclude'),
    'dropout_1': (dict(prompt_dropout=1.0), 'prompt_dropout'),
    'proj_0': (dict(prompt_proj_dims=0), 'prompt_proj_dims'),
}


@pytest.mark.parametrize('kwargs, name', list(BAD_ARGS.values()),
                         ids=list(BAD_ARGS))
def test_bad_argument_raises_value_error_naming_it(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VPTVisionTransformer(**cfg(**kwargs))


# ---------------------------------------------------------------------------
# activation checkpointing
# ---------------------------------------------------------------------------
@pytest.mark.filterwarnings('ignore:torch.utils.checkpoint')  # mmseg's call
@pytest.mark.parametrize('frozen_exclude', [['prompt'], ['all']])
def test_with_cp_gives_same_outputs_and_grads(frozen_exclude,
                                              count_checkpoints):
    plain = make_vpt(prompt_length=P, frozen_exclude=frozen_exclude)
    ckpt = VPTVisionTransformer(**cfg(prompt_length=P, with_cp=True,
                                      frozen_exclude=frozen_exclude))
    ckpt.load_state_dict(plain.state_dict(), strict=True)
    ckpt.eval()
    x = torch.randn(2, 3, 32, 32)
    results = []
    for model in (plain, ckpt):
        feats = model(x)
        sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum()
            for f in feats).backward()
        results.append((feats, {n: p.grad.clone()
                                for n, p in model.named_parameters()
                                if p.requires_grad}))
    assert count_checkpoints() == 4  # every layer of the with_cp model
    (fa, ga), (fb, gb) = results
    for a, b in zip(fa, fb):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert set(ga) == set(gb) == trainable(plain)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=1e-5), n
