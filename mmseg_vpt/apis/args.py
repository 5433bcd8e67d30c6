"""The command-line flags the tools share, defined once so each means the
same in every tool (names and semantics follow mmseg 1.x's tools)."""
import argparse
import os
from typing import Optional

from mmengine.config import DictAction

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def add_cfg_options(parser: argparse.ArgumentParser,
                    help: str = 'override config settings, key=value (e.g. '
                    'model.backbone.prompt_length=10 or key="[a,b]")',
                    flag: str = '--cfg-options') -> None:
    """``--cfg-options key=value ...``, parsed by mmengine's
    ``DictAction``."""
    parser.add_argument(flag, nargs='+', action=DictAction,
                        metavar='KEY=VALUE', help=help)


def add_launcher(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and the ``--local_rank`` that ``torch.distributed``
    launchers pass (see :func:`apply_local_rank`)."""
    parser.add_argument('--launcher', default='none', choices=LAUNCHERS,
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def apply_local_rank(args: argparse.Namespace) -> None:
    """Export ``--local_rank`` as ``LOCAL_RANK`` unless the launcher set
    it."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))


def add_ignore_base_hash(parser: argparse.ArgumentParser,
                         what: str = 'load a tuned-only checkpoint') -> None:
    """``--ignore-base-hash``: accept a base weights file whose SHA-256
    differs from the one a task file was saved with (a warning instead of
    an error)."""
    parser.add_argument(
        '--ignore-base-hash', action='store_true',
        help=f'{what} even if the base weights file differs from the one it '
        'was saved with (only a warning)')


def add_load_partial(parser: argparse.ArgumentParser,
                     note: Optional[str] = None) -> None:
    """``--load-partial``: load the checkpoint tensors that fit and log
    what was loaded, skipped and left to the config's initialisation,
    instead of stopping on a mismatch."""
    parser.add_argument(
        '--load-partial', action='store_true',
        help='load only the checkpoint tensors that fit the model (others '
        'keep the config\'s initialisation) and log what was loaded, '
        'skipped and missing, instead of stopping on a mismatch' +
        (f'; {note}' if note else ''))


def add_device(parser: argparse.ArgumentParser,
               default: str = 'cpu') -> None:
    parser.add_argument('--device', default=default,
                        help=f"'cpu', 'cuda' or 'cuda:N' (default: {default})")
