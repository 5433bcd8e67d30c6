"""The VPT paper's VTAB-1k protocol as a resumable job runner.

For each task (``tools/vtab_sweep.py`` is the CLI):

1. **Grid** on train800 -> val200: every (base lr, weight decay) pair of the
   grid, one seed (the first of ``seeds``); each job is one
   ``tools/train.py`` run that evaluates val200 after its last epoch and
   saves no checkpoint.
2. **Selection**: the pair with the best val top-1; ties go to the smaller
   lr, then the smaller weight decay.
3. **Final** train800val200 -> test with the selected pair, once per seed:
   ``tools/train.py`` (no validation), then ``tools/test.py`` on its last
   checkpoint.
4. **Table**: test top-1 mean and std per task and the group means beside
   the paper's (``results.md`` / ``results.csv`` in the method's folder,
   through :mod:`mmseg_vpt.vtab.report`).

Every finished job leaves ``result.json`` in its folder; a rerun skips those
jobs, so an interrupted sweep resumes where it stopped (a job that failed
or was killed has no result file and runs again). Jobs run as subprocesses,
up to ``gpus`` at a time with one GPU each (``CUDA_VISIBLE_DEVICES``), or one
at a time on the CPU when ``gpus=0``.

Layout under ``work_dir``::

    <method>/<task>/config.py                 the config every job runs
    <method>/<task>/grid/lr<lr>_wd<wd>/       train.log, result.json
    <method>/<task>/selected.json             the chosen lr / wd
    <method>/<task>/final/seed<s>/            train.log, test.log,
                                              result.json, checkpoint
    <method>/results.md, results.csv

Another benchmark with the same protocol (FGVC: :data:`mmseg_vpt.fgvc.
benchmark.FGVC`) runs through the same code with its own
:class:`Benchmark` (task table, configs, splits, data root, report
table); :data:`VTAB` is the default everywhere.

The jobs run ``train.py`` and ``test.py`` of a tools folder on the configs
of a configs folder (``SweepSettings.tools_dir`` / ``configs_dir``, the
tools' ``--tools-dir`` / ``--configs-dir``); when none is given, the
copies an installed wheel carries (:mod:`mmseg_vpt.vtab.folders`).
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..utils.files import write_text_atomically
from .folders import configs_folder, tools_folder
from .report import (FINAL_STAGE, RESULT_FILE, VTAB_TABLE, ResultTable,
                     format_report, load_results, summarize)
from .table import Method
from .tasks import render_custom_task_config, render_task_config

GRID_STAGE = 'grid'

Log = Callable[[str], None]


@dataclass(frozen=True)
class Benchmark:
    """What the sweep needs to know about a benchmark.

    Args:
        name: For the log, e.g. ``'VTAB-1k'``.
        table: The report's :class:`~mmseg_vpt.vtab.report.ResultTable`
            (task order, methods, paper numbers); its ``key`` goes into
            every result file.
        config_folder: Its folder in a configs folder (``'vtab'``):
            ``<task>.py`` are the checked-in ``vpt-deep`` configs,
            ``_base_/`` the method bases.
        render: ``render(task, method, base_dir=...)`` -> config text.
        data_root: Default ``--data-root``.
        work_dir: Default ``--work-dir``.
        splits: (grid train, grid val, final train, final test) split
            names of the dataset class.
        custom_task: Config text of a task outside the table
            (``(task, method, num_classes, base_dir)``), or None when
            only the table's tasks can run.
    """
    name: str
    table: ResultTable
    config_folder: str
    render: Callable[..., str]
    data_root: str
    work_dir: str
    splits: Tuple[str, str, str, str]
    custom_task: Optional[Callable[[str, Method, int, str], str]] = None

    @property
    def tasks(self) -> Tuple[str, ...]:
        return self.table.tasks

    def method(self, name: str) -> Method:
        if name not in self.table.methods:
            raise ValueError(f'unknown {self.name} method {name!r}; choose '
                             f'from {list(self.table.methods)}')
        return self.table.methods[name]

    def config_dir(self, configs_dir: Optional[str] = None) -> Path:
        """``<configs>/<config_folder>`` (absolute) of the configs folder
        ``configs_dir``, or of the installed package's when None."""
        folder = configs_folder(configs_dir) / self.config_folder
        if not (folder / '_base_').is_dir():
            raise FileNotFoundError(
                f'{folder / "_base_"} not found: configs_dir '
                '(--configs-dir) must be the configs/ folder that holds '
                f'{self.config_folder}/_base_/')
        return folder


