"""Name the rank that stopped answering in a distributed run, and end the job.

A collective that waits for a stopped (SIGSTOP) or dead rank blocks until
the process group's timeout, and its error names no rank. Here every
process runs a heartbeat thread: every ``interval`` seconds it writes a
counter, with its host, pid and progress, to the process group's key-value
store, and reads the other ranks' counters. A stopped or dead process's
threads stop too, while a live one keeps beating through long phases
(validation, saving a large checkpoint, a slow first iteration). When a
peer's counter has not moved for ``timeout`` seconds, the process logs
which rank went silent and exits, so that the launcher ends the job.
"""
import itertools
import json
import os
import socket
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

import torch.distributed as torch_dist
from mmengine.dist import barrier, get_rank, get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmseg.registry import HOOKS

#: Exit status of a process that gave up on a silent peer.
EXIT_CODE = 3
#: Overrides the hook's ``timeout`` (seconds; 0 turns the watchdog off).
TIMEOUT_ENV = 'MMSEG_VPT_RANK_TIMEOUT'

# Keys of each run (train, then test, in one process) get their own prefix,
# so a new run never reads an old run's heartbeats. Every rank starts the
# same runs in the same order, so the numbers agree across ranks.
_run_ids = itertools.count()


def exit_with_error(message: str) -> None:
    """Log ``message`` as an ERROR and end this process at once.

    ``os._exit``, because the main thread may be blocked inside a
    collective and would never see an exception raised here. Under torchrun
    the message is also written to the error file, so that the launcher's
    failure summary shows it.
    """
    logger = MMLogger.get_current_instance()
    logger.error(message)
    for handler in logger.handlers:
        handler.flush()
    if os.environ.get('TORCHELASTIC_ERROR_FILE'):
        from torch.distributed.elastic.multiprocessing.errors import \
            get_error_handler
        try:  # torchrun shows the traceback of the exception in flight
            raise RuntimeError(message)
        except RuntimeError as error:
            get_error_handler().record_exception(error)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)


class RankWatchdog:
    """Heartbeats of one rank, and the check that every peer still beats.

    Args:
        store: a key-value store shared by all ranks, used only by this
            object (give it a clone of the process group's store).
        rank (int): this process's rank.
        world_size (int): number of ranks.
        timeout (float): seconds of silence after which a peer is reported.
        interval (float): seconds between heartbeats and between checks.
        on_lost (callable): called with the report when a peer is silent;
            defaults to :func:`exit_with_error`.
    """

    def __init__(self,
                 store: torch_dist.Store,
                 rank: int,
                 world_size: int,
                 timeout: float,
                 interval: float,
                 on_lost: Callable[[str], None] = exit_with_error):
        self.store = store
        self.rank = rank
        self.timeout = timeout
        self.interval = interval
        self.on_lost = on_lost
        #: What this rank is doing, sent with each heartbeat.
        self.progress = 'starting'
        self._peers = [r for r in range(world_size) if r != rank]
        now = time.monotonic()
        self._seen: Dict[int, float] = {r: now for r in self._peers}
        self._last: Dict[int, dict] = {}
        self._store_answered = now
        self._main_failed = False
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._previous_excepthook = sys.excepthook

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=loop, name=f'rank-watchdog-{loop_name}',
                             daemon=True)
            for loop_name, loop in (('beat', self._beat_loop),
                                    ('check', self._check_loop))
        ]
        for thread in self._threads:
            thread.start()
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook

    def stop(self) -> None:
        self._stop.set()
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_excepthook
        for thread in self._threads:
            # a store call in flight ends within the store's own timeout;
            # the threads are daemons, so don't wait that long for them
            thread.join(timeout=2 * self.interval)

    def _beat_loop(self) -> None:
        store = self.store
        keys = [str(r) for r in self._peers]
        beat = dict(host=socket.gethostname(), pid=os.getpid())
        for count in itertools.count():
            try:
                store.set(
                    str(self.rank),
                    json.dumps(dict(beat, count=count,
                                    progress=self.progress)))
                if store.check(keys):
                    values = store.multi_get(keys)
                else:  # before every peer's first heartbeat
                    values = [
                        store.get(k) if store.check([k]) else None
                        for k in keys
                    ]
                self._store_answered = time.monotonic()
                for peer, value in zip(self._peers, values):
                    if value is not None:
                        self._record(peer, json.loads(value))
            except Exception:
                # A broken connection does not recover: open a new one. If
                # the store is gone, _find_silent reports it.
                try:
                    store = self.store.clone()
                except Exception:
                    pass
            if self._stop.wait(self.interval):
                return

    def _record(self, peer: int, beat: dict) -> None:
        if beat['count'] != self._last.get(peer, {}).get('count'):
            self._seen[peer] = time.monotonic()
            self._last[peer] = beat

    def _check_loop(self) -> None:
        previous = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            if now - previous > max(2 * self.interval, self._limit() / 2):
                # This process itself was not running (SIGSTOP, suspend), so
                # it cannot judge the others' silence: measure it from now.
                MMLogger.get_current_instance().warning(
                    f'Rank watchdog: this process (rank {self.rank}) did not '
                    f'run for {now - previous:.0f} s; restarting the clock '
                    'on the other ranks.')
                self._store_answered = now
                self._seen = {r: now for r in self._peers}
            previous = now
            report = self._find_silent(now)
            if report:
                self.on_lost(report)
                return

    def _limit(self) -> float:
        # A collective that failed on this rank (a peer closed its
        # connection) leaves little doubt; a few missed beats name the peer.
        if self._main_failed:
            return min(self.timeout, 3 * self.interval)
        return self.timeout

    def _describe(self, rank: int) -> str:
        beat = self._last.get(rank)
        if beat is None:
            return f'rank {rank}: no heartbeat received'
        return (f"rank {rank}: host {beat['host']}, pid {beat['pid']}, "
                f"last reported {beat['progress']}")

    def _find_silent(self, now: float) -> Optional[str]:
        """A report naming the ranks silent for longer than the limit."""
        limit = self._limit()
        exiting = (f'Exiting rank {self.rank} (host {socket.gethostname()}, '
                   f'pid {os.getpid()}) so that the launcher ends the job; '
                   'a silent rank is stopped (SIGSTOP), dead, or on a '
                   'machine that is down: see its own log.')
        if now - self._store_answered > limit:
            silence = now - self._store_answered
            host = ('' if self.rank == 0 else
                    f'; rank 0 stopped answering ({self._describe(0)})')
            return (f"Rank watchdog: the process group's key-value store "
                    f'(served by rank 0, or by torchrun on the first node) '
                    f'has not answered for {silence:.0f} s (limit {limit:g} '
                    f's){host}. {exiting}')
        silent = [r for r in self._peers if now - self._seen[r] > limit]
        if not silent:
            return None
        details = '; '.join(
            f'{self._describe(r)}, silent for {now - self._seen[r]:.0f} s'
            for r in silent)
        names = ', '.join(map(str, silent))
        return (f"Rank watchdog: rank{'s' * (len(silent) > 1)} {names} "
                f'stopped answering ({details}; limit {limit:g} s). '
                f'{exiting}')

    def _excepthook(self, exc_type, exc, traceback) -> None:
        """On an uncaught error, print it, then name a peer that has died.

        A collective whose peer died fails at once (gloo: "Connection
        closed by peer"), before the peer's silence reaches ``timeout``.
        """
        self._previous_excepthook(exc_type, exc, traceback)
        if not issubclass(exc_type, RuntimeError) or self._stop.is_set():
            return  # collectives fail with RuntimeError (or a subclass)
        self._main_failed = True
        grace = self._limit() + 2 * self.interval
        MMLogger.get_current_instance().error(
            f'Rank watchdog: checking for up to {grace:.0f} s whether another '
            'rank stopped answering.')
        self._stop.wait(grace)


