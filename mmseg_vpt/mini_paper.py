"""A miniature version of the VPT paper's segmentation table, on a CPU.

The paper compares ways of adapting one pretrained backbone to a new
segmentation task: full fine-tuning, training the head only, tuning biases,
VPT-shallow, VPT-deep and VPT + Bias. This module reruns that comparison in
miniature, in minutes, on **synthetic data** (generated here; no download,
no real images). Scenes are 2-4 shapes (disc, square, triangle) on a shaded
grey background; each shape has one of 6 colours and one of 3 surface
textures (flat, stripes, checks), all drawn at random.

1. *Pretraining*: a small ViT (this project's ``VPTVisionTransformer`` with
   prompts off; 6 layers of width 64, 8x8 patches, 64x64 images) learns to
   segment the scenes **by colour**. Texture is a nuisance there, so the
   backbone has no reason to keep it.
2. *Downstream*: the same kind of scenes, segmented **by texture** (flat /
   stripes / checks / background), whatever the colour. Telling stripes from
   checks needs a nonlinear function of a patch's pixels, which the colour
   backbone's last-layer features do not offer to a linear head.
3. Every protocol adapts the same pretrained backbone with the same linear
   head (a 1x1 convolution on the last layer's patch tokens, upsampled),
   the same steps, batches and evaluation (mIoU over the 4 classes on
   held-out scenes). The protocols are the backbone's own settings
   (``prompt_length``, ``prompt_layers``, ``frozen_exclude``), exactly as in
   ``configs/vpt/``; learning rates are fixed per parameter group
   (:attr:`MiniPaperConfig.lrs`), chosen once on seeds 0-1 of the quick run.

``tools/mini_paper.py`` prints the table and plots mIoU against tunable
parameters. What it shows is the *shape* of the paper's result on toy data
(prompts recover part of full fine-tuning's gain over head-only at a small
fraction of its tunable parameters), not the paper's numbers. An earlier
design, downstream segmentation *by shape*, was dropped: within this budget
every protocol stayed near 0.35-0.39 mIoU, full fine-tuning included, so it
could not separate them.
"""
import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .engine.hooks import count_parameters

SYNTHETIC_NOTE = (
    'All data here is synthetic (generated scenes of coloured shapes); the '
    'numbers show the relative behaviour of the tuning protocols on a toy '
    'transfer task, not results on real images or the paper\'s numbers.')

SHAPES = ('disc', 'square', 'triangle', 'cross')


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def palette(num_colors: int) -> np.ndarray:
    """Saturated, well separated RGB colours (num_colors, 3), float."""
    hues = (np.arange(num_colors) + 0.5) / num_colors
    out = []
    for h in hues:
        hsv = np.uint8([[[int(h * 180) % 180, 230, 240]]])
        out.append(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
    return np.asarray(out, np.float32)


def _draw_shape(mask: np.ndarray, kind: str, cx: float, cy: float, r: float,
                angle: float) -> None:
    if kind == 'disc':
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 1,
                   -1)
        return
    if kind == 'square':
        pts = [(math.cos(angle + k * math.pi / 2) * r * 1.25,
                math.sin(angle + k * math.pi / 2) * r * 1.25)
               for k in range(4)]
    elif kind == 'triangle':
        pts = [(math.cos(angle + k * 2 * math.pi / 3) * r * 1.35,
                math.sin(angle + k * 2 * math.pi / 3) * r * 1.35)
               for k in range(3)]
    elif kind == 'cross':
        w = 0.42 * r
        arms = [(-r, -w), (r, -w), (r, w), (-r, w)]
        for rot in (0.0, math.pi / 2):
            a = angle + rot
            pts = [(x * math.cos(a) - y * math.sin(a),
                    x * math.sin(a) + y * math.cos(a)) for x, y in arms]
            poly = np.round(np.array(pts) + [cx, cy]).astype(np.int32)
            cv2.fillPoly(mask, [poly], 1)
        return
    else:
        raise ValueError(f'unknown shape {kind!r}')
    poly = np.round(np.array(pts) + [cx, cy]).astype(np.int32)
    cv2.fillPoly(mask, [poly], 1)


TEXTURES = ('flat', 'stripes', 'checks')


