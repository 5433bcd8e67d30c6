"""A training run's work dir: one run at a time.

:class:`WorkDirLock` / :class:`WorkDirLockHook`: a second training run in a
work dir in use stops with a message naming the first. Atomic files and
``last_checkpoint`` resolution are in :mod:`mmseg_vpt.utils.files`.
"""
import json
import os
import os.path as osp
import socket
import sys
import time
from typing import Optional

from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = 'train.lock'


class WorkDirInUseError(RuntimeError):
    """Another training run holds the work dir."""


def _describe(record: dict) -> str:
    if not record:
        return 'its details are not written yet'
    return (f"pid {record.get('pid')} on {record.get('host')}, started "
            f"{record.get('started')}, command: {record.get('command')}")


class WorkDirLock:
    """An exclusive lock on a work dir, held by one training run.

    ``flock`` on ``WORK_DIR/train.lock``: the kernel drops it when its
    process ends, however it ends (SIGKILL included), so a dead run never
    blocks the next one. The file records who holds it (pid, host, start
    time, command) for the message a second run gets, and is emptied on a
    clean release; a record left behind means its run died, and the next
    run takes the lock over with a warning.
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.path = osp.join(work_dir, LOCK_FILE)
        self._file = None

    @staticmethod
    def _record() -> dict:
        return dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
            command=' '.join([sys.executable] + sys.argv))

    @staticmethod
    def _read(f) -> dict:
        f.seek(0)
        text = f.read().strip()
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return dict(command=text)

    def acquire(self) -> dict:
        """Take the lock; returns the record a dead holder left ({} if
        none). Raises :class:`WorkDirInUseError` if a live run holds it."""
        if fcntl is None:
            print_log(
                f'Cannot lock {self.work_dir} on this platform: a second run '
                'in it would not be detected.', logger='current',
                level='WARNING')
            return {}
        os.makedirs(self.work_dir, exist_ok=True)
        f = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644),
                      'r+')
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(f)
            f.close()
            raise WorkDirInUseError(
                f'Work dir {self.work_dir} is in use by another training '
                f'run ({_describe(holder)}). Wait for it to finish or stop '
                'it, or train in another --work-dir. (The lock is '
                f'{self.path}; the kernel releases it when that run ends.)')
        except OSError as err:  # a file system without flock
            f.close()
            print_log(
                f'Cannot lock {self.path} ({err}): a second run in this work '
                'dir would not be detected.', logger='current',
                level='WARNING')
            return {}
        previous = self._read(f)
        f.seek(0)
        f.truncate()
        f.write(json.dumps(self._record()) + '\n')
        f.flush()
        self._file = f
        return previous

    def release(self) -> None:
        if self._file is None:
            return
        self._file.seek(0)
        self._file.truncate()
        self._file.close()  # closing drops the flock
        self._file = None


@HOOKS.register_module()
class WorkDirLockHook(Hook):
    """Refuse to train in a work dir another live training run is using.

    Two runs in one work dir overwrite each other's checkpoints and
    ``last_checkpoint``. The main process takes a :class:`WorkDirLock` before
    training (before any checkpoint is written or removed) and releases it
    after; every rank stops if it is taken. Evaluation (``tools/test.py``)
    does not lock, so a checkpoint can be tested while training goes on.
    """

    priority = 'HIGHEST'

    def __init__(self) -> None:
        self._lock: Optional[WorkDirLock] = None

    def before_train(self, runner) -> None:
        error = None
        if is_main_process():
            self._lock = WorkDirLock(runner.work_dir)
            try:
                previous = self._lock.acquire()
            except WorkDirInUseError as err:
                self._lock, error = None, str(err)
            else:
                if previous:
                    runner.logger.warning(
                        f'Taking over {self._lock.path}: the run that held '
                        f'it ({_describe(previous)}) ended without releasing '
                        'it (killed or crashed).')
        # every rank stops, not only the one that found the lock taken
        error = _broadcast(error)
        if error is not None:
            raise WorkDirInUseError(error)

    def after_train(self, runner) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _broadcast(obj):
    box = [obj]
    broadcast_object_list(box)
    return box[0]