VTAB = Benchmark(
    name='VTAB-1k', table=VTAB_TABLE, config_folder='vtab',
    render=render_task_config, data_root='data/vtab-1k',
    work_dir='work_dirs/vtab_sweep',
    splits=('train800', 'val200', 'train800val200', 'test'),
    custom_task=render_custom_task_config)


def _num(x: float) -> str:
    """A float as it appears in folder names and cfg-options (``0.0001``,
    ``2.5``, ``50``)."""
    return f'{x:g}'


@dataclass
class SweepSettings:
    """What to run; see ``tools/vtab_sweep.py --help``."""
    work_dir: str
    method: str = 'vpt-deep'
    tasks: Optional[Sequence[str]] = None  # None: the benchmark's
    lrs: Optional[Sequence[float]] = None  # None: the method's grid
    wds: Optional[Sequence[float]] = None
    seeds: Sequence[int] = (0, 1, 2)
    data_root: Optional[str] = None  # None: the benchmark's
    num_classes: Optional[int] = None  # for tasks outside the table
    cfg_options: Sequence[str] = ()
    gpus: int = 0
    python: str = sys.executable
    delete_checkpoints: bool = False
    dry_run: bool = False
    benchmark: Benchmark = VTAB
    configs_dir: Optional[str] = None  # None: the installed package's
    tools_dir: Optional[str] = None  # None: the installed package's

    def __post_init__(self):
        b = self.benchmark
        m = b.method(self.method)
        self.lrs = tuple(m.lrs if self.lrs is None else self.lrs)
        self.wds = tuple(m.wds if self.wds is None else self.wds)
        self.tasks = tuple(b.tasks if self.tasks is None else self.tasks)
        if self.data_root is None:
            self.data_root = b.data_root
        self.seeds = tuple(self.seeds)
        if not (self.lrs and self.wds and self.seeds and self.tasks):
            raise ValueError('lrs, wds, seeds and tasks must not be empty')
        for name, values in (('lrs', self.lrs), ('wds', self.wds),
                             ('seeds', self.seeds), ('tasks', self.tasks)):
            if len(set(values)) != len(values):
                raise ValueError(f'{name} has repeated values: {values}')
        unknown = [t for t in self.tasks if t not in b.tasks]
        if unknown and b.custom_task is None:
            raise ValueError(f'tasks {unknown} are not {b.name} tasks; '
                             f'choose from {list(b.tasks)}')
        if unknown and self.num_classes is None:
            raise ValueError(
                f'tasks {unknown} are not {b.name} tasks; give num_classes '
                '(--num-classes) for generated or custom tasks')
        if self.gpus < 0:
            raise ValueError(f'gpus must be >= 0, got {self.gpus}')

    @property
    def method_dir(self) -> Path:
        return Path(self.work_dir) / self.method

    def config_dir(self) -> Path:
        """The benchmark's folder of the configs folder in use."""
        return self.benchmark.config_dir(self.configs_dir)

    def tools(self) -> Path:
        """The tools folder in use, holding ``train.py`` and ``test.py``."""
        folder = tools_folder(self.tools_dir)
        for tool in ('train.py', 'test.py'):
            if not (folder / tool).is_file():
                raise FileNotFoundError(
                    f'{folder / tool} not found: tools_dir (--tools-dir) '
                    'must be the tools/ folder that holds train.py and '
                    'test.py')
        return folder


@dataclass
class Job:
    stage: str
    task: str
    lr: float
    wd: float
    seed: int
    work_dir: Path
    config: Path
    options: List[str] = field(default_factory=list)

    @property
    def result_file(self) -> Path:
        return self.work_dir / RESULT_FILE

    def describe(self) -> str:
        return (f'{self.task} lr={_num(self.lr)} wd={_num(self.wd)} '
                f'seed={self.seed}')

    def done(self) -> bool:
        return self.result_file.is_file()

    def result(self) -> dict:
        with open(self.result_file, encoding='utf-8') as f:
            return json.load(f)


