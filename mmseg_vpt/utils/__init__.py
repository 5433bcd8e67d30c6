"""Leaf helpers that import nothing else of this package: checkpoint-file
checks, the one config loader, state-dict fit checks, parameter counts,
atomic files, CPU distributed setup and logging."""
from .checkpoints import (CheckpointFileError, check_checkpoint_file,
                          check_checkpoints_exist, iter_checkpoint_refs,
                          local_checkpoint_path, read_checkpoint)
from .config import read_config
from .dist import convert_syncbn_to_bn, init_cpu_dist, prepare_distributed
from .params import count_parameters, has_frozen_parameters, unwrap_model
from .state_fit import StateFit, fit_state

__all__ = [
    'CheckpointFileError', 'check_checkpoint_file', 'check_checkpoints_exist',
    'iter_checkpoint_refs', 'local_checkpoint_path', 'read_checkpoint',
    'read_config', 'convert_syncbn_to_bn', 'init_cpu_dist',
    'prepare_distributed', 'count_parameters', 'has_frozen_parameters',
    'unwrap_model', 'StateFit', 'fit_state'
]
