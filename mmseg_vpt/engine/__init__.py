"""Runner extensions: parameter-count logging and CPU-capable AMP."""
from .hooks import TrainableParamsHook, count_parameters
from .optim_wrapper import BFloat16OptimWrapper

__all__ = ['TrainableParamsHook', 'count_parameters', 'BFloat16OptimWrapper']
