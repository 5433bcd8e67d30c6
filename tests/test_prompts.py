"""The backbone-independent prompt mechanism (mmseg_vpt.models.prompts):
prompt-layer resolution, the paper's init bound, splicing, frozen_exclude
checking, and PromptTuningMixin on a toy host module."""
import math

import pytest
import torch
import torch.nn as nn

from mmseg_vpt.models.prompts import (PromptTuningMixin,
                                      check_frozen_exclude,
                                      resolve_prompt_layers, splice_prompts,
                                      uniform_init_bound)

from .vpt_helpers import trainable


class ToyHost(PromptTuningMixin, nn.Module):
    """A minimal backbone: one Linear per layer plus a Dropout, then the
    prompt mechanism."""

    def __init__(self, stage_dims=(8, ), stage_depths=(3, ), **kwargs):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Linear(d, d) for d, n in zip(stage_dims, stage_depths)
            for _ in range(n))
        self.drop = nn.Dropout(0.5)
        args = dict(prompt_length=4, prompt_layers='deep', prompt_dropout=0.0,
                    prompt_init='uniform', init_patch_size=4,
                    init_dims=stage_dims[0], frozen_exclude=['prompt'],
                    frozen_eval=True)
        args.update(kwargs)
        self.init_prompt_tuning(stage_dims=stage_dims,
                                stage_depths=stage_depths, **args)


# ---------------------------------------------------------------------------
# resolve_prompt_layers
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('spec, expected', [
    ('deep', [0, 1, 2, 3, 4]),
    ('shallow', [0]),
    ([3, 1], [1, 3]),
    ((4, ), [4]),
    ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]),
])
def test_resolve_prompt_layers_gives_sorted_layer_indices(spec, expected):
    assert resolve_prompt_layers(spec, 5) == expected


@pytest.mark.parametrize('spec', [
    'middle', 'DEEP', [], [5], [-1], [1, 1], [True], [1.0], 3, None,
], ids=['unknown_str', 'case', 'empty', 'too_large', 'negative', 'repeated',
        'bool', 'float', 'bare_int', 'none'])
def test_resolve_prompt_layers_rejects_bad_specs_naming_the_argument(spec):
    with pytest.raises(ValueError, match='prompt_layers'):
        resolve_prompt_layers(spec, 5)


# ---------------------------------------------------------------------------
# uniform_init_bound
# ---------------------------------------------------------------------------
def test_uniform_init_bound_is_xavier_over_patch_fan_in_and_prompt_width():
    # ViT-B/16: sqrt(6 / (3*16*16 + 768)) = sqrt(6 / 1536) = 1/16
    assert uniform_init_bound(16, 768) == pytest.approx(0.0625, abs=1e-12)
    assert uniform_init_bound((16, 16), 768) == uniform_init_bound(16, 768)
    assert uniform_init_bound((4, 8), 10) == pytest.approx(
        math.sqrt(6.0 / (3 * 4 * 8 + 10)), rel=1e-12)


