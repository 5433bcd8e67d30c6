"""Runner extensions: parameter-count logging, tuned-only checkpoints,
CPU-capable AMP, and exact, atomic resume with a work-dir lock."""
from .checkpoint_hook import TunedCheckpointHook
from .hooks import TrainableParamsHook, count_parameters
from .optim_wrapper import BFloat16OptimWrapper
from .resume import ResumableCheckpointHook
from .work_dir import WorkDirLockHook

__all__ = [
    'TrainableParamsHook', 'TunedCheckpointHook', 'count_parameters',
    'BFloat16OptimWrapper', 'ResumableCheckpointHook', 'WorkDirLockHook'
]
