"""Shared fixtures for the VPT backbone tests.

Everything here is tiny (embed 16-64 dims, 2-6 layers, 32-64 px inputs) so
that each test runs in well under two seconds on a CPU.
"""
import warnings

# mmcv (installed without its compiled ops) warns on import; silence it
# before anything below imports mmseg.
warnings.filterwarnings(
    'ignore', message='Fail to import ``MultiScaleDeformableAttention``')

from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import mmseg_vpt  # noqa: E402,F401  (registers the VPT backbones)

# One intra-op thread: these models are tiny, and on a shared 2-core machine
# a second OpenMP thread makes every op wait for a busy core (100x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state."""
    torch.manual_seed(0)


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
