"""A rank that stops answering (SIGSTOP, SIGKILL) ends a distributed run
within a bounded time, with an error naming it; a normal run still ends
cleanly. The slow tests run real 2-process CPU (gloo) trainings of the demo
config through tools/train.py and tools/dist_train.sh."""
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from mmseg_vpt.engine.rank_watchdog import (EXIT_CODE, TIMEOUT_ENV,
                                            RankWatchdog, RankWatchdogHook)
from mmseg_vpt.utils.dist import (COLLECTIVE_TIMEOUT, add_rank_watchdog,
                                  prepare_distributed, set_collective_timeout)

from .tools_helpers import (PYTHON, REPO, free_port, short_schedule,
                            synthetic_workspace, train_cmd)

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
# watchdog timeout in the 2-process runs (MMSEG_VPT_RANK_TIMEOUT)
TIMEOUT = 20
# how long a test waits for a process to exit: the watchdog's bound plus
# room for a loaded CI machine. Without the watchdog a stalled gloo
# collective waits 30 minutes.
WAIT = 150


def wait_for_report(reports: list, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not reports and time.monotonic() < end:
        time.sleep(0.05)


def test_silent_peer_is_named_with_host_pid_and_progress():
    store = torch_dist.HashStore()
    reports: List[str] = []
    watchdogs = [
        RankWatchdog(store.clone(), rank, 2, timeout=2.0, interval=0.2,
                     on_lost=reports.append) for rank in range(2)
    ]
    for watchdog in watchdogs:
        watchdog.start()
    try:
        watchdogs[1].progress = 'training iteration 7'
        time.sleep(3.0)  # longer than the timeout: live peers keep beating
        assert reports == []
        watchdogs[1].stop()  # rank 1's threads stop, as in a stopped process
        wait_for_report(reports, 30)
    finally:
        watchdogs[1].stop()
        watchdogs[0].stop()
    assert len(reports) == 1
    assert reports[0].startswith(
        'Rank watchdog: rank 1 stopped answering (rank 1: host '
        f'{socket.gethostname()}, pid {os.getpid()}, last reported training '
        'iteration 7, silent for ')
    assert 'limit 2 s). Exiting rank 0' in reports[0]


def test_exit_logs_the_report_and_gives_it_to_torchrun(tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import (
        ChildFailedError, ProcessFailure)
    error_file = tmp_path / 'error.json'
    proc = subprocess.run(
        [PYTHON, '-c', 'from mmseg_vpt.engine.rank_watchdog import '
         "exit_with_error; exit_with_error('Rank watchdog: rank 1 stopped "
         "answering (test)')"],
        cwd=REPO, env=dict(os.environ, TORCHELASTIC_ERROR_FILE=str(error_file)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=300)
    assert proc.returncode == EXIT_CODE, proc.stdout
    assert 'ERROR - ' in proc.stdout
    assert 'Rank watchdog: rank 1 stopped answering (test)' in proc.stdout
    # what torchrun prints as the failed rank's traceback
    summary = ChildFailedError('train.py', {
        0: ProcessFailure(0, 1234, EXIT_CODE, str(error_file))
    }).format_msg()
    assert 'RuntimeError: Rank watchdog: rank 1 stopped answering (test)' \
        in summary


class UnansweredStore:
    """A store whose server is stopped: every call blocks."""

    def __getattr__(self, name):
        return lambda *args: threading.Event().wait()


def test_store_that_stops_answering_names_rank_0():
    reports: List[str] = []
    watchdog = RankWatchdog(UnansweredStore(), 2, 3, timeout=1.0,
                            interval=0.1, on_lost=reports.append)
    watchdog.start()
    try:
        wait_for_report(reports, 30)
    finally:
        watchdog.stop()
    assert len(reports) == 1
    assert reports[0].startswith(
        "Rank watchdog: the process group's key-value store (served by rank "
        '0, or by torchrun on the first node) has not answered for ')
    assert '; rank 0 stopped answering (rank 0: no heartbeat received).' \
        in reports[0]
    assert 'Exiting rank 2' in reports[0]


def test_bad_watchdog_timeouts_are_errors_naming_the_setting(monkeypatch):
    with pytest.raises(ValueError, match=re.escape(
            'RankWatchdogHook timeout=6 s must be 0 (off) or at least twice '
            'the heartbeat interval (5 s)')):
        RankWatchdogHook(timeout=6)
    with pytest.raises(ValueError, match=re.escape(
            "RankWatchdogHook timeout must be a number of seconds >= 0, got "
            "'soon'")):
        RankWatchdogHook(timeout='soon')
    monkeypatch.setenv(TIMEOUT_ENV, '-3')
    with pytest.raises(ValueError, match=re.escape(
            f"{TIMEOUT_ENV} must be a number of seconds >= 0, got '-3'")):
        RankWatchdogHook()
    monkeypatch.setenv(TIMEOUT_ENV, '30')
    assert RankWatchdogHook(timeout=600).timeout == 30
    monkeypatch.setenv(TIMEOUT_ENV, '0')
    assert RankWatchdogHook().timeout == 0


def test_distributed_runs_get_a_collective_timeout_and_the_watchdog():
    # a config of the user's own, without our default_runtime
    cfg = Config(dict(custom_hooks=[dict(type='TunedCheckpointHook')]))
    assert set_collective_timeout(cfg) == COLLECTIVE_TIMEOUT == 600
    assert cfg.env_cfg.dist_cfg.timeout == 600
    add_rank_watchdog(cfg)
    add_rank_watchdog(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == [
        'TunedCheckpointHook', 'mmseg.RankWatchdogHook'
    ]
    # our configs set both; a timeout of the user's own is kept
    base = Config.fromfile(REPO / 'configs/_base_/default_runtime.py')
    assert base.env_cfg.dist_cfg.timeout == 600
    assert dict(type='RankWatchdogHook', timeout=120) in base.custom_hooks
    base.env_cfg.dist_cfg.timeout = 1800
    assert set_collective_timeout(base) == 1800

    cfg.env_cfg.dist_cfg.timeout = '10 min'
    with pytest.raises(ValueError, match=re.escape(
            'env_cfg.dist_cfg.timeout must be a number of seconds > 0, got '
            "'10 min'")):
        set_collective_timeout(cfg)


def test_gpu_runs_get_the_timeout_for_mmengine_and_the_watchdog(monkeypatch):
    # On a GPU mmengine initialises NCCL from env_cfg.dist_cfg itself.
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(model=dict(type='EncoderDecoder')))
    prepare_distributed(cfg, 'pytorch')
    assert cfg.env_cfg.dist_cfg == dict(timeout=600)
    assert cfg.custom_hooks == [dict(type='mmseg.RankWatchdogHook')]
    assert not torch_dist.is_initialized()
    assert 'model_wrapper_cfg' not in cfg


# --- real 2-process gloo runs -------------------------------------------


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    root = synthetic_workspace(tmp_path_factory, 'dist_watchdog')
    return root


def rank_env(rank: int, port: int) -> dict:
    return dict(
        os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
        MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
        **{TIMEOUT_ENV: str(TIMEOUT)}, PYTHONUNBUFFERED='1',
        OMP_NUM_THREADS='1')


def launch_two_ranks(workspace: Path,
                     name: str) -> List[Tuple[subprocess.Popen, Path]]:
    """Start rank 0 and rank 1 of a long training, as a launcher would."""
    port, ranks = free_port(), []
    for rank in range(2):
        log = workspace / f'{name}_rank{rank}.log'
        with open(log, 'w') as out:
            proc = subprocess.Popen(
                [str(c) for c in train_cmd(
                    VIT_DEMO, workspace / name, '--launcher', 'pytorch',
                    '--cfg-options', *short_schedule(1000))],
                cwd=workspace, env=rank_env(rank, port), stdout=out,
                stderr=subprocess.STDOUT)
        ranks.append((proc, log))
    return ranks


def wait_for_training(proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + 600
    while time.monotonic() < end:
        if re.search(r'Iter\(train\) \[\s*2/1000\]', log.read_text()):
            return
        assert proc.poll() is None, log.read_text()[-4000:]
        time.sleep(0.5)
    raise AssertionError(f'no training iteration logged:\n'
                         f'{log.read_text()[-4000:]}')


def wait_for_exit(proc: subprocess.Popen, log: Path, what: str) -> int:
    try:
        return proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f'{what} still running {WAIT} s later:\n'
            f'{log.read_text()[-4000:]}') from None


def end_processes(procs: List[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGSTOP, signal.SIGKILL],
                         ids=['SIGSTOP', 'SIGKILL'])
def test_rank_that_stops_answering_is_named_and_every_rank_exits(
        workspace, sig):
    (rank0, log0), (rank1, log1) = ranks = launch_two_ranks(
        workspace, f'stop_{sig.name}')
    try:
        wait_for_training(rank0, log0)
        time.sleep(11)  # two heartbeats (5 s apart) while training
        os.kill(rank1.pid, sig)
        stopped_at = time.monotonic()
        rc = wait_for_exit(rank0, log0, f'rank 0, after {sig.name} of rank 1,')
        out0 = log0.read_text()
        assert rc == EXIT_CODE, out0[-4000:]
        assert re.search(
            r'ERROR - .*Rank watchdog: rank 1 stopped answering \(rank 1: host '
            rf'\S+, pid {rank1.pid}, last reported training iteration \d+, '
            rf'silent for \d+ s; limit \d+ s\)\. Exiting rank 0', out0), \
            out0[-4000:]
        if sig == signal.SIGSTOP:
            # Continued, rank 1 finds rank 0 (which served the store) gone,
            # without blaming it for the time rank 1 itself was stopped.
            # Keep rank 1 stopped for longer than the silence it must report
            # (the limit plus a heartbeat interval, 5 s): rank 0 may exit
            # before the limit has passed since the stop (its clock started
            # at rank 1's last heartbeat), and then a correct report could
            # exceed a short stop.
            time.sleep(max(0.0, TIMEOUT + 2 * 5 -
                           (time.monotonic() - stopped_at)))
            os.kill(rank1.pid, signal.SIGCONT)
            stopped_for = time.monotonic() - stopped_at
            rc1 = wait_for_exit(rank1, log1, 'rank 1, continued,')
            out1 = log1.read_text()
            assert rc1 == EXIT_CODE, out1[-4000:]
            silence = re.search(
                r"ERROR - .*Rank watchdog: the process group's key-value "
                r'store \(served by rank 0, or by torchrun on the first node\)'
                r' has not answered for (\d+) s \(limit \d+ s\); rank 0 '
                rf'stopped answering \(rank 0: host \S+, pid {rank0.pid}, '
                r'last reported training iteration \d+\)\. Exiting rank 1',
                out1)
            assert silence, out1[-4000:]
            assert int(silence.group(1)) < stopped_for
    finally:
        end_processes([proc for proc, _ in ranks])


SLOW_END_HOOK = '''
import time
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class SlowRankZeroEndHook(Hook):
    """Keeps rank 0 busy after training while rank 1 has finished, as
    saving a large last checkpoint would."""

    def __init__(self, seconds):
        self.seconds = seconds

    def after_train(self, runner):
        if get_rank() == 0:
            runner.logger.info(f'rank 0 busy for {self.seconds} s')
            time.sleep(self.seconds)
'''


@pytest.mark.slow
def test_normal_run_with_a_slow_rank_zero_end_finishes_cleanly(workspace):
    """Through tools/dist_train.sh (torchrun). Rank 0 stays busy after the
    last iteration for longer than the watchdog's timeout: no false alarm,
    and both ranks exit 0."""
    (workspace / 'slow_end_hook.py').write_text(SLOW_END_HOOK)
    cfg = Config.fromfile(REPO / VIT_DEMO)
    cfg.custom_imports.imports.append('slow_end_hook')
    cfg.custom_hooks.append(
        dict(type='SlowRankZeroEndHook', seconds=TIMEOUT + 5))
    config = workspace / 'slow_end.py'
    cfg.dump(config)
    env = dict(os.environ, PORT=str(free_port()), PYTHON=PYTHON,
               PYTHONPATH=str(workspace), PYTHONUNBUFFERED='1',
               OMP_NUM_THREADS='1', **{TIMEOUT_ENV: str(TIMEOUT)})
    proc = subprocess.run(
        ['bash', str(REPO / 'tools/dist_train.sh'), str(config), '2',
         '--work-dir', str(workspace / 'slow_end'), '--cfg-options',
         *short_schedule(4)],
        cwd=workspace, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:]
    assert f'Rank watchdog: a rank silent for {TIMEOUT} s stops the job' \
        in out
    assert f'rank 0 busy for {TIMEOUT + 5} s' in out
    assert 'stopped answering' not in out
    assert (workspace / 'slow_end/iter_4.pth').exists()