class JobFailed(RuntimeError):
    pass


def write_task_config(settings: SweepSettings, task: str,
                      out_dir: Path) -> Path:
    """The config the task's jobs run: ``configs/<benchmark>/<task>.py``
    for ``vpt-deep`` (so edits there apply), else the method's base with
    the task lines (the benchmark's ``render``)."""
    config_dir = settings.config_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / 'config.py'
    b = settings.benchmark
    checked_in = config_dir / f'{task}.py'
    if settings.method == 'vpt-deep' and checked_in.is_file():
        text = (f'# {task}: the checked-in config\n'
                f"_base_ = ['{checked_in}']\n")
    elif task in b.tasks:
        text = b.render(task, settings.method,
                        base_dir=str(config_dir / '_base_'))
    else:
        # a generated / custom task: the method's base with the task lines
        text = b.custom_task(task, b.method(settings.method),
                             settings.num_classes,
                             str(config_dir / '_base_'))
    if not config.is_file() or config.read_text() != text:
        config.write_text(text)
    return config


def _data_options(settings: SweepSettings) -> List[str]:
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts.append(f'{loader}.dataset.data_root={settings.data_root}')
        if settings.num_classes is not None:
            opts.append(
                f'{loader}.dataset.num_classes={settings.num_classes}')
    return opts


def _common_options(settings: SweepSettings, lr: float, wd: float,
                    seed: int) -> List[str]:
    return [f'optim_wrapper.optimizer.lr={_num(lr)}',
            f'optim_wrapper.optimizer.weight_decay={_num(wd)}',
            f'randomness.seed={seed}'] + _data_options(settings)


def grid_jobs(settings: SweepSettings, task: str,
              config: Path) -> List[Job]:
    seed = settings.seeds[0]
    train, val, _, _ = settings.benchmark.splits
    jobs = []
    for lr in settings.lrs:
        for wd in settings.wds:
            options = _common_options(settings, lr, wd, seed) + [
                f'train_dataloader.dataset.split={train}',
                f'val_dataloader.dataset.split={val}',
                # the grid only needs the val accuracy
                'default_hooks.checkpoint=None',
            ]
            jobs.append(Job(
                GRID_STAGE, task, lr, wd, seed,
                settings.method_dir / task / GRID_STAGE /
                f'lr{_num(lr)}_wd{_num(wd)}', config,
                options + list(settings.cfg_options)))
    return jobs


def final_jobs(settings: SweepSettings, task: str, config: Path, lr: float,
               wd: float) -> List[Job]:
    # the validation loop is off, so options for it cannot apply
    user = [o for o in settings.cfg_options if not o.startswith(
        ('val_dataloader', 'val_cfg', 'val_evaluator'))]
    _, _, train, test = settings.benchmark.splits
    jobs = []
    for seed in settings.seeds:
        options = _common_options(settings, lr, wd, seed) + [
            f'train_dataloader.dataset.split={train}',
            f'test_dataloader.dataset.split={test}',
            # no validation: the test split is evaluated by tools/test.py
            'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None',
        ]
        jobs.append(Job(FINAL_STAGE, task, lr, wd, seed,
                        settings.method_dir / task / FINAL_STAGE /
                        f'seed{seed}', config, options + user))
    return jobs


def select_best(results: Sequence[dict]) -> dict:
    """The grid result with the best val top-1; ties: smaller lr, then
    smaller weight decay."""
    if not results:
        raise ValueError('no grid results to select from')
    return min(results, key=lambda r: (-r['top1'], r['lr'], r['wd']))


def latest_metric(run_dir: Path, filename_glob: str,
                  key: str = 'accuracy/top1') -> float:
    """The last ``key`` value mmengine logged as JSON under ``run_dir``
    (``<timestamp>/vis_data/scalars.json`` for validation in training,
    ``<timestamp>/<timestamp>.json`` for tools/test.py); the newest run's
    file wins."""
    files = sorted(run_dir.glob(filename_glob),
                   key=lambda p: p.stat().st_mtime)
    for file in reversed(files):
        value = None
        for line in file.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if key in record:
                value = float(record[key])
        if value is not None:
            return value
    raise JobFailed(f'no {key!r} was logged under {run_dir} '
                    f'({filename_glob})')


