"""The mini-paper's segmentor (this project's ViT with a linear head), a
prompt ensemble over one frozen backbone, and a protocol's model."""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_vpt.models import VPTVisionTransformer
from mmseg_vpt.utils.state_fit import fit_state

from .config import PROTOCOLS, MiniPaperConfig


class MiniSegmentor(nn.Module):
    """``VPTVisionTransformer`` plus a linear (1x1 conv) head on the last
    layer's patch tokens, upsampled bilinearly to the image."""

    def __init__(self, cfg: MiniPaperConfig, num_classes: int,
                 prompt_length: int = 0, prompt_layers='deep',
                 frozen_exclude: Sequence[str] = ('all', ),
                 **backbone_args) -> None:
        super().__init__()
        self.backbone = VPTVisionTransformer(
            prompt_length=prompt_length,
            prompt_layers=prompt_layers,
            frozen_exclude=list(frozen_exclude),
            img_size=(cfg.img_size, cfg.img_size),
            patch_size=cfg.patch_size,
            embed_dims=cfg.embed_dims,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            out_indices=(cfg.num_layers - 1, ),
            final_norm=True,
            patch_bias=True,
            init_cfg=None,
            **backbone_args)
        self.head = nn.Conv2d(cfg.embed_dims, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)[-1]
        return F.interpolate(self.head(feat), size=x.shape[-2:],
                             mode='bilinear', align_corners=False)


class PromptEnsemble(nn.Module):
    """K segmentors of one frozen backbone (K seeds of a prompt protocol):
    the backbone runs once over K copies of the batch, copy k with member
    k's prompts (``mixed_prompts``, the serving mechanism), and the output
    is the mean of the members' softmax."""

    def __init__(self, members: Sequence[MiniSegmentor]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        shared = members[0].backbone
        frozen = {k: v for k, v in shared.named_parameters()
                  if not v.requires_grad}
        for m in members[1:]:
            theirs = dict(m.backbone.named_parameters())
            if any(not torch.equal(v, theirs[k]) for k, v in frozen.items()):
                raise ValueError('ensemble members must share the frozen '
                                 'backbone weights')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, N = len(self.members), x.shape[0]
        backbone = self.members[0].backbone
        index = torch.arange(K, device=x.device).repeat_interleave(N)
        with backbone.mixed_prompts([m.backbone for m in self.members],
                                    index):
            feats = backbone(x.repeat(K, 1, 1, 1))[-1]
        probs = [F.interpolate(m.head(f), size=x.shape[-2:],
                               mode='bilinear', align_corners=False
                               ).softmax(1)
                 for m, f in zip(self.members, feats.split(N))]
        return torch.stack(probs).mean(0)


def build_protocol_model(cfg: MiniPaperConfig, protocol: str,
                         base_state: dict, num_classes: int,
                         seed: int) -> MiniSegmentor:
    """The pretrained backbone under ``protocol`` plus a fresh head; the head
    starts identical for every protocol of a seed."""
    settings = dict(PROTOCOLS[protocol])
    settings.pop('token_init', None)  # needs the data: adapt() does it
    settings.setdefault('prompt_length', cfg.prompt_length)
    if settings['prompt_length'] == 'patches':  # 'add': one per patch
        settings['prompt_length'] = (cfg.img_size // cfg.patch_size)**2
    torch.manual_seed(seed)
    model = MiniSegmentor(cfg, num_classes, **settings)
    fit = fit_state(model.backbone.state_dict(), base_state)
    # what the protocol adds to the pretrained backbone starts fresh
    fit.missing = [k for k in fit.missing
                   if 'prompt' not in k and '.adapter.' not in k]
    if not fit.exact:
        raise RuntimeError(f'base weights do not fit: {fit.describe()}')
    model.backbone.load_state_dict(base_state, strict=False)
    torch.manual_seed(seed + 7)
    model.head.reset_parameters()
    return model

