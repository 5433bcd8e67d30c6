"""Runner extensions: parameter-count logging, tuned-only checkpoints and
CPU-capable AMP."""
from .checkpoint_hook import TunedCheckpointHook
from .hooks import TrainableParamsHook, count_parameters
from .optim_wrapper import BFloat16OptimWrapper

__all__ = [
    'TrainableParamsHook', 'TunedCheckpointHook', 'count_parameters',
    'BFloat16OptimWrapper'
]
