"""VPTSwinTransformer: equivalence with mmseg's SwinTransformer, the window
semantics of prompts (checked against a naive loop-based reference), patch
merging of prompts, batch independence, causality, checkpointing, freezing
and argument checking."""
import math

import pytest
import torch
import torch.nn as nn
from mmseg.models.backbones import SwinTransformer

from mmseg_vpt.models import VPTSwinTransformer

from .vpt_helpers import (Taps, assert_outputs_equal, build_segmentor,
                          check_frozen_training, prompt_only_loss_ratio,
                          randomize_, snapshot, trainable, uper_head)

P = 4  # prompt length
DIMS = [16, 32, 64]
# 64 px input: 16x16 (16 windows), 8x8 (4 windows), 4x4 (1 window); every
# stage has a plain and a shifted block
BASE = dict(pretrain_img_size=64, embed_dims=16, patch_size=4, window_size=4,
            depths=(2, 2, 2), num_heads=(2, 2, 4), strides=(4, 2, 2),
            out_indices=(0, 1, 2), mlp_ratio=2, drop_path_rate=0.0)
NUM_LAYERS = 6


def cfg(**kwargs) -> dict:
    out = dict(BASE)
    out.update(kwargs)
    return out


def make_parent(**kwargs) -> SwinTransformer:
    parent = SwinTransformer(**cfg(**kwargs))
    parent.init_weights()
    randomize_(parent)
    parent.eval()  # mmseg's train()/eval() return None, not self
    return parent


def make_vpt(parent=None, **kwargs) -> VPTSwinTransformer:
    model = VPTSwinTransformer(**cfg(**kwargs))
    if parent is not None:
        model.load_state_dict(parent.state_dict(), strict=False)
    else:
        model.init_weights()
        randomize_(model)
    model.eval()
    return model


def blocks(model) -> list:
    return [b for stage in model.stages for b in stage.blocks]


# ---------------------------------------------------------------------------
# equivalence with mmseg's SwinTransformer
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(64, 64), (56, 72), (36, 44)],
                         ids=['window_multiple', 'padded', 'padded_small'])
@pytest.mark.parametrize('config', [
    dict(),
    dict(patch_norm=False, out_indices=(1, 2)),
    dict(window_size=3, qkv_bias=False, out_indices=(0, 2)),
], ids=['default', 'no_patch_norm', 'window3'])
def test_without_prompts_loads_parent_strictly_and_is_bit_identical(
        config, size):
    parent = make_parent(**config)
    assert any(b.attn.shift_size > 0 for b in blocks(parent))
    model = VPTSwinTransformer(prompt_length=0, frozen_exclude=['all'],
                               fused_attn=False, **cfg(**config))
    result = model.load_state_dict(parent.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert model.prompt_embeddings is None
    model.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert_outputs_equal(model(x), parent(x))


def test_without_prompts_matches_parent_with_abs_pos_embed():
    parent = make_parent(use_abs_pos_embed=True)
    model = make_vpt(parent, prompt_length=0, frozen_exclude=['all'],
                     use_abs_pos_embed=True, fused_attn=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_outputs_equal(model(x), parent(x))


@pytest.mark.parametrize('layers, rows', [
    ('deep', [2, 2, 2]),
    ('shallow', [1, 0, 0]),
    ([1, 4], [1, 0, 1]),
    ([5, 0, 2, 3], [1, 2, 1]),
], ids=['deep', 'shallow', 'list', 'list_unsorted'])
def test_prompts_are_a_parameter_list_per_stage_and_only_they_miss_in_parent(
        layers, rows):
    parent = make_parent()
    model = VPTSwinTransformer(prompt_length=P, prompt_layers=layers,
                               **cfg())
    assert isinstance(model.prompt_embeddings, nn.ParameterList)
    assert [tuple(t.shape) for t in model.prompt_embeddings] == [
        (r, P, c) for r, c in zip(rows, DIMS)]
    result = model.load_state_dict(parent.state_dict(), strict=False)
    assert sorted(result.missing_keys) == [
        f'prompt_embeddings.{i}' for i in range(3)]
    assert result.unexpected_keys == []
    out = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 16, 16, 16), (1, 32, 8, 8),
                                             (1, 64, 4, 4)]


