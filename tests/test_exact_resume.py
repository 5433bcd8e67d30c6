"""Exact resume and safe work dirs.

A run SIGKILLed at any moment (mid-iteration, or in the middle of writing a
checkpoint) and resumed with ``--resume`` ends at the same weights and
optimizer state as an uninterrupted run, bit for bit; a copied work dir
resumes from its own files; a second run in a work dir in use is refused;
a broken ``last_checkpoint`` is an error naming the file.

The end-to-end tests run the tiny demo config through ``tools/train.py``
(and mmseg's own ``tools/train.py``) with prompt dropout, head dropout and
the random augmentations on, so every RNG matters.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import mmseg
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_vpt.engine.resume import (RNG_KEY, ResumableCheckpointHook,
                                     capture_rng_state, restore_rng_state)
from mmseg_vpt.engine.runner_config import (AUTO_RESUME,
                                            configure_exact_resume,
                                            load_config, set_resume)
from mmseg_vpt.engine.work_dir import (WorkDirInUseError, WorkDirLock,
                                       WorkDirLockHook)
from mmseg_vpt.utils.files import (resolve_last_checkpoint,
                                   write_text_atomically)

from .tools_helpers import (PYTHON, REPO, free_port, read_checkpoint, run,
                            run_fails, short_schedule, synthetic_workspace,
                            train_cmd)

VIT_DEMO = 'configs/demo/setr_vit-tiny_vpt-deep_synthetic-ade20k.py'
MMSEG_TRAIN = Path(mmseg.__file__).parent / '.mim/tools/train.py'
ITERS, INTERVAL = 10, 4  # checkpoints (and validation) at 4, 8 and 10


def options(num_workers: int = 0) -> List[str]:
    """10 iterations, checkpoint + validation every 4, with prompt dropout,
    head dropout and random augmentations (in the main process, or in one
    persistent worker)."""
    opts = short_schedule(ITERS) + [
        f'train_cfg.val_interval={INTERVAL}',
        f'default_hooks.checkpoint.interval={INTERVAL}',
        'model.backbone.prompt_dropout=0.1',
        'model.decode_head.dropout_ratio=0.1',
    ]
    if num_workers:
        opts += [f'train_dataloader.num_workers={num_workers}',
                 'train_dataloader.persistent_workers=True']
    return opts


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    root = synthetic_workspace(tmp_path_factory, 'resume')
    return root


@pytest.fixture(scope='module')
def uninterrupted(workspace) -> dict:
    """The final checkpoint of a run that was never stopped."""
    work = workspace / 'uninterrupted'
    run(train_cmd(VIT_DEMO, work, '--cfg-options', *options()),
        cwd=workspace)
    return read_checkpoint(work / f'iter_{ITERS}.pth')


def descendants(pid: int) -> List[int]:
    """Child processes of ``pid``, recursively (Linux /proc)."""
    parents = {}
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
        except OSError:  # not a process, or it just ended
            continue
        parents[int(entry.name)] = int(stat.rsplit(')', 1)[1].split()[1])
    children = [p for p, parent in parents.items() if parent == pid]
    return children + [d for c in children for d in descendants(c)]


def logged_iter(n: int) -> str:
    """A log line's pattern, for iteration ``n`` of an iteration-based run
    (the logger pads the number: ``Iter(train) [ 6/10]``)."""
    return rf'Iter\(train\) \[\s*{n}/'


def start_and_kill(cmd: List, cwd: Path, kill_on: str,
                   env: Optional[dict] = None, timeout: int = 600) -> int:
    """Run ``cmd`` and SIGKILL it, with every process it started (as a job
    scheduler would), once it logs a line matching the regex ``kill_on``.
    Returns its pid."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1',
                    **(env or {}))
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if re.search(kill_on, line):
                tree = descendants(proc.pid) if Path('/proc').is_dir() else []
                for pid in [proc.pid] + tree:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                break
    finally:
        proc.wait()
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL, ''.join(lines)[-6000:]
    return proc.pid


def assert_same_training_state(resumed: dict, reference: dict) -> None:
    """Weights, optimizer state and schedulers are bit-identical."""
    assert resumed['meta']['iter'] == reference['meta']['iter']
    weights, ref_weights = resumed['state_dict'], reference['state_dict']
    assert weights.keys() == ref_weights.keys()
    differ = [k for k in weights if not torch.equal(weights[k],
                                                    ref_weights[k])]
    assert not differ, (f'{len(differ)} of {len(weights)} tensors differ '
                        f'from the uninterrupted run: {differ[:5]}')
    state, ref_state = (resumed['optimizer']['state'],
                        reference['optimizer']['state'])
    assert state.keys() == ref_state.keys()
    for key in state:
        for name, value in state[key].items():
            assert torch.equal(value, ref_state[key][name]), (key, name)
    assert resumed['param_schedulers'] == reference['param_schedulers']


