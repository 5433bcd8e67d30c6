"""The mini-paper's settings: sizes and budgets, and the protocols (the
rows of its table) as backbone settings."""
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Dict, Tuple

from mmseg_vpt.datasets.scenes import TEXTURES

from .data import SHAPES, SceneSet, make_scenes


@dataclass
class MiniPaperConfig:
    """Sizes and budgets. ``quick()`` is the CI version."""
    img_size: int = 64
    patch_size: int = 8
    embed_dims: int = 64
    num_layers: int = 6
    num_heads: int = 4
    num_colors: int = 6
    shapes: Tuple[str, ...] = SHAPES[:3]
    textures: Tuple[str, ...] = TEXTURES
    num_objects: Tuple[int, int] = (2, 4)
    radius: Tuple[float, float] = (9.0, 15.0)
    texture_contrast: float = 0.6
    pretrain_task: str = 'color'
    downstream_task: str = 'texture'
    num_pretrain_images: int = 4000
    num_train_images: int = 2000
    num_val_images: int = 400
    pretrain_steps: int = 3000
    pretrain_lr: float = 1e-3
    adapt_steps: int = 1000
    batch_size: int = 16
    prompt_length: int = 32
    weight_decay: float = 1e-4
    # learning rates (AdamW, warmup + cosine decay) by parameter group, the
    # same for every protocol and seed: the head, prompts, backbone biases
    # (Bias, VPT + Bias), the whole backbone (full fine-tuning), adapters
    # and the layers Partial-k trains (these two picked on seeds 0-1 of the
    # quick run from {3e-3, 1e-2, 3e-2} and {1e-3, 3e-3})
    lrs: Dict[str, float] = field(default_factory=lambda: dict(
        head=0.1, prompt=0.1, bias=1e-2, backbone=1e-3, adapter=3e-2,
        partial=3e-3))

    @classmethod
    def quick(cls, **kwargs) -> 'MiniPaperConfig':
        """The shortened run (CI): same model and tasks, a third of the
        pretraining and 40% of the adaptation steps, fewer images."""
        cfg = cls(num_pretrain_images=2000, num_train_images=1000,
                  num_val_images=200, pretrain_steps=1000, adapt_steps=400)
        return replace(cfg, **kwargs)


def scenes(cfg: MiniPaperConfig, num: int, seed: int) -> SceneSet:
    """``num`` scenes of the configuration's kind."""
    return make_scenes(num, seed, img_size=cfg.img_size,
                       num_colors=cfg.num_colors, shapes=cfg.shapes,
                       num_objects=cfg.num_objects, radius=cfg.radius,
                       textures=cfg.textures, contrast=cfg.texture_contrast)


#: protocol -> backbone settings; the head always trains
PROTOCOLS: 'OrderedDict[str, dict]' = OrderedDict(
    full=dict(prompt_length=0, frozen_exclude=['all']),
    head_only=dict(prompt_length=0, frozen_exclude=[]),
    bias=dict(prompt_length=0, frozen_exclude=['bias']),
    vpt_shallow=dict(prompt_layers='shallow', frozen_exclude=['prompt']),
    vpt_deep=dict(prompt_layers='deep', frozen_exclude=['prompt']),
    vpt_bias=dict(prompt_layers='deep', frozen_exclude=['prompt', 'bias']),
    # the paper's other baselines and its prompt ablations
    adapter=dict(prompt_length=0, adapter_reduction=8,
                 frozen_exclude=['adapter']),
    partial_1=dict(prompt_length=0, partial_k=1, frozen_exclude=[]),
    vpt_deep_shared=dict(prompt_layers='deep', prompt_shared=True,
                         frozen_exclude=['prompt']),
    vpt_deep_add=dict(prompt_location='add', prompt_length='patches',
                      prompt_layers='deep', frozen_exclude=['prompt']),
    vpt_shallow_pixel=dict(prompt_location='prepend-pixel',
                           prompt_layers='shallow',
                           frozen_exclude=['prompt']),
    vpt_shallow_concat=dict(prompt_location='concat-channel',
                            prompt_length=1, prompt_layers='shallow',
                            frozen_exclude=['prompt']),
    # prompts start as k-means centres of one batch's tokens at each layer
    vpt_deep_token_init=dict(prompt_layers='deep', frozen_exclude=['prompt'],
                             token_init='kmeans'),
    # VPT-deep with the frozen backbone stored and run in bfloat16
    vpt_deep_bf16=dict(prompt_layers='deep', frozen_exclude=['prompt'],
                       frozen_dtype='bf16'),
)
#: the rows of the paper's segmentation table (the default of the quick
#: test); the others are its baselines and ablations
MAIN_PROTOCOLS = ('full', 'head_only', 'bias', 'vpt_shallow', 'vpt_deep',
                  'vpt_bias')
#: ensemble rows -> (member protocol, members): the member of the row's
#: seed is that protocol's own row, the others train with other seeds
ENSEMBLES: 'OrderedDict[str, Tuple[str, int]]' = OrderedDict(
    vpt_deep_x3=('vpt_deep', 3))
ROWS = tuple(PROTOCOLS) + tuple(ENSEMBLES)
PROTOCOL_NAMES = dict(full='Full fine-tuning', head_only='Head-only',
                      bias='Bias', vpt_shallow='VPT-shallow',
                      vpt_deep='VPT-deep', vpt_bias='VPT + Bias',
                      vpt_deep_x3='VPT-deep, 3-seed ensemble',
                      adapter='Adapter (r=8)', partial_1='Partial-1',
                      vpt_deep_shared='VPT-deep, shared prompts',
                      vpt_deep_add='VPT-deep, Add',
                      vpt_shallow_pixel='VPT-shallow, Prepend-pixel',
                      vpt_shallow_concat='VPT-shallow, Concat-channel',
                      vpt_deep_token_init='VPT-deep, token-init prompts',
                      vpt_deep_bf16='VPT-deep, bf16 frozen weights')