# ---------------------------------------------------------------------------
# splice_prompts
# ---------------------------------------------------------------------------
def test_splice_prompts_inserts_after_prefix_and_replaces_old_prompts():
    tokens = torch.arange(6.).view(1, 6, 1)  # [c, a, b, p1, p2, p3] style
    prompts = torch.full((1, 2, 1), -1.)
    # insert after one prefix token, nothing to replace
    out = splice_prompts(tokens, prompts, start=1, num_old=0)
    assert out.flatten().tolist() == [0, -1, -1, 1, 2, 3, 4, 5]
    # replace the two old prompts that sit after the prefix
    out = splice_prompts(tokens, prompts, start=1, num_old=2)
    assert out.flatten().tolist() == [0, -1, -1, 3, 4, 5]
    # no prefix (Swin / ViT without CLS)
    out = splice_prompts(tokens, prompts, start=0, num_old=2)
    assert out.flatten().tolist() == [-1, -1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------
# check_frozen_exclude
# ---------------------------------------------------------------------------
NAMES = ['prompt_embeddings', 'layers.0.weight', 'layers.0.bias']


@pytest.mark.parametrize('spec', [['prompt'], ('prompt', 'bias'), [],
                                  ['all'], ['layers.0']])
def test_check_frozen_exclude_accepts_lists_of_matching_substrings(spec):
    assert check_frozen_exclude(spec, NAMES, 'Toy') == list(spec)


@pytest.mark.parametrize('spec, words', [
    ('prompt', ['frozen_exclude', 'list']),
    (None, ['frozen_exclude']),
    ([1], ['frozen_exclude']),
    (['promt'], ['frozen_exclude', "'promt'", 'Toy']),
], ids=['string', 'none', 'int_entry', 'typo'])
def test_check_frozen_exclude_rejects_bad_values_with_clear_message(spec,
                                                                    words):
    with pytest.raises(ValueError) as info:
        check_frozen_exclude(spec, NAMES, 'Toy')
    for word in words:
        assert word in str(info.value)


def test_prompt_entry_without_prompt_params_hints_at_head_only_or_all():
    with pytest.raises(ValueError, match=r"frozen_exclude=\[\]"):
        check_frozen_exclude(['prompt'], ['layers.0.weight'], 'Toy')


# ---------------------------------------------------------------------------
# PromptTuningMixin
# ---------------------------------------------------------------------------
def test_single_stage_stores_one_parameter_of_layers_by_length_by_dims():
    host = ToyHost(prompt_layers=[0, 2])
    assert isinstance(host.prompt_embeddings, nn.Parameter)
    assert host.prompt_embeddings.shape == (2, 4, 8)
    assert host.prompt_tensors()[0] is host.prompt_embeddings
    assert trainable(host) == {'prompt_embeddings'}


def test_multi_stage_maps_each_layer_to_its_stage_row():
    host = ToyHost(stage_dims=(8, 16, 32), stage_depths=(2, 3, 1),
                   prompt_layers=[1, 2, 4, 5])
    assert isinstance(host.prompt_embeddings, nn.ParameterList)
    assert [tuple(t.shape) for t in host.prompt_embeddings] == [
        (1, 4, 8), (2, 4, 16), (1, 4, 32)]
    assert host._prompt_slots == {1: (0, 0), 2: (1, 0), 4: (1, 1),
                                  5: (2, 0)}
    host.eval()
    for layer in range(6):
        prompts = host.layer_prompts(layer, batch_size=3)
        assert host.is_prompted(layer) == (layer in (1, 2, 4, 5))
        if layer not in (1, 2, 4, 5):
            assert prompts is None
            continue
        stage, row = host._prompt_slots[layer]
        expected = host.prompt_embeddings[stage][row]
        assert prompts.shape == (3, 4, expected.shape[-1])
        assert torch.equal(prompts, expected.expand(3, -1, -1))


def test_zero_length_creates_no_prompt_parameters_and_never_prompts():
    host = ToyHost(prompt_length=0, frozen_exclude=['all'])
    assert host.prompt_embeddings is None and host.prompt_proj is None
    assert host.prompt_layers == []
    assert host.prompt_tensors() == []
    assert all(host.layer_prompts(i, 2) is None for i in range(3))
    assert not any('prompt' in n for n, _ in host.named_parameters())


def test_prompt_dropout_draws_an_independent_mask_per_sample_in_train():
    host = ToyHost(prompt_length=16, prompt_dropout=0.5,
                   prompt_layers='shallow')
    host.train()
    prompts = host.layer_prompts(0, batch_size=8)
    raw = host.prompt_embeddings[0]
    kept = prompts != 0
    # kept values are scaled by 1 / (1 - p), dropped ones are zero
    assert torch.allclose(prompts[kept], (2 * raw.expand(8, -1, -1))[kept])
    assert 0.3 < kept.float().mean() < 0.7
    assert not all(torch.equal(kept[0], kept[i]) for i in range(1, 8))
    host.eval()
    assert torch.equal(host.layer_prompts(0, 8), raw.expand(8, -1, -1))


def test_prompt_proj_maps_narrow_prompts_to_layer_width():
    host = ToyHost(prompt_proj_dims=3)
    assert host.prompt_embeddings.shape == (3, 4, 3)
    assert host.prompt_proj.in_features == 3
    assert host.prompt_proj.out_features == 8
    host.eval()
    prompts = host.layer_prompts(1, 2)
    expected = host.prompt_proj(host.prompt_embeddings[1])
    assert torch.equal(prompts, expected.expand(2, -1, -1))
    assert trainable(host) == {
        'prompt_embeddings', 'prompt_proj.weight', 'prompt_proj.bias'}


def test_prompt_proj_needs_constant_width():
    with pytest.raises(ValueError, match='prompt_proj_dims'):
        ToyHost(stage_dims=(8, 16), stage_depths=(1, 1), prompt_proj_dims=4)


@pytest.mark.parametrize('kwargs, name', [
    (dict(prompt_length=-2), 'prompt_length'),
    (dict(prompt_length='10'), 'prompt_length'),
    (dict(prompt_init='zeros'), 'prompt_init'),
    (dict(prompt_dropout=1.5), 'prompt_dropout'),
    (dict(prompt_proj_dims=-4), 'prompt_proj_dims'),
    (dict(frozen_exclude=['blocks.9']), 'frozen_exclude'),
])
def test_mixin_rejects_bad_arguments_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ToyHost(**kwargs)


def test_train_keeps_children_eval_except_prompt_dropout_and_returns_self():
    host = ToyHost()
    assert host.train() is host
    assert host.training
    assert host.prompt_dropout.training
    assert not host.drop.training
    assert not any(b.training for b in host.blocks)
    host.eval()
    assert not host.prompt_dropout.training and not host.training


@pytest.mark.parametrize('kwargs', [dict(frozen_eval=False),
                                    dict(frozen_exclude=['all'])],
                         ids=['frozen_eval_off', 'nothing_frozen'])
def test_train_mode_reaches_every_child_when_not_frozen_eval(kwargs):
    host = ToyHost(**kwargs)
    host.train()
    assert all(m.training for m in host.modules())


def test_reset_prompts_redraws_within_bound():
    host = ToyHost(prompt_length=64)
    before = host.prompt_embeddings.detach().clone()
    host.reset_prompts()
    after = host.prompt_embeddings.detach()
    bound = uniform_init_bound(4, 8)
    assert not torch.equal(before, after)
    assert after.abs().max() <= bound
