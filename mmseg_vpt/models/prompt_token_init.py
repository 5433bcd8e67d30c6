"""Prompts initialised from samples' patch tokens (the VPT paper's "if
cheap" initialisation ablation; the token-prototype idea of SPT, Wang et
al., ICML 2024).

One forward pass of the frozen backbone over a batch of training images
sets every prompt tensor, layer after layer, in execution order: just
before a prompted layer runs, its prompts become ``prompt_length``
representatives of the image tokens entering that layer (k-means centres
or randomly sampled tokens). The layer then runs with the prompts it was
given, so deeper layers see the tokens that their trained-from-here
predecessors produce, exactly as in training.

The pass is driven by :class:`TokenInitFlow`, a
:class:`~mmseg_vpt.models.prompt_flow.PromptFlow` that writes a layer's
prompts before splicing them; backbones need nothing of their own
(``PromptTuningMixin.init_prompts_from_tokens`` runs it, and
:class:`~mmseg_vpt.engine.PromptTokenInitHook` runs that before training).
"""
from typing import Optional, Set, Tuple

import torch

from .prompt_flow import PromptFlow

TOKEN_INIT_METHODS = ('kmeans', 'sample')


def token_prototypes(tokens: torch.Tensor, num: int, method: str,
                     generator: torch.Generator,
                     iters: int = 10) -> torch.Tensor:
    """``num`` representative rows of ``tokens`` (N, C).

    ``'sample'``: ``num`` distinct rows drawn at random. ``'kmeans'``:
    Lloyd's algorithm from a k-means++ draw (each next start drawn with
    probability proportional to its squared distance to the starts so far);
    a centre that loses all of its tokens keeps its position.
    """
    if tokens.shape[0] < num:
        raise ValueError(
            f'prompt initialisation from tokens needs at least '
            f'prompt_length={num} image tokens per prompted layer, but the '
            f'batch gives {tokens.shape[0]}: pass more or larger images')
    tokens = tokens.float()
    if method == 'sample':
        pick = torch.randperm(tokens.shape[0], generator=generator)[:num]
        return tokens[pick.to(tokens.device)].clone()
    first = torch.randint(tokens.shape[0], (1, ), generator=generator)
    centres = [tokens[first.to(tokens.device)]]
    dist = (tokens - centres[0]).pow(2).sum(1)
    for _ in range(num - 1):
        weights = dist.cpu().double()
        if weights.sum() <= 0:  # fewer distinct tokens than prompts
            weights = torch.ones_like(weights)
        nxt = torch.multinomial(weights, 1, generator=generator)
        centres.append(tokens[nxt.to(tokens.device)])
        dist = torch.minimum(dist, (tokens - centres[-1]).pow(2).sum(1))
    centres = torch.cat(centres)
    for _ in range(iters):
        owner = torch.cdist(tokens, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, owner, tokens)
        counts = torch.bincount(owner, minlength=num).to(tokens.dtype)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


class TokenInitFlow(PromptFlow):
    """A prompt flow that first sets each prompted layer's prompts from the
    image tokens entering it, then splices them as usual.

    Shared prompts (``prompt_shared``) are set once per stage, at the first
    layer that uses them.
    """

    def __init__(self, host, batch_size: int,
                 grid: Optional[Tuple[int, int]], method: str,
                 generator: torch.Generator,
                 done: Set[Tuple[int, int]]) -> None:
        super().__init__(host, batch_size, grid)
        self.method = method
        self.generator = generator
        self.done = done  # (stage, row) of the prompts set so far

    def enter(self, x: torch.Tensor, layer: int, start: int,
              num_old: Optional[int] = None) -> torch.Tensor:
        slot = self.host._prompt_slots.get(layer)
        if slot is not None and slot not in self.done:
            old = self.count if num_old is None else num_old
            image_tokens = x[:, start + old:].reshape(-1, x.shape[-1])
            stage, row = slot
            target = self.host.prompt_tensors()[stage][row]
            target.copy_(token_prototypes(
                image_tokens, self.host.prompt_length, self.method,
                self.generator).to(target.dtype))
            self.done.add(slot)
        return super().enter(x, layer, start, num_old)
