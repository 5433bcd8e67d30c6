"""How prompts move through one forward pass of a VPT backbone.

A backbone's ``forward`` asks its mixin for a flow
(:meth:`~mmseg_vpt.models.prompts.PromptTuningMixin.prompt_flow`) and, before
each layer, lets it splice that layer's fresh prompts into the sequence
(:meth:`PromptFlow.enter`). The flow knows how many prompt slots the
sequence holds and which of them are real.

* :class:`PromptFlow`: every sample carries the backbone's own prompts (the
  training and ordinary test path; exactly the paper's method).
* :class:`MixedPromptFlow`: every sample carries the prompts of its own
  task, for a batch that mixes tasks on one frozen backbone
  (:mod:`mmseg_vpt.serving`). Tasks may differ in prompt length and in
  their prompted layers: the sequence holds as many slots as the longest
  task, a shorter task's extra slots are masked out of attention as keys
  (so they change nothing), and a sample whose task brings no fresh
  prompts at a layer keeps its previous prompt outputs.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


def additive_key_mask(key_padding_mask: torch.Tensor,
                      dtype: torch.dtype) -> torch.Tensor:
    """torch's boolean ``key_padding_mask`` (B, N), True for keys to
    ignore, as the additive (B, 1, 1, N) mask fused attention kernels take:
    -inf there, 0 elsewhere."""
    bias = torch.zeros(key_padding_mask.shape, dtype=dtype,
                       device=key_padding_mask.device)
    return bias.masked_fill_(key_padding_mask, float('-inf'))[:, None, None]


def splice_prompts(tokens: torch.Tensor, prompts: torch.Tensor, start: int,
                   num_old: int) -> torch.Tensor:
    """Put ``prompts`` at ``tokens[:, start:]``, replacing the ``num_old``
    prompt outputs of the previous layer that sit there (VPT-deep discards
    them). The prompts take the tokens' type (a backbone whose frozen
    weights are bfloat16 keeps its whole sequence in it)."""
    return torch.cat([tokens[:, :start], prompts.to(tokens.dtype),
                      tokens[:, start + num_old:]], dim=1)


class PromptFlow:
    """The backbone's own prompts, the same for every sample."""

    def __init__(self, host, batch_size: int,
                 grid: Optional[Tuple[int, int]] = None) -> None:
        self.host = host
        self.batch_size = batch_size
        self.grid = grid  # the patch grid (for prompts added to patches)
        self.count = 0  # prompt slots in the sequence now
        # (B, count) bool, True where a slot holds a real prompt; None: all
        self.valid: Optional[torch.Tensor] = None

    def replaces(self, layer: int) -> bool:
        """Whether every sample gets fresh prompts at ``layer`` (the
        previous layer's prompt outputs are then not needed)."""
        return self.host.is_prompted(layer)

    def enter(self, x: torch.Tensor, layer: int, start: int,
              num_old: Optional[int] = None) -> torch.Tensor:
        """``x`` with ``layer``'s fresh prompts at ``x[:, start:]``,
        replacing the ``num_old`` prompts there (default: :attr:`count`;
        Swin passes 0 where a block skipped computing prompt outputs that
        every sample replaces anyway)."""
        prompts = self.host.layer_prompts(layer, self.batch_size, self.grid)
        if prompts is None:
            return x
        if self.host.prompt_location == 'add':  # onto the patch tokens
            return torch.cat(
                [x[:, :start], x[:, start:] + prompts.to(x.dtype)], dim=1)
        x = splice_prompts(x, prompts, start,
                           self.count if num_old is None else num_old)
        self.count = prompts.shape[1]
        return x

    def key_padding_mask(self, length: int,
                         start: int) -> Optional[torch.Tensor]:
        """(B, length) bool, True for the slots attention must ignore as
        keys (torch's ``key_padding_mask``), or None when every slot is
        real."""
        if self.valid is None:
            return None
        mask = self.valid.new_zeros(self.valid.shape[0], length)
        mask[:, start:start + self.count] = ~self.valid
        return mask

    def attn_bias(self, length: int, start: int,
                  dtype: torch.dtype) -> Optional[torch.Tensor]:
        """:meth:`key_padding_mask` as an additive (B, 1, 1, length) mask:
        -inf where a key is ignored, 0 elsewhere."""
        mask = self.key_padding_mask(length, start)
        return None if mask is None else additive_key_mask(mask, dtype)


class MixedPromptFlow(PromptFlow):
    """Each sample's prompts come from the prompt set of its task.

    Args:
        prompt_sets: One prompt host per task (a backbone or
            :class:`~mmseg_vpt.serving.TaskPrompts`, with the same layer and
            stage layout as the backbone that runs them).
        sample_sets: (B,) long: the index in ``prompt_sets`` of each
            sample's task.
    """

    def __init__(self, prompt_sets: Sequence, sample_sets: torch.Tensor
                 ) -> None:
        super().__init__(None, int(sample_sets.numel()))
        self.sets = list(prompt_sets)
        self.sample_sets = sample_sets
        lengths = [s.prompt_length if s.prompt_layers else 0
                   for s in self.sets]
        self.slots = max(lengths, default=0)
        self._lengths = torch.tensor(lengths, device=sample_sets.device)
        # sets whose prompts have entered the sequence so far
        self._active = torch.zeros(len(self.sets), dtype=torch.bool,
                                   device=sample_sets.device)

    def _prompted(self, layer: int) -> torch.Tensor:
        return torch.tensor([s.is_prompted(layer) for s in self.sets],
                            device=self.sample_sets.device)

    def replaces(self, layer: int) -> bool:
        return bool(self._prompted(layer)[self.sample_sets].all())

    def enter(self, x: torch.Tensor, layer: int, start: int,
              num_old: Optional[int] = None) -> torch.Tensor:
        num_old = self.count if num_old is None else num_old
        prompted = self._prompted(layer)
        fresh = prompted[self.sample_sets]
        if not bool(fresh.any()):
            return x
        # one (slots, C) row per prompt set, zero-padded, then one per sample
        rows = []
        for s, is_fresh in zip(self.sets, prompted.tolist()):
            p = s.layer_prompts(layer, 1)[0] if is_fresh else None
            rows.append(p if p is None else F.pad(
                p, (0, 0, 0, self.slots - p.shape[0])))
        like = next(r for r in rows if r is not None)
        rows = [torch.zeros_like(like) if r is None else r for r in rows]
        prompts = torch.stack(rows).index_select(0, self.sample_sets).to(
            x.dtype)
        if num_old and not bool(fresh.all()):
            old = x[:, start:start + num_old]
            prompts = torch.where(fresh[:, None, None], prompts, old)
        x = splice_prompts(x, prompts, start, num_old)
        self.count = self.slots
        self._active |= prompted
        lengths = torch.where(self._active, self._lengths, 0)
        valid = torch.arange(self.slots, device=x.device)[None] < \
            lengths[self.sample_sets, None]
        self.valid = None if bool(valid.all()) else valid
        return x
