"""Training and evaluation: AdamW with warmup and cosine decay, learning
rates by parameter group, mIoU."""
import math
from collections import OrderedDict
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import SceneSet, to_tensor


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

