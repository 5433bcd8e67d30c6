"""Runner extensions: parameter-count logging, tuned-only checkpoints,
CPU-capable AMP, a one-line log of frozen parameters and a clear error for
BatchNorm at one value per channel."""
from .batchnorm_check import BatchNormInputCheckHook
from .checkpoint_hook import TunedCheckpointHook
from .hooks import TrainableParamsHook, count_parameters
from .optim_constructor import FrozenSummaryOptimWrapperConstructor
from .optim_wrapper import BFloat16OptimWrapper

__all__ = [
    'TrainableParamsHook', 'TunedCheckpointHook', 'count_parameters',
    'BFloat16OptimWrapper', 'FrozenSummaryOptimWrapperConstructor',
    'BatchNormInputCheckHook'
]