def _texture(kind: str, s: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness modulation in [-1, 1] of an object's surface (s, s)."""
    if kind == 'flat':
        return np.zeros((s, s), np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    a = rng.uniform(0, np.pi)
    period = rng.uniform(4.0, 6.0)
    u = xx * np.cos(a) + yy * np.sin(a)
    wave = np.sign(np.sin(2 * np.pi * u / period + rng.uniform(0, 7)))
    if kind == 'stripes':
        return wave.astype(np.float32)
    v = -xx * np.sin(a) + yy * np.cos(a)
    return (wave * np.sign(np.sin(2 * np.pi * v / period +
                                  rng.uniform(0, 7)))).astype(np.float32)


def render_scene(rng: np.random.Generator, img_size: int, colors: np.ndarray,
                 shapes: Sequence[str], num_objects: Tuple[int, int],
                 radius: Tuple[float, float],
                 textures: Sequence[str] = TEXTURES,
                 contrast: float = 0.35
                 ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """One scene: a noisy grey background with coloured, textured shapes.

    Returns the RGB image (H, W, 3) uint8 and label maps (H, W) uint8,
    0 = background, by ``color`` (1..len(colors)), ``shape``
    (1..len(shapes)) and ``texture`` (1..len(textures)). Later objects
    cover earlier ones.
    """
    s = img_size
    grey = rng.uniform(60, 150)
    img = np.full((s, s, 3), grey, np.float32)
    # low-frequency shading so that the background is not one flat value
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    img += (rng.uniform(-25, 25) * (xx - 0.5) +
            rng.uniform(-25, 25) * (yy - 0.5))[..., None]
    labels = {k: np.zeros((s, s), np.uint8)
              for k in ('color', 'shape', 'texture')}
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        shape = int(rng.integers(len(shapes)))
        color = int(rng.integers(len(colors)))
        texture = int(rng.integers(len(textures)))
        r = rng.uniform(*radius) * s / 64
        cx, cy = rng.uniform(r, s - r), rng.uniform(r, s - r)
        mask = np.zeros((s, s), np.uint8)
        _draw_shape(mask, shapes[shape], cx, cy, r,
                    rng.uniform(0, 2 * math.pi))
        mask = mask.astype(bool)
        shade = 1.0 + contrast * _texture(textures[texture], s, rng)
        surface = colors[color] * rng.uniform(0.8, 1.05) * shade[..., None]
        img[mask] = surface[mask]
        labels['color'][mask] = color + 1
        labels['shape'][mask] = shape + 1
        labels['texture'][mask] = texture + 1
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), labels


@dataclass
class SceneSet:
    """Generated images (N, H, W, 3) uint8 RGB and per-task labels."""
    images: np.ndarray
    labels: Dict[str, np.ndarray]
    num_classes: Dict[str, int]


def make_scenes(num: int, seed: int, img_size: int = 64,
                num_colors: int = 6,
                shapes: Sequence[str] = SHAPES[:3],
                num_objects: Tuple[int, int] = (2, 4),
                radius: Tuple[float, float] = (9.0, 15.0),
                textures: Sequence[str] = TEXTURES,
                contrast: float = 0.35) -> SceneSet:
    """``num`` scenes; everything is a function of the arguments."""
    colors = palette(num_colors)
    images = np.empty((num, img_size, img_size, 3), np.uint8)
    labels = {k: np.empty((num, img_size, img_size), np.uint8)
              for k in ('color', 'shape', 'texture')}
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        images[i], lab = render_scene(rng, img_size, colors, shapes,
                                      num_objects, radius, textures,
                                      contrast)
        for k, v in lab.items():
            labels[k][i] = v
    return SceneSet(images, labels,
                    dict(color=num_colors + 1, shape=len(shapes) + 1,
                         texture=len(textures) + 1))


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------
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


def scenes(cfg: 'MiniPaperConfig', num: int, seed: int) -> SceneSet:
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
                      vpt_deep_token_init='VPT-deep, token-init prompts')


class MiniSegmentor(nn.Module):
    """``VPTVisionTransformer`` plus a linear (1x1 conv) head on the last
    layer's patch tokens, upsampled bilinearly to the image."""

    def __init__(self, cfg: MiniPaperConfig, num_classes: int,
                 prompt_length: int = 0, prompt_layers='deep',
                 frozen_exclude: Sequence[str] = ('all', ),
                 **backbone_args) -> None:
        super().__init__()
        from .models import VPTVisionTransformer
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


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 64.0


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * t))


