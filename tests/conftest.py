"""Shared fixtures for the VPT backbone tests.

Everything here is tiny (embed 16-64 dims, 2-6 layers, 32-64 px inputs) so
that each test runs in well under two seconds on a CPU.
"""
from pathlib import Path
from typing import Callable

import pytest
import torch

import mmseg_vpt  # noqa: F401  (registers the VPT backbones)

# The warning filter, one intra-op thread and the per-test seed are in the
# repository's conftest.py, shared with projects/.


@pytest.fixture
def count_checkpoints(monkeypatch) -> Callable[[], int]:
    """Count calls of ``torch.utils.checkpoint.checkpoint`` (which both
    mmseg and mmseg_vpt call through the module), to prove that activation
    checkpointing actually ran."""
    import torch.utils.checkpoint as cp
    calls = []
    real = cp.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cp, 'checkpoint', counting)
    return lambda: len(calls)


@pytest.fixture(scope='session')
def tiny_base_weights(tmp_path_factory) -> Path:
    """A 'pretrained' tiny ViT file, so runs go through the Pretrained init
    and the tuned-only checkpoints as with real weights."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    backbone = MODELS.build(dict(
        type='VisionTransformer', img_size=(32, 32), patch_size=8,
        embed_dims=48, num_layers=2, num_heads=3, patch_bias=True,
        final_norm=True, norm_cfg=dict(type='LN', eps=1e-6)))
    backbone.init_weights()
    path = tmp_path_factory.mktemp('weights') / 'tiny_vit.pth'
    torch.save(backbone.state_dict(), path)
    return path
