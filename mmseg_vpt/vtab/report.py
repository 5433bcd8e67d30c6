"""Collect VTAB-1k result files and lay them out like the paper's tables.

A finished final run of ``tools/vtab_sweep.py`` leaves a ``result.json``
(one seed of one task: test top-1 and the chosen lr / weight decay). This
module gathers them, averages over seeds (mean and sample std), averages
tasks into the paper's group means (Natural / Specialized / Structured: the
plain mean of the group's per-task accuracies) and prints them beside the
paper's group means.

A group mean over only some of its tasks is shown with the count, e.g.
``61.20 (2/7)``; it is not comparable with the paper's number.
"""
import csv
import io
import json
import math
import os
import os.path as osp
from collections import OrderedDict, defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .tasks import (GROUPS, METHODS, PAPER_GROUP_MEANS, TASKS,
                    tasks_in_group)

RESULT_FILE = 'result.json'
FINAL_STAGE = 'final'

Key = Tuple[str, str]  # (backbone, method)


def find_result_files(paths: Sequence[str]) -> List[str]:
    """Every ``result.json`` under ``paths`` (files or folders), sorted."""
    found = []
    for path in paths:
        if osp.isfile(path):
            found.append(path)
            continue
        if not osp.isdir(path):
            raise FileNotFoundError(f'no such file or folder: {path}')
        for dirpath, _, files in os.walk(path):
            if RESULT_FILE in files:
                found.append(osp.join(dirpath, RESULT_FILE))
    return sorted(found)


def load_results(paths: Sequence[str],
                 stage: str = FINAL_STAGE) -> List[dict]:
    """The records of ``stage`` (``'final'``: test accuracy; ``'grid'``:
    val accuracy) from the result files under ``paths``."""
    records = []
    for file in find_result_files(paths):
        with open(file, encoding='utf-8') as f:
            try:
                record = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f'{file}: not a valid result file ({e})')
        for key in ('stage', 'method', 'task', 'top1'):
            if key not in record:
                raise ValueError(f'{file}: result file lacks {key!r}')
        if record['stage'] == stage:
            record.setdefault('backbone', _backbone(record['method']))
            record['file'] = file
            records.append(record)
    return records


def _backbone(method: str) -> str:
    return METHODS[method].backbone if method in METHODS else '?'


def _paper_method(method: str) -> str:
    return METHODS[method].paper_name if method in METHODS else method


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean)**2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


class Summary:
    """Per-task and per-group accuracy of one (backbone, method)."""

    def __init__(self, backbone: str, method: str, records: List[dict]):
        self.backbone = backbone
        self.method = method
        by_task: Dict[str, Dict[int, float]] = defaultdict(dict)
        for r in records:
            # one value per seed (a re-run of a seed replaces the old one)
            by_task[r['task']][r.get('seed', len(by_task[r['task']]))] = \
                float(r['top1'])
        order = list(TASKS) + sorted(t for t in by_task if t not in TASKS)
        self.tasks: 'OrderedDict[str, Tuple[float, float, int]]' = \
            OrderedDict()
        for task in order:
            if task in by_task:
                values = list(by_task[task].values())
                self.tasks[task] = (*mean_std(values), len(values))

    def group_mean(self, group: str) -> Tuple[Optional[float], int, int]:
        """(mean over the group's tasks present, tasks present, tasks in
        the group)."""
        members = tasks_in_group(group)
        present = [self.tasks[t][0] for t in members if t in self.tasks]
        mean = sum(present) / len(present) if present else None
        return mean, len(present), len(members)

    @property
    def paper(self) -> Optional[Tuple[float, float, float]]:
        return PAPER_GROUP_MEANS.get(
            (self.backbone, _paper_method(self.method)))


def summarize(records: Iterable[dict]) -> List[Summary]:
    grouped: Dict[Key, List[dict]] = defaultdict(list)
    for r in records:
        grouped[(r['backbone'], r['method'])].append(r)
    method_order = {m: i for i, m in enumerate(METHODS)}
    keys = sorted(grouped, key=lambda k: (k[0], method_order.get(
        k[1], len(method_order)), k[1]))
    return [Summary(b, m, grouped[(b, m)]) for b, m in keys]


def _fmt(value: Optional[float]) -> str:
    return '' if value is None else f'{value:.2f}'


def group_rows(summaries: Sequence[Summary],
               with_paper: bool = True) -> List[List[str]]:
    """Rows of the group table: backbone, method, source, the three group
    means, tasks done; a paper row precedes ours when the paper has one."""
    rows = []
    for s in summaries:
        if with_paper and s.paper is not None:
            rows.append([s.backbone, s.method, 'paper'] +
                        [_fmt(v) for v in s.paper] + ['19/19'])
        cells = []
        for group in GROUPS:
            mean, present, total = s.group_mean(group)
            cell = _fmt(mean)
            if mean is not None and present < total:
                cell += f' ({present}/{total})'
            cells.append(cell)
        done = sum(1 for t in s.tasks if t in TASKS)
        rows.append([s.backbone, s.method, 'ours'] + cells +
                    [f'{done}/{len(TASKS)}'])
    return rows


def task_rows(summaries: Sequence[Summary]) -> Tuple[List[str],
                                                     List[List[str]]]:
    """Header and rows of the per-task table (mean +- std over seeds)."""
    tasks = []
    for s in summaries:
        tasks += [t for t in s.tasks if t not in tasks]
    order = {t: i for i, t in enumerate(TASKS)}
    tasks.sort(key=lambda t: (order.get(t, len(order)), t))
    header = ['backbone', 'method'] + tasks
    rows = []
    for s in summaries:
        row = [s.backbone, s.method]
        for t in tasks:
            if t in s.tasks:
                mean, std, n = s.tasks[t]
                row.append(f'{mean:.2f} ± {std:.2f} (n={n})')
            else:
                row.append('')
        rows.append(row)
    return header, rows


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)


GROUP_HEADER = ['backbone', 'method', 'source'] + list(GROUPS) + ['tasks']


def format_report(summaries: Sequence[Summary], fmt: str = 'markdown',
                  with_paper: bool = True) -> str:
    """The group table (ours beside the paper) and the per-task table."""
    if fmt not in ('markdown', 'csv'):
        raise ValueError(f"format must be 'markdown' or 'csv', got {fmt!r}")
    groups = group_rows(summaries, with_paper)
    header, tasks = task_rows(summaries)
    if fmt == 'csv':
        out = io.StringIO()
        writer = csv.writer(out, lineterminator='\n')
        writer.writerow(['table'] + GROUP_HEADER)
        for row in groups:
            writer.writerow(['groups'] + row)
        writer.writerow([])
        writer.writerow(['table'] + header)
        for row in tasks:
            writer.writerow(['tasks'] + row)
        return out.getvalue()
    parts = [
        '## VTAB-1k top-1 (%): group means, ours beside the paper',
        '',
        _markdown(GROUP_HEADER, groups),
        '',
        'Group mean = plain mean of the per-task means of its tasks; '
        '"(k/n)": only k of the n tasks have results, not comparable with '
        'the paper.',
        '',
        '## Per task: test top-1 mean ± sample std over seeds',
        '',
        _markdown(header, tasks) if tasks else '(no results)',
        '',
    ]
    return '\n'.join(parts)


def report(paths: Sequence[str], fmt: str = 'markdown',
           with_paper: bool = True) -> str:
    records = load_results(paths)
    if not records:
        raise FileNotFoundError(
            f'no final VTAB results ({RESULT_FILE} with stage '
            f'"{FINAL_STAGE}") under {list(paths)}')
    return format_report(summarize(records), fmt, with_paper)