@pytest.mark.parametrize('fused', [False, True])
@pytest.mark.parametrize('layers, kept', [('deep', [0, 0, 0]),
                                          ('shallow', [P, P, 0])])
def test_stage_outputs_are_normed_image_tokens_without_prompts(
        layers, kept, fused):
    """The last block of a stage computes its prompt outputs only when the
    next stage uses them (not when fresh prompts replace them, and never in
    the last stage)."""
    model = make_vpt(prompt_length=P, prompt_layers=layers, fused_attn=fused)
    last = [stage.blocks[-1].ffn for stage in model.stages]
    with Taps(last) as t, torch.no_grad():
        feats = model(torch.randn(2, 3, 56, 72))
    for i, (hw, c) in enumerate(zip([(14, 18), (7, 9), (4, 5)], DIMS)):
        assert t.outputs[i].shape == (2, kept[i] + hw[0] * hw[1], c)
        with torch.no_grad():
            tokens = getattr(model, f'norm{i}')(t.outputs[i][:, kept[i]:])
        assert torch.equal(feats[i],
                           tokens.view(2, *hw, c).permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------
# batch independence
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(64, 64), (56, 72)],
                         ids=['window_multiple', 'padded'])
@pytest.mark.parametrize('layers', ['shallow', 'deep'])
def test_sample_outputs_are_the_same_alone_and_in_a_batch(layers, size):
    model = make_vpt(prompt_length=P, prompt_layers=layers)
    x = torch.randn(3, 3, *size)
    second = blocks(model)[1].norm1
    with Taps([second]) as t, torch.no_grad():
        batch = model(x)
    if layers == 'shallow':
        # after block 0 every sample carries its own prompt outputs
        prompts = t.inputs[0][:, :P]
        assert (prompts[0] - prompts[1]).abs().max() > 1e-3
        assert (prompts[1] - prompts[2]).abs().max() > 1e-3
    with torch.no_grad():
        for i in range(3):
            alone = model(x[i:i + 1])
            for a, b in zip(alone, batch):
                assert torch.allclose(a[0], b[i], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------
# window semantics against a naive reference
# ---------------------------------------------------------------------------
def naive_prompted_block(block, x, hw, num_prompts):
    """A loop-based SwinBlock with prompts, written from the VPT-Swin rule:
    for each sample and each window, attend over [the sample's prompts,
    window tokens] with the relative position bias and -100 shift mask
    zero-padded for prompt rows/cols; a prompt's output is the mean of its
    window outputs. Returns (block output, (token attn out, prompt attn
    out))."""
    B, T, C = x.shape
    H, W = hw
    Pn = num_prompts
    msa = block.attn.w_msa
    ws, shift = block.attn.window_size, block.attn.shift_size
    heads = msa.num_heads
    hd = C // heads
    N = ws * ws
    coords = [(i, j) for i in range(ws) for j in range(ws)]

    table = msa.relative_position_bias_table
    rel = torch.empty(heads, N, N)
    for a, (i1, j1) in enumerate(coords):
        for b, (i2, j2) in enumerate(coords):
            rel[:, a, b] = table[(i1 - i2 + ws - 1) * (2 * ws - 1) +
                                 (j1 - j2 + ws - 1)]

    xn = block.norm1(x)
    prompts, tokens = xn[:, :Pn], xn[:, Pn:]
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    img = torch.zeros(B, Hp, Wp, C)
    img[:, :H, :W] = tokens.reshape(B, H, W, C)
    if shift:
        img = torch.roll(img, (-shift, -shift), (1, 2))

    def region(v, size):
        return 0 if v < size - ws else (1 if v < size - shift else 2)

    out_img = torch.zeros_like(img)
    prompt_out = torch.zeros(B, Pn, C)
    num_windows = (Hp // ws) * (Wp // ws)
    for s in range(B):
        for wy in range(Hp // ws):
            for wx in range(Wp // ws):
                pos = [(wy * ws + i, wx * ws + j) for i, j in coords]
                win = torch.stack([img[s, r, c] for r, c in pos])
                seq = torch.cat([prompts[s], win])
                q, k, v = msa.qkv(seq).chunk(3, dim=-1)
                bias = torch.zeros(heads, Pn + N, Pn + N)
                bias[:, Pn:, Pn:] = rel
                if shift:
                    ids = [3 * region(r, Hp) + region(c, Wp) for r, c in pos]
                    for a in range(N):
                        for b in range(N):
                            if ids[a] != ids[b]:
                                bias[:, Pn + a, Pn + b] -= 100.0
                head_outs = []
                for h in range(heads):
                    sl = slice(h * hd, (h + 1) * hd)
                    logits = (q[:, sl] * msa.scale) @ k[:, sl].T + bias[h]
                    head_outs.append(logits.softmax(-1) @ v[:, sl])
                o = msa.proj(torch.cat(head_outs, -1))
                prompt_out[s] += o[:Pn] / num_windows
                for a, (r, c) in enumerate(pos):
                    out_img[s, r, c] = o[Pn + a]
    if shift:
        out_img = torch.roll(out_img, (shift, shift), (1, 2))
    tokens_out = out_img[:, :H, :W].reshape(B, H * W, C)
    y = x + torch.cat([prompt_out, tokens_out], 1)
    return block.ffn(block.norm2(y), identity=y), (tokens_out, prompt_out)


@pytest.fixture
def stage0_blocks():
    model = make_vpt(prompt_length=P)
    plain, shifted = model.stages[0].blocks
    assert plain.attn.shift_size == 0 and shifted.attn.shift_size == 2
    return plain, shifted


@pytest.mark.parametrize('hw', [(8, 8), (6, 10)], ids=['8x8', 'padded_6x10'])
def test_naive_reference_without_prompts_matches_mmseg_swin_block(
        stage0_blocks, hw):
    """Validates the reference itself against mmseg's own block."""
    x = torch.randn(2, hw[0] * hw[1], 16)
    with torch.no_grad():
        for block in stage0_blocks:
            ref, _ = naive_prompted_block(block, x, hw, 0)
            assert torch.allclose(block(x, hw), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('hw', [(8, 8), (6, 10)], ids=['8x8', 'padded_6x10'])
@pytest.mark.parametrize('shifted', [False, True], ids=['plain', 'shifted'])
@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'mmseg_ops'])
def test_prompted_block_matches_naive_window_prompt_reference(
        stage0_blocks, shifted, hw, fused):
    block = stage0_blocks[int(shifted)]
    block.attn.w_msa.fused_attn = fused
    # samples with different prompts, as after a shallow block
    x = torch.randn(2, P + hw[0] * hw[1], 16)
    with torch.no_grad():
        ref_out, (ref_tokens, ref_prompts) = naive_prompted_block(
            block, x, hw, P)
        xn = block.norm1(x)
        attn = block.attn(xn, hw)
        out = block(x, hw)
        # prompt outputs skipped: the same image tokens
        skipped = block(x, hw, prompt_outputs=False)
    assert torch.allclose(attn[:, P:], ref_tokens, atol=1e-5, rtol=0)
    assert torch.allclose(attn[:, :P], ref_prompts, atol=1e-5, rtol=0)
    assert torch.allclose(out, ref_out, atol=1e-5, rtol=0)
    assert torch.allclose(skipped, ref_out[:, P:], atol=1e-5, rtol=0)
    # the prompts matter: without them the image tokens come out different
    with torch.no_grad():
        no_prompt_tokens = block.attn(xn[:, P:], hw)
    assert (no_prompt_tokens - attn[:, P:]).abs().max() > 1e-3


# ---------------------------------------------------------------------------
# patch merging of prompts
# ---------------------------------------------------------------------------
def test_prompted_merge_equals_patch_merging_a_map_filled_with_the_prompt():
    model = make_vpt(prompt_length=P)
    merge = model.stages[0].downsample
    B, C, H, W = 2, 16, 4, 6
    prompts = torch.randn(B, P, C)
    tokens = torch.randn(B, H * W, C)
    with torch.no_grad():
        out, out_hw = merge(torch.cat([prompts, tokens], 1), (H, W))
        assert out_hw == (2, 3)
        assert out.shape == (B, P + 6, 2 * C)
        # image tokens: exactly mmseg's PatchMerging
        assert torch.equal(out[:, P:], merge(tokens, (H, W))[0])
        for p in range(P):
            filled = prompts[:, p:p + 1].expand(B, H * W, C).contiguous()
            merged, _ = merge(filled, (H, W))
            # every position of the merged map holds the same vector
            assert torch.allclose(merged, merged[:, :1].expand_as(merged),
                                  atol=1e-6)
            assert torch.allclose(out[:, p], merged[:, 0], atol=1e-6)
            # the position-major order (timm/original Swin) would differ
            tiled = merge.reduction(merge.norm(prompts[:, p].repeat(1, 4)))
            assert (tiled - merged[:, 0]).abs().max() > 1e-3


def test_prompts_are_merged_into_next_stage_unless_its_first_block_is_fresh():
    """shallow: stage 1's first block receives the merged stage-0 prompt
    outputs; deep: it receives fresh stage-1 prompts instead."""
    for layers in ('shallow', 'deep'):
        model = make_vpt(prompt_length=P, prompt_layers=layers,
                         fused_attn=False)
        b0, b1 = model.stages[0].blocks
        s1 = model.stages[1].blocks[0]
        with Taps([b1.ffn, s1.norm1]) as t, torch.no_grad():
            model(torch.randn(2, 3, 64, 64))
        stage0_out = t.outputs[0]  # last block of stage 0
        stage1_in_normed = t.outputs[1]
        with torch.no_grad():
            merged, _ = model.stages[0].downsample(stage0_out, (16, 16))
            if layers == 'deep':
                # the prompt outputs were not even computed
                assert stage0_out.shape[1] == 16 * 16
                expected = torch.cat([
                    model.prompt_embeddings[1][0].expand(2, P, 32), merged],
                    1)
            else:
                expected = merged
            assert torch.equal(s1.norm1(expected), stage1_in_normed)


# ---------------------------------------------------------------------------
# causality of deep prompts
# ---------------------------------------------------------------------------
def test_perturbing_block_k_prompts_keeps_earlier_blocks_and_stages_fixed():
    model = make_vpt(prompt_length=P, prompt_layers='deep')
    x = torch.randn(2, 3, 64, 64)
    stage_of = [0, 0, 1, 1, 2, 2]
    ffns = [b.ffn for b in blocks(model)]
    with Taps(ffns) as base, torch.no_grad():
        base_feats = model(x)
    for k in range(NUM_LAYERS):
        stage, row = stage_of[k], k % 2
        tensor = model.prompt_embeddings[stage]
        saved = tensor.detach().clone()
        with torch.no_grad():
            tensor[row] += torch.randn_like(tensor[row])
        with Taps(ffns) as t, torch.no_grad():
            feats = model(x)
        with torch.no_grad():
            tensor.copy_(saved)
        for i in range(k):
            assert torch.equal(t.outputs[i], base.outputs[i]), (k, i)
        # image tokens of block k change
        assert (t.outputs[k][:, P:] - base.outputs[k][:, P:]).abs().max() \
            > 1e-4, k
        for s in range(stage):
            assert torch.equal(feats[s], base_feats[s]), (k, s)
        assert (feats[stage] - base_feats[stage]).abs().max() > 1e-4, k


# ---------------------------------------------------------------------------
# checkpointing
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('layers', ['deep', 'shallow'])
def test_with_cp_gives_same_outputs_and_prompt_grads(layers,
                                                     count_checkpoints):
    plain = make_vpt(prompt_length=P, prompt_layers=layers)
    ckpt = VPTSwinTransformer(**cfg(prompt_length=P, prompt_layers=layers,
                                    with_cp=True))
    ckpt.load_state_dict(plain.state_dict(), strict=True)
    ckpt.eval()
    x = torch.randn(2, 3, 64, 64)
    results = []
    for model in (plain, ckpt):
        feats = model(x)
        sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum()
            for f in feats).backward()
        results.append((feats, [t.grad.clone()
                                for t in model.prompt_embeddings
                                if t.numel()]))
    assert count_checkpoints() == NUM_LAYERS
    (fa, ga), (fb, gb) = results
    for a, b in zip(fa, fb):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert len(ga) == len(gb) > 0
    for a, b in zip(ga, gb):
        assert a.abs().sum() > 0
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------
# every trainable parameter takes part (DDP)
# ---------------------------------------------------------------------------
LAYER_SPECS = dict(deep='deep', shallow='shallow', list_skipping_stage1=[1, 4])


@pytest.mark.parametrize('layers', list(LAYER_SPECS.values()),
                         ids=list(LAYER_SPECS))
def test_every_trainable_parameter_receives_a_gradient(layers):
    """Stages without prompted blocks must not hold trainable prompt
    parameters that never get a gradient."""
    model = make_vpt(prompt_length=P, prompt_layers=layers)
    sum(f.sum() for f in model(torch.randn(2, 3, 64, 64))).backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None]
    assert no_grad == []


@pytest.fixture
def gloo_group(tmp_path):
    """A one-process gloo group, as a CPU ``dist_train`` would have."""
    import torch.distributed as dist
    if dist.is_initialized():
        pytest.skip('a process group already exists')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize('layers', list(LAYER_SPECS.values()),
                         ids=list(LAYER_SPECS))
def test_ddp_trains_without_find_unused_parameters(layers, gloo_group):
    """mmengine wraps models in DDP with find_unused_parameters=False by
    default; a trainable parameter that never gets a gradient makes the
    second iteration fail."""
    from torch.nn.parallel import DistributedDataParallel
    model = VPTSwinTransformer(**cfg(prompt_length=P, prompt_layers=layers))
    ddp = DistributedDataParallel(model, device_ids=None)
    for _ in range(3):
        sum(f.sum() for f in ddp(torch.randn(1, 3, 64, 64))).backward()


# ---------------------------------------------------------------------------
# freezing and training in a UperNet
# ---------------------------------------------------------------------------
SEG_BACKBONE = dict(type='VPTSwinTransformer', pretrain_img_size=32,
                    embed_dims=16, patch_size=4, window_size=4,
                    depths=(2, 2), num_heads=(2, 4), strides=(4, 2),
                    out_indices=(0, 1), mlp_ratio=2, drop_path_rate=0.1)


def test_default_frozen_exclude_trains_only_the_prompt_tensors():
    model = VPTSwinTransformer(**cfg(prompt_length=P))
    assert trainable(model) == {f'prompt_embeddings.{i}' for i in range(3)}


def test_bias_exclude_is_a_substring_match_incl_position_bias_tables():
    model = VPTSwinTransformer(**cfg(prompt_length=P,
                                     frozen_exclude=['prompt', 'bias']))
    names = {n for n, _ in model.named_parameters()}
    assert trainable(model) == {n for n in names
                                if 'prompt' in n or 'bias' in n}
    assert 'stages.0.blocks.0.attn.w_msa.relative_position_bias_table' in \
        trainable(model)


@pytest.mark.parametrize('frozen_exclude', [['prompt'], ['prompt', 'bias']])
def test_adamw_steps_in_upernet_leave_frozen_backbone_bit_identical(
        frozen_exclude):
    seg = build_segmentor(
        dict(SEG_BACKBONE, prompt_length=P, frozen_exclude=frozen_exclude),
        uper_head([16, 32]))
    randomize_(seg.backbone)
    check_frozen_training(seg, steps=3)
    assert {'backbone.prompt_embeddings.0',
            'backbone.prompt_embeddings.1'} <= trainable(seg)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_training_only_prompts_in_frozen_upernet_lowers_loss(seed):
    torch.manual_seed(seed)
    seg = build_segmentor(dict(SEG_BACKBONE, prompt_length=8),
                          uper_head([16, 32]))
    randomize_(seg.backbone, std=0.3)
    with torch.no_grad():
        seg.decode_head.conv_seg.weight.normal_(0, 1.0)
    frozen = {k: v for k, v in snapshot(seg.backbone).items()
              if 'prompt' not in k}
    ratio = prompt_only_loss_ratio(seg, steps=30, lr=0.05, seed=seed)
    # measured 0.28-0.68 over 8 seeds (0.28-0.46 for these three)
    assert ratio < 0.8
    for k, v in frozen.items():
        assert torch.equal(seg.backbone.state_dict()[k], v), k


# ---------------------------------------------------------------------------
# train / eval modes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('frozen_exclude, frozen_eval, deterministic', [
    (['prompt'], True, True),
    (['prompt'], False, False),
    (['all'], True, False),
], ids=['frozen_eval', 'frozen_eval_off', 'full_finetuning'])
def test_train_mode_drop_path_follows_frozen_eval(frozen_exclude, frozen_eval,
                                                  deterministic):
    model = make_vpt(prompt_length=P, drop_path_rate=0.5,
                     frozen_exclude=frozen_exclude, frozen_eval=frozen_eval)
    assert model.train() is model
    m = {n: mod.training for n, mod in model.named_modules() if n}
    assert m.pop('prompt_dropout') is True
    assert all(not v for v in m.values()) is deterministic
    assert all(m.values()) is not deterministic
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert all(torch.equal(i, j) for i, j in zip(a, b)) is deterministic


