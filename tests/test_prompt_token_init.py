"""Prompts initialised from samples' patch tokens: every prompted layer's
prompts are tokens (or k-means centres of the tokens) that enter that very
layer, on the mmseg ViT, the timm ViT and the Swin; the frozen weights do
not move; the hook does it before training and not after a resume."""
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_vpt.models.prompt_token_init import token_prototypes

from .test_prompt_ablations import SWIN, TIMM, VIT
from .vpt_helpers import randomize_, snapshot

BACKBONES = {'vit': VIT, 'timm': TIMM, 'swin': SWIN}


def build(cfg, **kwargs):
    model = MODELS.build(dict(cfg, **kwargs))
    model.init_weights()
    randomize_(model)
    return model


def layer_modules(model):
    """(layer module, index of the first prompt slot) in execution order."""
    if hasattr(model, 'timm_model'):
        return [(b, model.timm_model.num_prefix_tokens)
                for b in model.timm_model.blocks]
    if hasattr(model, 'stages'):  # Swin: [prompts, image tokens]
        return [(b, 0) for s in model.stages for b in s.blocks]
    return [(layer, 1) for layer in model.layers]  # mmseg ViT: [cls, ...]


def layer_inputs(model, x):
    """Each layer's input sequence in an eval forward pass."""
    seen = []
    handles = [m.register_forward_pre_hook(
        lambda mod, args, kw, start=start: seen.append((args[0], start)),
        with_kwargs=True) for m, start in layer_modules(model)]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def nearest(prompts, tokens):
    """Each prompt's distance to its nearest token (exact: cdist's matmul
    shortcut is off by ~1e-3 at these norms)."""
    return torch.cdist(prompts, tokens,
                       compute_mode='donot_use_mm_for_euclid_dist').min(1)[0]


def prompts_of(model, layer):
    stage, row = model._prompt_slots[layer]
    return model.prompt_tensors()[stage][row]


@pytest.mark.parametrize('kind', BACKBONES)
def test_sampled_prompts_are_tokens_entering_their_layer(kind):
    model = build(BACKBONES[kind], prompt_length=3, prompt_layers='deep')
    frozen = {k: v for k, v in snapshot(model).items() if 'prompt' not in k}
    before = [t.clone() for t in model.prompt_tensors()]
    x = torch.randn(2, 3, 32, 32)
    num_set = model.init_prompts_from_tokens(x, method='sample', seed=1)
    assert num_set == len(model.prompt_layers)
    assert all(not torch.equal(a, b)
               for a, b in zip(before, model.prompt_tensors()))
    for (seq, start), layer in zip(layer_inputs(model, x),
                                   range(len(layer_modules(model)))):
        prompts = prompts_of(model, layer)
        P = prompts.shape[0]
        # the layer sees exactly the prompts it was given ...
        assert torch.equal(seq[:, start:start + P],
                           prompts.expand(2, -1, -1))
        # ... and each of them is one of the image tokens entering it
        tokens = seq[:, start + P:].reshape(-1, seq.shape[-1])
        dist = nearest(prompts, tokens)
        assert torch.all(dist < 1e-5), (layer, dist)
    # the frozen backbone did not move, and a seed gives the same prompts
    after = snapshot(model)
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    again = build(BACKBONES[kind], prompt_length=3, prompt_layers='deep')
    again.load_state_dict({k: v for k, v in after.items()
                           if 'prompt' not in k}, strict=False)
    again.init_prompts_from_tokens(x, method='sample', seed=1)
    for a, b in zip(again.prompt_tensors(), model.prompt_tensors()):
        assert torch.equal(a, b)


def sse(tokens, centres):
    nearest_sq = torch.cdist(tokens, centres.detach()).min(1)[0].pow(2)
    return float(nearest_sq.sum())


def test_kmeans_finds_the_clusters_of_the_tokens():
    gen = torch.Generator().manual_seed(0)
    # three clusters far apart: k-means++ starts in three of them and
    # Lloyd's steps end on their means; random draws fit worse
    means = torch.tensor([[0., 0.], [10., 0.], [0., 10.]])
    tokens = torch.cat([m + 0.1 * torch.randn(50, 2, generator=gen)
                        for m in means])
    sampled = token_prototypes(tokens, 3, 'sample',
                               torch.Generator().manual_seed(5))
    centres = token_prototypes(tokens, 3, 'kmeans',
                               torch.Generator().manual_seed(5))
    assert sse(tokens, centres) <= sse(tokens, sampled)
    assert torch.cdist(means, centres).min(1).values.max() < 0.1
    with pytest.raises(ValueError, match='prompt_length=200'):
        token_prototypes(tokens, 200, 'kmeans', gen)


@pytest.mark.parametrize('kind', ['vit', 'swin'])
def test_kmeans_prompts_beat_sampled_ones_on_the_first_layer(kind):
    x = torch.randn(2, 3, 32, 32)
    results = {}
    for method in ('sample', 'kmeans'):
        model = build(BACKBONES[kind], prompt_length=4, prompt_layers='deep')
        torch.manual_seed(0)
        randomize_(model)
        model.init_prompts_from_tokens(x, method=method, seed=3)
        seq, start = layer_inputs(model, x)[0]
        tokens = seq[:, start + 4:].reshape(-1, seq.shape[-1])
        results[method] = sse(tokens, prompts_of(model, 0))
    # the first layer's tokens do not depend on the prompts: same tokens
    assert results['kmeans'] < results['sample']