def param_groups(model: nn.Module, lrs: Dict[str, float]) -> List[dict]:
    """AdamW groups of the trainable parameters: ``head``, ``prompt``,
    ``adapter``, ``partial`` (the layers Partial-k trains), ``bias`` (a
    backbone that trains only some other parameters) and
    ``backbone`` (a backbone that trains everything; then the head trains
    at the same rate, which worked better for full fine-tuning than the
    frozen-backbone head rate)."""
    backbone = [p for p in model.backbone.parameters() if p.numel()]
    train_all = all(p.requires_grad for p in backbone)
    groups: Dict[str, List[nn.Parameter]] = OrderedDict()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith('head.'):
            key = 'backbone' if train_all else 'head'
        elif 'prompt' in name:
            key = 'prompt'
        elif '.adapter.' in name:
            key = 'adapter'
        elif name[len('backbone.'):].startswith(
                model.backbone.partial_prefixes):
            key = 'partial'
        else:
            key = 'backbone' if train_all else 'bias'
        groups.setdefault(key, []).append(p)
    return [dict(params=ps, lr=lrs[k], name=k) for k, ps in groups.items()]


def train_steps(model: nn.Module, data: SceneSet, task: str, steps: int,
                batch_size: int, lrs: Dict[str, float], weight_decay: float,
                seed: int) -> float:
    """AdamW with warmup + cosine decay on random batches; returns the mean
    loss over the last 10% of steps."""
    opt = torch.optim.AdamW(param_groups(model, lrs),
                            weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _cosine(s, steps, max(1, steps // 20)))
    gen = np.random.default_rng(seed)
    labels = data.labels[task]
    model.train()
    losses = []
    for _ in range(steps):
        idx = gen.integers(0, len(data.images), batch_size)
        x = to_tensor(data.images[idx])
        y = torch.from_numpy(labels[idx]).long()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    tail = losses[-max(1, steps // 10):]
    return float(np.mean(tail))


@torch.no_grad()
def evaluate(model: nn.Module, data: SceneSet, task: str,
             batch_size: int = 50) -> Tuple[float, List[float]]:
    """mIoU (over every class, background included) and per-class IoU."""
    model.eval()
    n = data.num_classes[task]
    inter = np.zeros(n)
    union = np.zeros(n)
    labels = data.labels[task]
    for i in range(0, len(data.images), batch_size):
        pred = model(to_tensor(data.images[i:i + batch_size])).argmax(1)
        pred = pred.numpy()
        gt = labels[i:i + batch_size]
        for c in range(n):
            p, g = pred == c, gt == c
            inter[c] += np.logical_and(p, g).sum()
            union[c] += np.logical_or(p, g).sum()
    iou = inter / np.maximum(union, 1)
    return float(iou.mean()), iou.tolist()


# --------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------
def pretrain(cfg: MiniPaperConfig, seed: int,
             log: Callable[[str], None] = print) -> dict:
    """Pretrain the backbone on the pretraining task; returns its state dict
    and the pretraining task's validation mIoU."""
    torch.manual_seed(seed)
    data = scenes(cfg, cfg.num_pretrain_images, seed=1000 * seed + 1)
    val = scenes(cfg, cfg.num_val_images, seed=1000 * seed + 2)
    model = MiniSegmentor(cfg, data.num_classes[cfg.pretrain_task])
    model.backbone.init_weights()
    t0 = time.perf_counter()
    lr = cfg.pretrain_lr
    loss = train_steps(model, data, cfg.pretrain_task, cfg.pretrain_steps,
                       cfg.batch_size, dict(head=lr, backbone=lr), 0.05,
                       seed)
    miou, _ = evaluate(model, val, cfg.pretrain_task)
    seconds = time.perf_counter() - t0
    log(f'[seed {seed}] pretraining by {cfg.pretrain_task}: '
        f'{cfg.pretrain_steps} steps in {seconds:.0f}s, loss {loss:.3f}, '
        f'val mIoU {miou:.3f}')
    state = {k: v.detach().clone()
             for k, v in model.backbone.state_dict().items()}
    return dict(state=state, miou=miou, seconds=seconds)


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
    missing, unexpected = model.backbone.load_state_dict(base_state,
                                                         strict=False)
    if unexpected or any('prompt' not in k and '.adapter.' not in k
                         for k in missing):
        raise RuntimeError(f'base weights do not fit: missing {missing}, '
                           f'unexpected {unexpected}')
    torch.manual_seed(seed + 7)
    model.head.reset_parameters()
    return model


def adapt(cfg: MiniPaperConfig, protocol: str, base_state: dict,
          train: SceneSet, val: SceneSet, seed: int,
          models: Optional[list] = None) -> dict:
    """Adapt the pretrained backbone to the downstream task under
    ``protocol`` and evaluate it (the model is appended to ``models``)."""
    task = cfg.downstream_task
    model = build_protocol_model(cfg, protocol, base_state,
                                 train.num_classes[task], seed)
    counts = count_parameters(model)
    t0 = time.perf_counter()
    token_init = PROTOCOLS[protocol].get('token_init')
    if token_init:  # from the first training batch's tokens
        model.backbone.init_prompts_from_tokens(
            to_tensor(train.images[:cfg.batch_size]), token_init, seed)
    loss = train_steps(model, train, task, cfg.adapt_steps, cfg.batch_size,
                       cfg.lrs, cfg.weight_decay, seed + 11)
    seconds = time.perf_counter() - t0
    miou, per_class = evaluate(model, val, task)
    if models is not None:
        models.append(model)
    return dict(protocol=protocol, seed=seed, miou=miou, iou=per_class,
                loss=loss, tunable=counts['trainable'], total=counts['total'],
                seconds=seconds)


def adapt_ensemble(cfg: MiniPaperConfig, name: str, base_state: dict,
                   train: SceneSet, val: SceneSet, seed: int,
                   first: Optional[MiniSegmentor] = None) -> dict:
    """An ensemble row: its protocol trained with K seeds (``first``, the
    protocol's own row of this seed, is reused as member 0), evaluated as
    one :class:`PromptEnsemble`."""
    protocol, k = ENSEMBLES[name]
    members = [] if first is None else [first]
    rows = []
    while len(members) < k:
        member_seed = seed + 1000 * len(members)
        rows.append(adapt(cfg, protocol, base_state, train, val,
                          member_seed, members))
    miou, per_class = evaluate(PromptEnsemble(members), val,
                               cfg.downstream_task)
    tunable = sum(count_parameters(m)['trainable'] for m in members)
    return dict(protocol=name, seed=seed, miou=miou, iou=per_class,
                members=k, member_mious=[r['miou'] for r in rows],
                tunable=tunable, total=count_parameters(members[0])['total']
                + tunable - count_parameters(members[0])['trainable'],
                seconds=sum(r['seconds'] for r in rows))


def run_seed(cfg: MiniPaperConfig, seed: int,
             protocols: Sequence[str] = ROWS,
             log: Callable[[str], None] = print) -> dict:
    """Pretrain once, then adapt with every protocol (ensemble rows last)."""
    base = pretrain(cfg, seed, log)
    train = scenes(cfg, cfg.num_train_images, seed=1000 * seed + 3)
    val = scenes(cfg, cfg.num_val_images, seed=1000 * seed + 4)
    rows, models = [], {}
    order = [p for p in protocols if p in PROTOCOLS] + \
        [p for p in protocols if p in ENSEMBLES]
    for protocol in order:
        if protocol in ENSEMBLES:
            row = adapt_ensemble(cfg, protocol, base['state'], train, val,
                                 seed, models.get(ENSEMBLES[protocol][0]))
        else:
            kept = []
            row = adapt(cfg, protocol, base['state'], train, val, seed,
                        kept)
            models[protocol] = kept[0]
        log(f'[seed {seed}] {PROTOCOL_NAMES[protocol]:<16} mIoU '
            f'{row["miou"]:.3f}  tunable {row["tunable"]:,}  '
            f'({row["seconds"]:.0f}s)')
        rows.append(row)
    return dict(seed=seed, pretrain_miou=base['miou'],
                pretrain_seconds=base['seconds'], rows=rows)


def run_mini_paper(cfg: MiniPaperConfig, seeds: Sequence[int],
                   protocols: Sequence[str] = ROWS,
                   log: Callable[[str], None] = print) -> dict:
    t0 = time.perf_counter()
    runs = [run_seed(cfg, s, protocols, log) for s in seeds]
    return dict(config=asdict(cfg), seeds=list(seeds), runs=runs,
                seconds=time.perf_counter() - t0, note=SYNTHETIC_NOTE)


def summarize(result: dict) -> List[dict]:
    """One row per protocol: mean/min/max mIoU over seeds, tunable params."""
    by_protocol: Dict[str, List[dict]] = OrderedDict()
    for run in result['runs']:
        for row in run['rows']:
            by_protocol.setdefault(row['protocol'], []).append(row)
    out = []
    full_tunable = None
    for protocol, rows in by_protocol.items():
        mious = np.array([r['miou'] for r in rows])
        if protocol == 'full':
            full_tunable = rows[0]['tunable']
        out.append(dict(protocol=protocol, name=PROTOCOL_NAMES[protocol],
                        miou_mean=float(mious.mean()),
                        miou_std=float(mious.std()),
                        miou_min=float(mious.min()),
                        miou_max=float(mious.max()),
                        mious=mious.tolist(),
                        tunable=rows[0]['tunable'], total=rows[0]['total'],
                        seconds=float(np.mean([r['seconds'] for r in rows]))))
    head = next((r['mious'] for r in out if r['protocol'] == 'head_only'),
                None)
    for row in out:
        row['tunable_pct'] = (100.0 * row['tunable'] / full_tunable
                              if full_tunable else float('nan'))
        # paired by seed: the same pretrained backbone, data and head init
        row['gain_vs_head_only'] = None if head is None else [
            m - h for m, h in zip(row['mious'], head)]
    return out


def format_table(result: dict) -> str:
    rows = summarize(result)
    seeds = result['seeds']
    lines = [
        f'Mini-paper: {result["config"]["pretrain_task"]}-pretrained ViT '
        f'adapted to segmentation by {result["config"]["downstream_task"]} '
        f'(seeds {", ".join(map(str, seeds))})',
        f'NOTE: {SYNTHETIC_NOTE}', '',
        '| protocol | mIoU (mean +- std) | per seed | vs Head-only, per '
        'seed: min / mean | tunable params | % of full |',
        '|---|---|---|---|---|---|'
    ]
    for r in rows:
        per_seed = ' / '.join(f'{m:.3f}' for m in r['mious'])
        gain = r['gain_vs_head_only']
        gain = '-' if not gain or r['protocol'] == 'head_only' else \
            f'{min(gain):+.3f} / {np.mean(gain):+.3f}'
        pct = r['tunable_pct']  # nan: no Full row in this run
        pct = '-' if np.isnan(pct) else f'{pct:.2f}%'
        lines.append(
            f'| {r["name"]} | {r["miou_mean"]:.3f} +- {r["miou_std"]:.3f} | '
            f'{per_seed} | {gain} | {r["tunable"]:,} | {pct} |')
    return '\n'.join(lines)


def plot_results(result: dict, path: str) -> None:
    """mIoU (mean over seeds, min-max bars) against tunable parameters,
    log x-axis."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = summarize(result)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    markers = dict(full='s', head_only='o', bias='^', vpt_shallow='v',
                   vpt_deep='*', vpt_bias='P', vpt_deep_x3='X',
                   adapter='D', partial_1='h', vpt_deep_shared='p',
                   vpt_deep_add='+', vpt_shallow_pixel='<',
                   vpt_shallow_concat='>')
    for r in rows:
        yerr = [[r['miou_mean'] - r['miou_min']],
                [r['miou_max'] - r['miou_mean']]]
        bars = ax.errorbar(r['tunable'], r['miou_mean'], yerr=yerr,
                           fmt=markers.get(r['protocol'], 'o'), ms=9,
                           capsize=4,
                           label=f'{r["name"]} ({r["miou_mean"]:.3f})')
        if len(r['mious']) > 1:  # each seed, small and to the right
            ax.scatter([r['tunable'] * 1.18] * len(r['mious']), r['mious'],
                       s=9, color=bars[0].get_color(), alpha=0.6)
    ax.set_xscale('log')
    ax.set_xlabel('tunable parameters (log scale)')
    ax.set_ylabel('downstream mIoU')
    cfg = result['config']
    ax.set_title(f'Mini-paper on SYNTHETIC data: {cfg["pretrain_task"]} -> '
                 f'{cfg["downstream_task"]}, {len(result["seeds"])} seed(s)',
                 fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    fig.text(0.01, 0.01, 'synthetic data; mean over seeds, bars: min-max, '
             'dots: seeds',
             fontsize=7, alpha=0.7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
