"""Runner extensions: parameter-count logging, tuned-only checkpoints,
CPU-capable AMP, data checks, exact and atomic resume with a work-dir lock,
a watchdog for stalled ranks, prompts initialised from patch tokens, a
one-line log of frozen parameters and a clear error for BatchNorm at one
value per channel."""
from .batchnorm_check import BatchNormInputCheckHook
from .checkpoint_hook import TunedCheckpointHook
from .data_checks import SegDataCheckHook
from .hooks import TrainableParamsHook, count_parameters
from .optim_constructor import FrozenSummaryOptimWrapperConstructor
from .optim_wrapper import BFloat16OptimWrapper
from .prompt_init_hook import PromptTokenInitHook
from .rank_watchdog import RankWatchdogHook
from .resume import ResumableCheckpointHook
from .work_dir import WorkDirLockHook

__all__ = [
    'TrainableParamsHook', 'TunedCheckpointHook', 'count_parameters',
    'BFloat16OptimWrapper', 'BatchNormInputCheckHook',
    'FrozenSummaryOptimWrapperConstructor', 'PromptTokenInitHook',
    'RankWatchdogHook',
    'ResumableCheckpointHook', 'SegDataCheckHook', 'WorkDirLockHook'
]