def resume_and_compare(cmd: List, cwd: Path, work: Path, final: str,
                       reference: dict, killed_pid: int) -> str:
    log = run(cmd, cwd=cwd)
    assert_same_training_state(read_checkpoint(work / final), reference)
    assert 'Restoring the RNG states of iteration' in log
    # the killed run's lock is taken over, naming that run
    assert f'Taking over {work}/train.lock' in log
    assert f'pid {killed_pid} on {socket.gethostname()}' in log
    return log


# --------------------------------------------------------------------------
# kill mid-iteration, resume
# --------------------------------------------------------------------------
def last_saved_iter(work: Path) -> int:
    return max(int(p.stem.split('_')[1]) for p in work.glob('iter_*.pth'))


@pytest.mark.slow
def test_sigkill_then_resume_ends_bit_identical_to_uninterrupted_run(
        workspace, uninterrupted):
    work = workspace / 'killed'
    cmd = train_cmd(VIT_DEMO, work, '--cfg-options', *options())
    # killed in iteration 7 (or a little later): between two checkpoints
    pid = start_and_kill(cmd, workspace, kill_on=logged_iter(6))
    saved = last_saved_iter(work)
    assert saved < ITERS

    log = resume_and_compare(
        train_cmd(VIT_DEMO, work, '--resume', '--cfg-options', *options()),
        workspace, work, f'iter_{ITERS}.pth', uninterrupted, pid)
    assert f'resumed epoch: 0, iter: {saved}' in log


def dist_train_cmd(work: Path, *args: str) -> List:
    return ['bash', REPO / 'tools/dist_train.sh', REPO / VIT_DEMO, '2',
            '--work-dir', work, *args]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available() or not Path('/proc').is_dir(),
                    reason='CPU (gloo) processes, found through /proc')
def test_sigkill_then_resume_is_exact_in_two_processes_with_workers(
        workspace):
    # Each rank has its own RNG states (its augmentations drew differently)
    # and its augmentations run in a persistent worker process, whose RNG
    # continues from the batches it produced before.
    env = {'PORT': str(free_port()), 'PYTHON': PYTHON}
    work = workspace / 'dist_uninterrupted'
    run(dist_train_cmd(work, '--cfg-options', *options(1)), cwd=workspace,
        env=env)
    reference = read_checkpoint(work / f'iter_{ITERS}.pth')

    work = workspace / 'dist_killed'
    start_and_kill(dist_train_cmd(work, '--cfg-options', *options(1)),
                   workspace, kill_on=logged_iter(5), env=env)
    saved = last_saved_iter(work)
    log = run(dist_train_cmd(work, '--resume', '--cfg-options', *options(1)),
              cwd=workspace, env=dict(env, PORT=str(free_port())))
    assert_same_training_state(
        read_checkpoint(work / f'iter_{ITERS}.pth'), reference)
    assert 'Distributed training: True' in log
    assert f'resumed epoch: 0, iter: {saved}' in log
    assert f'Replaying the {saved} batches' in log
    assert f'Taking over {work}/train.lock' in log


# The demo with an epoch-based loop, as the VTAB configs have: 4 iterations
# an epoch, a checkpoint and validation after each, one persistent worker.
EPOCH_CONFIG = """
_base_ = ['{demo}']
train_dataloader = dict(
    sampler=dict(type='DefaultSampler', shuffle=True), batch_size=2,
    num_workers=1, persistent_workers=True)
val_dataloader = dict(num_workers=0, persistent_workers=False)
train_cfg = dict(
    _delete_=True, type='EpochBasedTrainLoop', max_epochs=3, val_interval=1)
default_hooks = dict(
    checkpoint=dict(by_epoch=True, interval=1), logger=dict(interval=1))
log_processor = dict(by_epoch=True)
model = dict(
    backbone=dict(prompt_dropout=0.1), decode_head=dict(dropout_ratio=0.1))
"""