class Runner:
    """Runs jobs as subprocesses on a pool of devices."""

    def __init__(self, settings: SweepSettings, log: Log = print):
        self.s = settings
        self.log = log
        self._lock = threading.Lock()
        self.devices: 'Queue[Optional[int]]' = Queue()
        for device in (range(settings.gpus) if settings.gpus else [None]):
            self.devices.put(device)
        self.workers = max(1, settings.gpus)
        self.failures: List[str] = []
        self.tools = settings.tools()

    def _say(self, msg: str) -> None:
        with self._lock:
            self.log(msg)

    def _env(self, device: Optional[int]) -> Dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        if self.s.gpus:
            env['CUDA_VISIBLE_DEVICES'] = str(device)
        return env

    def _call(self, cmd: List[str], log_file: Path,
              device: Optional[int]) -> None:
        with open(log_file, 'w', encoding='utf-8') as f:
            f.write('$ ' + ' '.join(map(str, cmd)) + '\n')
            f.flush()
            proc = subprocess.run([str(c) for c in cmd], stdout=f,
                                  stderr=subprocess.STDOUT,
                                  env=self._env(device))
        if proc.returncode != 0:
            tail = log_file.read_text(errors='replace').splitlines()[-15:]
            raise JobFailed(f'exit code {proc.returncode}, see {log_file}:\n'
                            + '\n'.join('    ' + t for t in tail))

    def commands(self, job: Job) -> List[List[str]]:
        train = [self.s.python, self.tools / 'train.py', job.config,
                 '--work-dir', job.work_dir, '--cfg-options', *job.options]
        if job.stage == GRID_STAGE:
            return [train]
        test = [self.s.python, self.tools / 'test.py', job.config,
                '<last checkpoint>', '--work-dir', job.work_dir / 'test',
                '--cfg-options', *job.options]
        return [train, test]

    def _execute(self, job: Job, device: Optional[int]) -> dict:
        if job.work_dir.exists():
            # a half-finished earlier attempt: start clean
            shutil.rmtree(job.work_dir)
        job.work_dir.mkdir(parents=True)
        start = time.time()
        train, *rest = self.commands(job)
        self._call(train, job.work_dir / 'train.log', device)
        b = self.s.benchmark
        record = dict(stage=job.stage, benchmark=b.table.key,
                      method=self.s.method,
                      backbone=b.method(self.s.method).backbone,
                      task=job.task, lr=job.lr, wd=job.wd, seed=job.seed,
                      config=str(job.config), cfg_options=job.options)
        if job.stage == GRID_STAGE:
            record.update(split=b.splits[1], top1=latest_metric(
                job.work_dir, '*/vis_data/scalars.json'))
        else:
            last = job.work_dir / 'last_checkpoint'
            if not last.is_file():
                raise JobFailed(f'training wrote no checkpoint ({last})')
            checkpoint = last.read_text().strip()
            test = rest[0]
            test[test.index('<last checkpoint>')] = checkpoint
            self._call(test, job.work_dir / 'test.log', device)
            record.update(split=b.splits[3], checkpoint=checkpoint,
                          top1=latest_metric(job.work_dir / 'test',
                                             '*/[0-9]*.json'))
            if self.s.delete_checkpoints:
                for ckpt in job.work_dir.glob('*.pth'):
                    ckpt.unlink()
                record['checkpoint'] = None
        record['seconds'] = round(time.time() - start, 1)
        # atomic: a result file is complete or absent
        write_text_atomically(str(job.result_file),
                              json.dumps(record, indent=2) + '\n')
        return record

    def run(self, jobs: Sequence[Job], title: str) -> List[dict]:
        """Run ``jobs`` (skipping finished ones); returns the results of the
        jobs that finished, logs failures and re-raises none."""
        finished = [j.done() for j in jobs]
        todo = [j for j, done in zip(jobs, finished) if not done]
        results = [j.result() for j, done in zip(jobs, finished) if done]
        n = len(jobs)
        where = (f' on {self.s.gpus} GPU(s)' if self.s.gpus else
                 ' on the CPU, one at a time')
        self._say(f'{title}: {n} jobs, {n - len(todo)} already done, '
                  f'{len(todo)} to run' +
                  (where if todo and not self.s.dry_run else ''))
        if self.s.dry_run:
            for job in todo:
                for cmd in self.commands(job):
                    self._say('  ' + ' '.join(map(str, cmd)))
            return results
        counter = {'done': n - len(todo)}

        def work(job: Job) -> Optional[dict]:
            device = self.devices.get()
            try:
                where = '' if device is None else f' [gpu {device}]'
                self._say(f'  start {job.stage} {job.describe()}{where}')
                record = self._execute(job, device)
            except Exception as e:  # noqa: BLE001 (reported, sweep goes on)
                with self._lock:
                    counter['done'] += 1
                    self.failures.append(f'{job.stage} {job.describe()}')
                    self.log(f'  [{counter["done"]}/{n}] FAILED {job.stage} '
                             f'{job.describe()}: {e}')
                return None
            finally:
                self.devices.put(device)
            with self._lock:
                counter['done'] += 1
                metric = 'val' if job.stage == GRID_STAGE else 'test'
                self.log(f'  [{counter["done"]}/{n}] {job.stage} '
                         f'{job.describe()}: {metric} top-1 '
                         f'{record["top1"]:.2f} ({record["seconds"]:.0f} s)')
            return record

        with ThreadPoolExecutor(self.workers) as pool:
            for record in pool.map(work, todo):
                if record is not None:
                    results.append(record)
        return results


