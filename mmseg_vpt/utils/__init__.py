"""Helpers for the command-line tools: CPU distributed setup, checkpoint
checks and the config edits behind each CLI flag."""
from .checkpoints import (CheckpointFileError, check_checkpoint_file,
                          check_checkpoints_exist, iter_checkpoint_refs,
                          local_checkpoint_path)
from .cli import (build_runner, enable_amp, enable_tta, enable_visualization,
                  load_config, set_resume, set_test_output)
from .dist import convert_syncbn_to_bn, init_cpu_dist, prepare_distributed

__all__ = [
    'CheckpointFileError', 'check_checkpoint_file', 'check_checkpoints_exist',
    'iter_checkpoint_refs', 'local_checkpoint_path', 'build_runner',
    'enable_amp', 'enable_tta', 'enable_visualization', 'load_config',
    'set_resume', 'set_test_output', 'convert_syncbn_to_bn', 'init_cpu_dist',
    'prepare_distributed'
]
