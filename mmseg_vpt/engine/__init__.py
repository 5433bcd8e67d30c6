"""Runner extensions: parameter-count logging, tuned-only checkpoints,
CPU-capable AMP, data checks and a watchdog for stalled ranks."""
from .checkpoint_hook import TunedCheckpointHook
from .data_checks import SegDataCheckHook
from .hooks import TrainableParamsHook, count_parameters
from .optim_wrapper import BFloat16OptimWrapper
from .rank_watchdog import RankWatchdogHook

__all__ = [
    'TrainableParamsHook', 'TunedCheckpointHook', 'count_parameters',
    'BFloat16OptimWrapper', 'RankWatchdogHook', 'SegDataCheckHook'
]