@HOOKS.register_module()
class RankWatchdogHook(Hook):
    """Exit every process of a distributed run when one rank stops answering.

    Runs :class:`RankWatchdog` from ``before_run`` to ``after_run`` when
    there is more than one rank; does nothing otherwise. The report names
    the silent rank, its host, pid and last reported iteration; this
    process then exits with status :data:`EXIT_CODE`. ``after_run`` waits
    for every rank before stopping, so a rank that stalls at the very end
    (saving the last checkpoint) is reported too.

    Args:
        timeout (float): seconds a peer may be silent. The environment
            variable ``MMSEG_VPT_RANK_TIMEOUT`` overrides it; 0 turns the
            watchdog off. Defaults to 120.
        interval (float): seconds between heartbeats. Defaults to 5.
    """

    # last, so that the barrier in after_run follows every other hook's
    priority = 'LOWEST'

    def __init__(self, timeout: float = 120.0, interval: float = 5.0):
        self.interval = _seconds(interval, 'RankWatchdogHook interval')
        if os.environ.get(TIMEOUT_ENV):
            self.timeout = _seconds(os.environ[TIMEOUT_ENV], TIMEOUT_ENV)
            _check_timeout(self.timeout, self.interval, TIMEOUT_ENV)
        else:
            self.timeout = _seconds(timeout, 'RankWatchdogHook timeout')
            _check_timeout(self.timeout, self.interval,
                           'RankWatchdogHook timeout')
        self._watchdog: Optional[RankWatchdog] = None

    def before_run(self, runner) -> None:
        if not is_distributed() or get_world_size() < 2:
            return
        if not self.timeout:
            runner.logger.info('Rank watchdog off (timeout 0).')
            return
        store = torch_dist.PrefixStore(
            f'mmseg_vpt/rank_watchdog/{next(_run_ids)}/',
            torch_dist.distributed_c10d._get_default_store().clone())
        self._watchdog = RankWatchdog(store, get_rank(), get_world_size(),
                                      self.timeout, self.interval)
        self._watchdog.start()
        runner.logger.info(
            f'Rank watchdog: a rank silent for {self.timeout:g} s stops the '
            f'job (RankWatchdogHook timeout, or {TIMEOUT_ENV}).')

    def _report(self, progress: str) -> None:
        if self._watchdog is not None:
            self._watchdog.progress = progress

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._report(f'training iteration {runner.iter + 1}')

    def before_val_epoch(self, runner) -> None:
        self._report(f'validation after iteration {runner.iter}')

    def before_test_epoch(self, runner) -> None:
        self._report('test')

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        self._report(f'saving the checkpoint of iteration {runner.iter}')

    def after_run(self, runner) -> None:
        if self._watchdog is None:
            return
        self._report('finishing')
        barrier()
        self._watchdog.stop()
        self._watchdog = None


def _seconds(value, name: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError(
            f'{name} must be a number of seconds >= 0, got {value!r}')
    return seconds


def _check_timeout(timeout: float, interval: float, name: str) -> None:
    if interval <= 0:
        raise ValueError(
            f'RankWatchdogHook interval must be > 0 seconds, got {interval}')
    if timeout and timeout < 2 * interval:
        raise ValueError(
            f'{name}={timeout:g} s must be 0 (off) or at least twice the '
            f'heartbeat interval ({interval:g} s)')