def test_shared_prompts_are_set_once_per_stage():
    model = build(VIT, prompt_length=2, prompt_layers='deep',
                  prompt_shared=True)
    x = torch.randn(2, 3, 32, 32)
    assert model.init_prompts_from_tokens(x, method='sample') == 1
    seq, start = layer_inputs(model, x)[0]
    tokens = seq[:, start + 2:].reshape(-1, 32)
    assert nearest(model.prompt_embeddings[0], tokens).max() < 1e-5


@pytest.mark.parametrize('kwargs, match', [
    (dict(prompt_length=0, frozen_exclude=[]), 'prompt_length=0'),
    (dict(prompt_length=16, prompt_location='add'), "'add'"),
    (dict(prompt_length=2, prompt_proj_dims=8), 'prompt_proj=True'),
])
def test_token_init_refuses_prompts_it_cannot_set(kwargs, match):
    model = build(VIT, **kwargs)
    with pytest.raises(ValueError, match=match):
        model.init_prompts_from_tokens(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='method must be one of'):
        build(VIT, prompt_length=2).init_prompts_from_tokens(
            torch.randn(1, 3, 32, 32), method='mean')


@pytest.mark.slow
def test_train_py_initialises_prompts_once_and_resume_keeps_them(
        tmp_path_factory):
    """tools/train.py with the hook: the log names what was set, the
    prompts differ from the run without it, and a resumed run keeps the
    checkpoint's prompts (lr 0, so training itself moves nothing)."""
    from mmengine.config import Config

    from .tools_helpers import (REPO, read_checkpoint, run, short_schedule,
                                synthetic_workspace, train_cmd)
    root = synthetic_workspace(tmp_path_factory, 'token_init')
    demo = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
    hooks = Config.fromfile(REPO / demo).custom_hooks
    for name, extra in (('plain', []), ('token_init', [dict(
            type='PromptTokenInitHook', method='sample', seed=2)])):
        (root / f'{name}.py').write_text(
            f"_base_ = ['{REPO / demo}']\n"
            f'custom_hooks = {hooks + extra!r}\n'
            'optim_wrapper = dict(optimizer=dict(lr=0.0))\n'
            'param_scheduler = []\n')

    def prompts(work, it):
        state = read_checkpoint(work / f'iter_{it}.pth')['state_dict']
        return state['backbone.prompt_embeddings']

    log = run(train_cmd(str(root / 'plain.py'), root / 'plain',
                        '--cfg-options', *short_schedule(2)), cwd=root)
    assert 'PromptTokenInitHook' not in log
    log = run(train_cmd(str(root / 'token_init.py'), root / 'init',
                        '--cfg-options', *short_schedule(2)), cwd=root)
    assert 'PromptTokenInitHook: 4 prompt sets initialised from the image ' \
        'tokens of the first training batch (2 images per rank; sample, ' \
        'seed 2)' in log
    initialised = prompts(root / 'init', 2)
    assert initialised.shape == (4, 10, 96)
    assert not torch.equal(initialised, prompts(root / 'plain', 2))

    log = run(train_cmd(str(root / 'token_init.py'), root / 'init',
                        '--resume', '--cfg-options', *short_schedule(4)),
              cwd=root)
    assert 'prompts come from the loaded checkpoint' in log
    assert torch.equal(prompts(root / 'init', 4), initialised)


def _rank_main(rank: int, store: str, out: str) -> None:
    """One of two gloo ranks: its own images, then the hook's step."""
    import torch.distributed as dist

    from mmseg_vpt.engine.prompt_init_hook import init_prompts_on_every_rank
    dist.init_process_group('gloo', init_method=f'file://{store}',
                            rank=rank, world_size=2)
    torch.manual_seed(0)
    model = build(VIT, prompt_length=3, prompt_layers='deep')
    torch.manual_seed(100 + rank)  # each rank's batch differs
    images = torch.randn(2, 3, 32, 32)
    own = build(VIT, prompt_length=3, prompt_layers='deep')
    own.load_state_dict(model.state_dict())
    own.init_prompts_from_tokens(images, 'kmeans', 0)  # without broadcast
    init_prompts_on_every_rank(model, images, 'kmeans', 0)
    torch.save(dict(shared=model.prompt_embeddings.detach(),
                    own=own.prompt_embeddings.detach()), f'{out}/{rank}.pt')
    dist.destroy_process_group()


def test_every_rank_starts_from_rank_0s_prompts(tmp_path):
    torch.multiprocessing.spawn(
        _rank_main, args=(str(tmp_path / 'store'), str(tmp_path)),
        nprocs=2)
    r0, r1 = (torch.load(tmp_path / f'{r}.pt') for r in (0, 1))
    assert not torch.equal(r0['own'], r1['own'])  # the batches differ
    assert torch.equal(r0['shared'], r0['own'])
    assert torch.equal(r1['shared'], r0['own'])
