"""Runner extensions: parameter-count logging, tuned-only checkpoints,
CPU-capable AMP, data checks, exact and atomic resume with a work-dir lock,
a watchdog for stalled ranks, prompts initialised from patch tokens, a
one-line log of frozen parameters and a clear error for BatchNorm at one
value per channel; the FSDP wrapper that shards a frozen backbone, a DDP
wrapper for backbones whose weights load after wrapping, checkpointed heads;
the config edits behind the tools' flags."""
from .batchnorm_check import BatchNormInputCheckHook
from .checkpoint_hook import TunedCheckpointHook
from .data_checks import SegDataCheckHook
from .ddp import FrozenBackboneDDP
from .fsdp import VPTFullyShardedWrapper, enable_fsdp
from .hooks import TrainableParamsHook
from .memory_options import (ActivationCheckpointingHook,
                             turn_on_activation_checkpointing)
from .optim_constructor import FrozenSummaryOptimWrapperConstructor
from .optim_wrapper import BFloat16OptimWrapper
from .prompt_init_hook import PromptTokenInitHook
from .rank_watchdog import RankWatchdogHook
from .resume import ResumableCheckpointHook
from .runner_config import (build_runner, configure_exact_resume,
                            configure_tuned_checkpoints, enable_amp,
                            enable_tta, enable_visualization, load_config,
                            set_resume, set_test_output)
from .work_dir import WorkDirLockHook

__all__ = [
    'TrainableParamsHook', 'TunedCheckpointHook',
    'BFloat16OptimWrapper', 'BatchNormInputCheckHook',
    'FrozenSummaryOptimWrapperConstructor', 'PromptTokenInitHook',
    'RankWatchdogHook',
    'ResumableCheckpointHook', 'SegDataCheckHook', 'WorkDirLockHook',
    'build_runner', 'configure_exact_resume', 'configure_tuned_checkpoints',
    'enable_amp', 'enable_tta', 'enable_visualization', 'load_config',
    'set_resume', 'set_test_output', 'VPTFullyShardedWrapper', 'enable_fsdp',
    'FrozenBackboneDDP', 'ActivationCheckpointingHook',
    'turn_on_activation_checkpointing'
]