def run_sweep(settings: SweepSettings, log: Log = print) -> int:
    """Grid, selection, final runs and the table. Returns the number of
    failed jobs (0 on success)."""
    s = settings
    b = s.benchmark
    runner = Runner(s, log)
    method = b.method(s.method)
    grid_train, grid_val, final_train, final_test = b.splits
    log(f'{b.name} sweep: {s.method} ({method.backbone}), '
        f'{len(s.tasks)} task(s), grid {len(s.lrs)} lr x {len(s.wds)} wd, '
        f'seeds {list(s.seeds)} -> {s.method_dir}')
    configs = {t: write_task_config(s, t, s.method_dir / t) for t in s.tasks}

    grid = [j for t in s.tasks for j in grid_jobs(s, t, configs[t])]
    grid_results = runner.run(
        grid, f'Stage 1/2, grid on {grid_train} -> {grid_val}')

    finals = []
    for task in s.tasks:
        expected = [j for j in grid if j.task == task]
        got = [r for r in grid_results if r['task'] == task]
        if s.dry_run:
            best = dict(lr=s.lrs[0], wd=s.wds[0], top1=float('nan'))
        elif len(got) < len(expected):
            log(f'  {task}: {len(expected) - len(got)} grid job(s) missing '
                '(failed); no final runs for this task')
            continue
        else:
            best = select_best(got)
            selected = dict(task=task, lr=best['lr'], wd=best['wd'],
                            val_top1=best['top1'],
                            grid=[dict(lr=r['lr'], wd=r['wd'],
                                       top1=r['top1']) for r in got])
            (s.method_dir / task / 'selected.json').write_text(
                json.dumps(selected, indent=2) + '\n')
            log(f'  {task}: selected lr={_num(best["lr"])} '
                f'wd={_num(best["wd"])} (val top-1 {best["top1"]:.2f})')
        finals += final_jobs(s, task, configs[task], best['lr'], best['wd'])
    runner.run(finals,
               f'Stage 2/2, final {final_train} -> {final_test}')

    if not s.dry_run:
        records = load_results([str(s.method_dir)], table=b.table)
        if records:
            summaries = summarize(records, b.table)
            table = format_report(summaries, 'markdown')
            (s.method_dir / 'results.md').write_text(table)
            (s.method_dir / 'results.csv').write_text(
                format_report(summaries, 'csv'))
            log('')
            log(table)
            log(f'Tables written to {s.method_dir / "results.md"} and '
                f'{s.method_dir / "results.csv"}')
    if runner.failures:
        log(f'{len(runner.failures)} job(s) failed (rerun the same command '
            'to retry them; finished jobs are skipped): ' +
            '; '.join(runner.failures))
    return len(runner.failures)
