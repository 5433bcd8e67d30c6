"""Mixed precision that also works without a GPU."""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.runner.amp import autocast
from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BFloat16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` that runs forward passes under bfloat16 autocast.

    mmengine's ``AmpOptimWrapper`` asserts a GPU, and CPU autocast supports
    only bfloat16. bfloat16 has float32's exponent range, so no loss scaler
    is needed and backward/step are the plain ``OptimWrapper`` ones. Works on
    any device that autocasts to bfloat16 (CPU, recent GPUs).
    """

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Add bfloat16 autocast to the gradient-accumulation context."""
        with super().optim_context(model), autocast(dtype=torch.bfloat16):
            yield
