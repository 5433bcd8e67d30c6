"""Helpers shared by the VPT backbone tests (tiny models, mmseg
segmentors built from the registry, a synthetic labelled batch)."""
import copy
from typing import Dict, List, Sequence

import torch
import torch.nn as nn


def randomize_(module: nn.Module, std: float = 0.1) -> nn.Module:
    """Perturb every parameter so that no weight is at its (often zero or
    one) default: comparisons then exercise every term."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if 'relative_position_bias_table' in name:
                p.normal_(0, 1.0)
            else:
                p.add_(torch.randn_like(p) * std)
    return module


def assert_outputs_equal(a, b) -> None:
    """Bit-identical nested outputs (tuples/lists of tensors)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert a.shape == b.shape
        assert torch.equal(a, b), (a - b).abs().max()
        return
    assert isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert_outputs_equal(x, y)


def snapshot(module: nn.Module) -> Dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer (non-persistent
    buffers, such as a rotary embedding's, included)."""
    tensors = dict(module.named_buffers())
    tensors.update(module.state_dict())
    return {k: v.detach().clone() for k, v in tensors.items()}


def make_batch(batch_size: int = 4, size: Sequence[int] = (32, 32),
               cell: int = 8, num_classes: int = 3,
               seed: int = 0) -> dict:
    """A segmentation batch whose labels depend on the image: the image is
    made of ``cell`` x ``cell`` squares, each of one class, and a class is a
    colour (plus noise). Returns mmseg's data dict (uint8 images and
    SegDataSamples) for ``data_preprocessor``/``train_step``."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(seed)
    H, W = size
    colours = torch.tensor([[200., 40., 40.], [40., 200., 40.],
                            [40., 40., 200.], [200., 200., 40.]])
    inputs, samples = [], []
    for _ in range(batch_size):
        cells = torch.randint(0, num_classes, (H // cell, W // cell),
                              generator=g)
        label = cells.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        img = colours[label].permute(2, 0, 1)
        img = img + 25 * torch.randn(img.shape, generator=g)
        inputs.append(img.clamp(0, 255).to(torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(H, W),
                                             ori_shape=(H, W),
                                             pad_shape=(H, W)))
        sample.gt_sem_seg = PixelData(data=label[None].long())
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def build_segmentor(backbone: dict, decode_head: dict, size=(32, 32)):
    """An EncoderDecoder from mmseg's registry with mmseg's
    SegDataPreProcessor."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=False,
            size=tuple(size),
            pad_val=0,
            seg_pad_val=255),
        backbone=backbone,
        decode_head=decode_head,
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    model = MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    return model


def make_optim_wrapper(params, lr: float = 1e-2, weight_decay: float = 0.05):
    """mmengine's OptimWrapper around AdamW over *all* given parameters,
    frozen ones included (as a default config would do)."""
    from mmengine.optim import OptimWrapper
    return OptimWrapper(
        torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay))


def train_steps(model, optim_wrapper, data: dict, steps: int) -> List[float]:
    """Run ``steps`` ``model.train_step`` calls on a fixed batch; returns the
    loss before each step."""
    model.train()
    losses = []
    for _ in range(steps):
        log_vars = model.train_step(data, optim_wrapper)
        losses.append(float(log_vars['loss'].detach()))
    return losses


@torch.no_grad()
def eval_loss(model, data: dict) -> float:
    """The segmentor's loss on ``data`` with the model in train mode (as
    train_step sees it) but without a parameter update."""
    model.train()
    d = model.data_preprocessor(data, True)
    losses = model(**d, mode='loss')
    loss, _ = model.parse_losses(losses)
    return float(loss)




def trainable(module: nn.Module) -> set:
    """Names of the parameters that require grad."""
    return {n for n, p in module.named_parameters() if p.requires_grad}


class Taps:
    """Record the input and output of each module in ``modules`` during a
    forward pass (``with Taps(layers) as taps: model(x)``)."""

    def __init__(self, modules):
        self.modules = list(modules)
        self.inputs: List[torch.Tensor] = [None] * len(self.modules)
        self.outputs: List[torch.Tensor] = [None] * len(self.modules)
        self._handles = []

    def __enter__(self):
        for i, m in enumerate(self.modules):
            self._handles.append(m.register_forward_pre_hook(
                lambda mod, args, i=i: self.inputs.__setitem__(
                    i, args[0].detach().clone())))
            self._handles.append(m.register_forward_hook(
                lambda mod, args, out, i=i: self.outputs.__setitem__(
                    i, out.detach().clone())))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


def fcn_head(in_channels: int, num_classes: int = 3) -> dict:
    """A small FCNHead with BN reading the last backbone output."""
    return dict(
        type='FCNHead', in_channels=in_channels, in_index=-1, channels=16,
        num_convs=1, concat_input=False, dropout_ratio=0.0,
        num_classes=num_classes, norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                         avg_non_ignore=True,
                         loss_weight=1.0))


def uper_head(in_channels: Sequence[int], num_classes: int = 3) -> dict:
    """A small UPerHead with BN over all backbone outputs."""
    return dict(
        type='UPerHead', in_channels=list(in_channels),
        in_index=list(range(len(in_channels))), pool_scales=(1, 2),
        channels=16, dropout_ratio=0.0, num_classes=num_classes,
        norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                         avg_non_ignore=True,
                         loss_weight=1.0))


def check_frozen_training(seg, steps: int = 3, lr: float = 1e-2) -> None:
    """Run AdamW steps over *all* of ``seg``'s parameters and check that the
    frozen backbone parameters and every backbone buffer are bit-identical,
    that every trainable parameter (prompts, head) changed, and that the
    optimizer holds state for trainable parameters only."""
    before = snapshot(seg)
    optim_wrapper = make_optim_wrapper(seg.parameters(), lr=lr)
    losses = train_steps(seg, optim_wrapper, make_batch(4), steps)
    assert all(torch.isfinite(torch.tensor(losses)))

    params = dict(seg.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    tuned = [n for n, p in params.items() if p.requires_grad]
    assert frozen and tuned
    for name in frozen:
        assert torch.equal(params[name], before[name]), name
        assert params[name].grad is None, name
    for name in tuned:
        assert not torch.equal(params[name], before[name]), name
    buffers = dict(seg.backbone.named_buffers())
    for name, buf in buffers.items():
        assert torch.equal(buf, before['backbone.' + name]), name

    state = seg_optimizer_state_ids(optim_wrapper)
    assert state == {id(params[n]) for n in tuned}


def seg_optimizer_state_ids(optim_wrapper) -> set:
    """ids of the parameters the optimizer keeps state for."""
    return {id(p) for p, s in optim_wrapper.optimizer.state.items() if s}


def prompt_only_loss_ratio(seg, steps: int = 30, lr: float = 0.05,
                           seed: int = 0) -> float:
    """Freeze the decode head too, train only the prompts with AdamW on a
    fixed batch, and return final loss / initial loss."""
    for p in seg.decode_head.parameters():
        p.requires_grad_(False)
    assert trainable(seg) == {
        n for n, _ in seg.named_parameters() if 'prompt' in n}
    data = make_batch(4, size=seg.data_preprocessor.size, seed=seed)
    start = eval_loss(seg, data)
    optim_wrapper = make_optim_wrapper(
        [p for p in seg.parameters() if p.requires_grad], lr=lr,
        weight_decay=0.0)
    train_steps(seg, optim_wrapper, data, steps)
    return eval_loss(seg, data) / start