@pytest.mark.slow
def test_sigkill_then_resume_is_exact_in_an_epoch_based_loop(workspace):
    config = workspace / 'epoch_based.py'
    config.write_text(EPOCH_CONFIG.format(demo=REPO / VIT_DEMO))
    work = workspace / 'epoch_uninterrupted'
    run([PYTHON, REPO / 'tools/train.py', config, '--work-dir', work],
        cwd=workspace)
    reference = read_checkpoint(work / 'epoch_3.pth')

    work = workspace / 'epoch_killed'
    cmd = [PYTHON, REPO / 'tools/train.py', config, '--work-dir', work]
    pid = start_and_kill(cmd, workspace,
                         kill_on=r'Epoch\(train\)\s*\[2\]\[\s*2/')
    assert (work / 'epoch_1.pth').exists()
    log = resume_and_compare(cmd + ['--resume'], workspace, work,
                             'epoch_3.pth', reference, pid)
    assert 'resumed epoch: 1, iter: 4' in log
    assert 'Replaying the 1 epochs' in log


# --------------------------------------------------------------------------
# kill while a checkpoint is written
# --------------------------------------------------------------------------
# Runs tools/train.py with `open` patched: the NTH file opened for writing
# whose name contains NAME gets half its bytes, then the process SIGKILLs
# itself, as if killed in the middle of the write.
KILL_WHILE_WRITING = '''
import builtins, os, runpy, signal, sys

NAME, NTH = os.environ['KILL_WHILE_WRITING'].split(':')
count = 0
real_open = builtins.open


class DyingFile:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def dying_open(file, mode='r', *args, **kwargs):
    global count
    f = real_open(file, mode, *args, **kwargs)
    if (isinstance(file, (str, os.PathLike)) and set(mode) & set('wax+')
            and NAME in os.path.basename(os.fspath(file))):
        count += 1
        if count == int(NTH):
            return DyingFile(f)
    return f


builtins.open = dying_open
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def train_killed_while_writing(workspace: Path, work: Path, name: str,
                               nth: int, *opts: str) -> str:
    launcher = workspace / 'kill_while_writing.py'
    launcher.write_text(KILL_WHILE_WRITING)
    cmd = [PYTHON, launcher, *train_cmd(VIT_DEMO, work, '--cfg-options',
                                        *options(), *opts)[1:]]
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=workspace, timeout=600, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
                 KILL_WHILE_WRITING=f'{name}:{nth}'))
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-6000:]
    assert 'Saving checkpoint at 8 iterations' in proc.stdout
    return proc.stdout


@pytest.fixture(scope='module')
def killed_while_saving(workspace) -> Path:
    """A work dir whose run was killed half-way through writing iter_8.pth,
    keeping one checkpoint (max_keep_ckpts=1)."""
    work = workspace / 'killed_while_saving'
    train_killed_while_writing(workspace, work, 'iter_8.pth', 1,
                               'default_hooks.checkpoint.max_keep_ckpts=1')
    return work


def loads(path: Path) -> bool:
    try:
        read_checkpoint(path)
    except Exception:
        return False
    return True


@pytest.mark.slow
def test_kill_while_saving_leaves_only_complete_checkpoints(
        killed_while_saving):
    work = killed_while_saving
    # mmengine wrote iter_8.pth in place (half of it is there after the
    # kill) and, with max_keep_ckpts=1, deleted iter_4.pth first
    partial = [p.name for p in work.glob('*.pth') if not loads(p)]
    assert not partial, f'half-written checkpoints: {partial}'
    assert not (work / 'iter_8.pth').exists()
    assert loads(work / 'iter_4.pth'), 'the previous checkpoint was deleted'
    resumes_from = resolve_last_checkpoint(str(work))
    assert resumes_from == str(work / 'iter_4.pth')
    assert read_checkpoint(resumes_from)['meta']['iter'] == 4


@pytest.mark.slow
def test_copied_work_dir_resumes_from_its_own_checkpoint(
        workspace, killed_while_saving, uninterrupted):
    # last_checkpoint holds the original's absolute path; the original
    # goes on to hold something else
    copy = workspace / 'copied_work_dir'
    shutil.copytree(killed_while_saving, copy)
    (killed_while_saving / 'iter_4.pth').write_bytes(b'not this one')

    # resumed with mmseg's own tools/train.py: the config's hook resolves
    # last_checkpoint, and the run finishes bit-identical to one never
    # killed (here the kill came in the middle of a save)
    log = run([PYTHON, MMSEG_TRAIN, REPO / VIT_DEMO, '--work-dir', copy,
               '--resume', '--cfg-options', *options()], cwd=workspace,
              env={'PYTHONPATH': str(REPO)})
    assert (f'names {killed_while_saving}/iter_4.pth, outside this work '
            f"dir (it was copied or moved); resuming from this work dir's "
            f'own {copy}/iter_4.pth') in log
    assert f'Removing {copy}/.iter_8.pth.partial' in log
    assert not (copy / '.iter_8.pth.partial').exists()
    assert_same_training_state(
        read_checkpoint(copy / f'iter_{ITERS}.pth'), uninterrupted)


# --------------------------------------------------------------------------
# one run per work dir; broken last_checkpoint
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_second_run_in_a_work_dir_in_use_is_refused(workspace):
    work = workspace / 'in_use'
    lock = WorkDirLock(str(work))
    lock.acquire()  # this test process is the live run holding it
    try:
        failure = run_fails(
            train_cmd(VIT_DEMO, work, '--cfg-options', *short_schedule(2)),
            cwd=workspace)
    finally:
        lock.release()
    assert 'WorkDirInUseError' in failure
    assert (f'Work dir {work} is in use by another training run (pid '
            f'{os.getpid()} on {socket.gethostname()}, started ') in failure
    assert f'command: {sys.executable} ' in failure
    assert not (work / 'iter_2.pth').exists()


@pytest.mark.parametrize('entry', ['tools/train.py', 'hook'])
def test_empty_last_checkpoint_is_an_error_naming_it(tmp_path, entry):
    (tmp_path / 'last_checkpoint').write_text('')
    with pytest.raises(FileNotFoundError) as err:
        if entry == 'tools/train.py':  # what its --resume does
            set_resume(Config(dict(work_dir=str(tmp_path))), AUTO_RESUME)
        else:  # mmseg's tools/train.py --resume: resume=True, no load_from
            ResumableCheckpointHook(by_epoch=False).before_run(
                SimpleNamespace(_resume=True, _load_from=None,
                                work_dir=str(tmp_path)))
    assert str(err.value).startswith(
        f'{tmp_path}/last_checkpoint is empty; it should name the '
        'checkpoint to resume from. Resume from a checkpoint explicitly')


def test_last_checkpoint_resolution(tmp_path):
    work, other = tmp_path / 'work', tmp_path / 'elsewhere'
    work.mkdir()
    other.mkdir()
    record = work / 'last_checkpoint'
    assert resolve_last_checkpoint(str(work)) is None  # nothing saved yet

    (work / 'iter_4.pth').write_bytes(b'')
    record.write_text('iter_4.pth')  # relative: to the work dir
    assert resolve_last_checkpoint(str(work)) == str(work / 'iter_4.pth')

    # another dir's absolute path: this dir's file of that name
    (other / 'iter_4.pth').write_bytes(b'')
    record.write_text(f'{other}/iter_4.pth\n')
    assert resolve_last_checkpoint(str(work)) == str(work / 'iter_4.pth')

    # no such file here: the named one (checkpoints in another out_dir)
    (other / 'iter_8.pth').write_bytes(b'')
    record.write_text(f'{other}/iter_8.pth')
    assert resolve_last_checkpoint(str(work)) == str(other / 'iter_8.pth')

    record.write_text(f'{other}/iter_12.pth')
    with pytest.raises(FileNotFoundError) as err:
        resolve_last_checkpoint(str(work))
    assert (f'{record} names the checkpoint {other}/iter_12.pth, which does '
            f'not exist (nor does {work}/iter_12.pth).') in str(err.value)

    record.write_text(' \n')
    with pytest.raises(FileNotFoundError, match=f'{record} is empty'):
        resolve_last_checkpoint(str(work))


def test_auto_resume_through_the_hook_reads_last_checkpoint_in_its_dir(
        tmp_path):
    # mmseg's tools/train.py --resume sets resume=True and no load_from
    (tmp_path / 'iter_4.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text('/gone/work_dir/iter_4.pth')
    runner = SimpleNamespace(_resume=True, _load_from=None,
                             work_dir=str(tmp_path))
    ResumableCheckpointHook(by_epoch=False).before_run(runner)
    assert runner._load_from == str(tmp_path / 'iter_4.pth')


def test_crash_while_writing_last_checkpoint_keeps_the_old_text(
        tmp_path, monkeypatch):
    record = tmp_path / 'last_checkpoint'
    write_text_atomically(str(record), '/work/iter_4.pth')
    real_open = open

    class Crash(Exception):
        pass

    class CrashingFile:
        def __init__(self, f):
            self.f = f

        def write(self, text):
            self.f.write(text[:3])
            self.f.flush()
            raise Crash

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr('builtins.open', lambda *a, **k: CrashingFile(
        real_open(*a, **k)))
    with pytest.raises(Crash):
        write_text_atomically(str(record), '/work/iter_8.pth')
    monkeypatch.undo()
    assert record.read_text() == '/work/iter_4.pth'


def test_resume_takes_the_checkpoint_seed_when_the_config_has_none(
        tmp_path):
    # The sampler (data order) is seeded when the runner builds it, before
    # mmengine reads the checkpoint; a config without a seed (the 160k
    # schedules) would draw a new one and continue in another order.
    torch.save(dict(meta=dict(seed=1234, iter=4)), tmp_path / 'iter_4.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    cfg = Config(dict(work_dir=str(tmp_path), randomness=dict(seed=None)))
    set_resume(cfg, AUTO_RESUME)
    assert cfg.resume and cfg.load_from == str(tmp_path / 'iter_4.pth')
    assert cfg.randomness.seed == 1234
    # a seed the config sets stays (mmengine warns if they differ)
    cfg = Config(dict(work_dir=str(tmp_path), randomness=dict(seed=7)))
    set_resume(cfg, str(tmp_path / 'iter_4.pth'))
    assert cfg.randomness.seed == 7


def test_resume_with_another_seed_warns_that_data_order_differs():
    # mmseg's tools/train.py on a config without a seed draws a new one
    warnings = []
    runner = SimpleNamespace(_resume=True, seed=99, logger=SimpleNamespace(
        warning=warnings.append))
    ResumableCheckpointHook(by_epoch=False).after_load_checkpoint(
        runner, dict(meta=dict(seed=1234)))
    assert warnings == [
        "The data order of this run was seeded with 99, the resumed run's "
        'with 1234: it does not continue as the interrupted run would have. '
        'Set randomness.seed=1234 (tools/train.py --resume does when the '
        'config sets none).']


def test_train_tool_makes_any_config_resume_exactly():
    cfg = load_config(str(REPO / 'configs/vtab/dtd.py'))  # mmpretrain scope
    configure_exact_resume(cfg)
    assert cfg.default_hooks.checkpoint.type == 'mmseg.ResumableCheckpointHook'
    assert dict(type='mmseg.WorkDirLockHook') in cfg.custom_hooks
    cfg = load_config(str(REPO / VIT_DEMO))  # ours have both already
    hooks = list(cfg.custom_hooks)
    configure_exact_resume(cfg)
    assert cfg.default_hooks.checkpoint.type == 'ResumableCheckpointHook'
    assert cfg.custom_hooks == hooks


@pytest.mark.parametrize('states, message', [
    (None, 'The resumed checkpoint has no RNG states (it was not saved by '
     'ResumableCheckpointHook): weights, optimizer, schedule and data order '
     'continue, but dropout and augmentation randomness do not continue as '
     'in the interrupted run.'),
    ([{}, {}], 'The resumed checkpoint holds RNG states of 2 processes, this '
     'run has 1: randomness does not continue as in the interrupted run.'),
])
def test_resume_without_matching_rng_states_says_what_is_not_exact(
        states, message):
    warnings = []
    runner = SimpleNamespace(iter=4, logger=SimpleNamespace(
        warning=warnings.append))
    hook = ResumableCheckpointHook(by_epoch=False)
    assert hook._state_of_this_rank(runner, states) is None
    assert warnings == [message]


def test_rng_states_survive_a_weights_only_load(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), np.random.randint(1 << 30))
    torch.save({RNG_KEY: [state]}, tmp_path / 'rng.pth')
    # other states in between; then back
    torch.manual_seed(2)
    np.random.seed(2)
    loaded = torch.load(tmp_path / 'rng.pth', weights_only=True)[RNG_KEY]
    restore_rng_state(loaded[0])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert np.random.randint(1 << 30) == expected[2]


def test_lock_is_exclusive_until_released(tmp_path):
    first = WorkDirLock(str(tmp_path))
    assert first.acquire() == {}
    with pytest.raises(WorkDirInUseError,
                       match=f'pid {os.getpid()} on {socket.gethostname()}'):
        WorkDirLock(str(tmp_path)).acquire()
    first.release()
    # a clean release leaves no record: the next run takes it silently
    second = WorkDirLock(str(tmp_path))
    assert second.acquire() == {}
    second.release()


def test_lock_left_by_a_dead_run_is_taken_over_with_a_warning(tmp_path):
    (tmp_path / 'train.lock').write_text(
        '{"pid": 999999, "host": "h", "started": "s", "command": "c"}')
    warnings = []
    runner = SimpleNamespace(work_dir=str(tmp_path), logger=SimpleNamespace(
        warning=warnings.append))
    hook = WorkDirLockHook()
    hook.before_train(runner)
    try:
        assert warnings == [
            f'Taking over {tmp_path}/train.lock: the run that held it (pid '
            '999999 on h, started s, command: c) ended without releasing it '
            '(killed or crashed).']
    finally:
        hook.after_train(runner)
    assert (tmp_path / 'train.lock').read_text() == ''