@pytest.mark.parametrize('layers', list(LAYER_SPECS.values()),
                         ids=list(LAYER_SPECS))
def test_full_finetuning_keeps_train_mode_for_every_prompt_layout(layers):
    model = make_vpt(prompt_length=P, prompt_layers=layers,
                     frozen_exclude=['all'])
    model.train()
    assert all(m.training for m in model.modules())


# ---------------------------------------------------------------------------
# initialisation and arguments
# ---------------------------------------------------------------------------
def test_uniform_init_uses_patch_size_and_first_stage_width_for_all_stages():
    model = VPTSwinTransformer(**cfg(prompt_length=50))
    bound = math.sqrt(6.0 / (3 * 4 * 4 + 16))
    for tensor in model.prompt_embeddings:
        values = tensor.detach()
        assert values.abs().max() <= bound
        assert values.abs().max() > 0.98 * bound


def test_normal_init_has_std_0_02():
    model = VPTSwinTransformer(**cfg(prompt_length=50, prompt_init='normal'))
    values = torch.cat([t.detach().flatten()
                        for t in model.prompt_embeddings])
    assert abs(values.std().item() - 0.02) < 0.001


BAD_ARGS = {
    'negative_length': (dict(prompt_length=-1), 'prompt_length'),
    'layer_out_of_range': (dict(prompt_layers=[0, NUM_LAYERS]),
                           'prompt_layers'),
    'repeated_layer': (dict(prompt_layers=[2, 2]), 'prompt_layers'),
    'unknown_layers_string': (dict(prompt_layers='Deep'), 'prompt_layers'),
    'empty_layers': (dict(prompt_layers=[]), 'prompt_layers'),
    'unknown_init': (dict(prompt_init='trunc_normal'), 'prompt_init'),
    'exclude_typo': (dict(frozen_exclude=['promt']), 'frozen_exclude'),
    'exclude_string': (dict(frozen_exclude='prompt'), 'frozen_exclude'),
    'dropout_negative': (dict(prompt_dropout=-0.1), 'prompt_dropout'),
}


@pytest.mark.parametrize('kwargs, name', list(BAD_ARGS.values()),
                         ids=list(BAD_ARGS))
def test_bad_argument_raises_value_error_naming_it(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VPTSwinTransformer(**cfg(**kwargs))
