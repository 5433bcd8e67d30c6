"""Collect VTAB-1k result files and lay them out like the paper's tables.

A finished final run of ``tools/vtab_sweep.py`` leaves a ``result.json``
(one seed of one task: test top-1 and the chosen lr / weight decay). This
module gathers them, averages over seeds (mean and sample std), averages
tasks into the paper's group means (Natural / Specialized / Structured: the
plain mean of the group's per-task accuracies) and prints them beside the
paper's group means.

A group mean over only some of its tasks is shown with the count, e.g.
``61.20 (2/7)``; it is not comparable with the paper's number.

Other benchmarks (FGVC, :mod:`mmseg_vpt.fgvc.benchmark`) use the same code
with their own :class:`ResultTable` (tasks, groups, methods, paper
numbers); every function takes one and defaults to :data:`VTAB_TABLE`.
"""
import csv
import io
import json
import math
import os
import os.path as osp
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import (Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple)

from .table import Method
from .tasks import GROUPS, METHODS, PAPER_GROUP_MEANS, TASKS, tasks_in_group

RESULT_FILE = 'result.json'
FINAL_STAGE = 'final'

Key = Tuple[str, str]  # (backbone, method)


@dataclass(frozen=True)
class ResultTable:
    """How a benchmark's results are tabulated.

    Args:
        key: Name in result files (``record['benchmark']``; records without
            it are VTAB's).
        title: Heading of the tables, e.g. ``'VTAB-1k'``.
        tasks: Task names in the paper's column order.
        groups: Group name -> its tasks, in column order (a group may be a
            single task, or all of them).
        methods: Method name -> :class:`~mmseg_vpt.vtab.table.Method`.
        paper: (backbone, paper method) -> the paper's value per group.
        paper_decimals: Decimals the paper's values are printed with.
        caption: What the group columns are (in the heading).
        footnote: Line under the group table.
        paper_rows: (label, key into ``paper`` or None) of the paper's rows
            to list in a table of their own, whatever we ran; None leaves
            the row empty (the paper's value is not in ``paper``).
        paper_note: Line under that table (where the numbers come from).
    """
    key: str
    title: str
    tasks: Tuple[str, ...]
    groups: 'OrderedDict[str, Tuple[str, ...]]'
    methods: Mapping[str, Method]
    paper: Mapping[Key, Tuple[float, ...]]
    paper_decimals: int = 2
    caption: str = 'group means'
    footnote: str = (
        'Group mean = plain mean of the per-task means of its tasks; '
        '"(k/n)": only k of the n tasks have results, not comparable with '
        'the paper.')
    paper_rows: Tuple[Tuple[str, Optional[Key]], ...] = ()
    paper_note: str = ''
    label: str = 'VTAB'  # in "no final ... results"

    @property
    def header(self) -> List[str]:
        return ['backbone', 'method', 'source'] + list(self.groups) + [
            'tasks']


VTAB_TABLE = ResultTable(
    key='vtab', title='VTAB-1k', tasks=tuple(TASKS),
    groups=OrderedDict((g, tuple(tasks_in_group(g))) for g in GROUPS),
    methods=METHODS, paper=PAPER_GROUP_MEANS)


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


def load_results(paths: Sequence[str], stage: str = FINAL_STAGE,
                 table: ResultTable = VTAB_TABLE) -> List[dict]:
    """The records of ``stage`` (``'final'``: test accuracy; ``'grid'``:
    val accuracy) of ``table``'s benchmark from the result files under
    ``paths`` (records of other benchmarks are skipped)."""
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
        if (record['stage'] == stage and
                record.get('benchmark', VTAB_TABLE.key) == table.key):
            record.setdefault('backbone',
                              _backbone(record['method'], table))
            record['file'] = file
            records.append(record)
    return records


def _backbone(method: str, table: ResultTable = VTAB_TABLE) -> str:
    return (table.methods[method].backbone if method in table.methods
            else '?')


def _paper_method(method: str, table: ResultTable = VTAB_TABLE) -> str:
    return (table.methods[method].paper_name if method in table.methods
            else method)


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

    def __init__(self, backbone: str, method: str, records: List[dict],
                 table: ResultTable = VTAB_TABLE):
        self.backbone = backbone
        self.method = method
        self.table = table
        by_task: Dict[str, Dict[int, float]] = defaultdict(dict)
        for r in records:
            # one value per seed (a re-run of a seed replaces the old one)
            by_task[r['task']][r.get('seed', len(by_task[r['task']]))] = \
                float(r['top1'])
        order = list(table.tasks) + sorted(t for t in by_task
                                           if t not in table.tasks)
        self.tasks: 'OrderedDict[str, Tuple[float, float, int]]' = \
            OrderedDict()
        for task in order:
            if task in by_task:
                values = list(by_task[task].values())
                self.tasks[task] = (*mean_std(values), len(values))

    def group_mean(self, group: str) -> Tuple[Optional[float], int, int]:
        """(mean over the group's tasks present, tasks present, tasks in
        the group)."""
        members = self.table.groups[group]
        present = [self.tasks[t][0] for t in members if t in self.tasks]
        mean = sum(present) / len(present) if present else None
        return mean, len(present), len(members)

    @property
    def paper(self) -> Optional[Tuple[float, ...]]:
        return self.table.paper.get(
            (self.backbone, _paper_method(self.method, self.table)))


def summarize(records: Iterable[dict],
              table: ResultTable = VTAB_TABLE) -> List[Summary]:
    grouped: Dict[Key, List[dict]] = defaultdict(list)
    for r in records:
        grouped[(r['backbone'], r['method'])].append(r)
    method_order = {m: i for i, m in enumerate(table.methods)}
    keys = sorted(grouped, key=lambda k: (k[0], method_order.get(
        k[1], len(method_order)), k[1]))
    return [Summary(b, m, grouped[(b, m)], table) for b, m in keys]


def _fmt(value: Optional[float], decimals: int = 2) -> str:
    return '' if value is None else f'{value:.{decimals}f}'


def _table_of(summaries: Sequence[Summary]) -> ResultTable:
    return summaries[0].table if summaries else VTAB_TABLE


def group_rows(summaries: Sequence[Summary],
               with_paper: bool = True) -> List[List[str]]:
    """Rows of the group table: backbone, method, source, the group
    means, tasks done; a paper row precedes ours when the paper has one."""
    table = _table_of(summaries)
    n_tasks = len(table.tasks)
    rows = []
    for s in summaries:
        if with_paper and s.paper is not None:
            rows.append([s.backbone, s.method, 'paper'] +
                        [_fmt(v, table.paper_decimals) for v in s.paper] +
                        [f'{n_tasks}/{n_tasks}'])
        cells = []
        for group in table.groups:
            mean, present, total = s.group_mean(group)
            cell = _fmt(mean)
            if mean is not None and present < total:
                cell += f' ({present}/{total})'
            cells.append(cell)
        done = sum(1 for t in s.tasks if t in table.tasks)
        rows.append([s.backbone, s.method, 'ours'] + cells +
                    [f'{done}/{n_tasks}'])
    return rows


def paper_rows(table: ResultTable) -> List[List[str]]:
    """The paper's rows listed in ``table.paper_rows`` (empty cells: not
    read from a source)."""
    rows = []
    for label, key in table.paper_rows:
        values = table.paper.get(key) if key is not None else None
        backbone = key[0] if key is not None else ''
        cells = ([_fmt(v, table.paper_decimals) for v in values]
                 if values else [''] * len(table.groups))
        rows.append([backbone, label, 'paper'] + cells +
                    [f'{len(table.tasks)}/{len(table.tasks)}'
                     if values else 'not verified'])
    return rows


def task_rows(summaries: Sequence[Summary]) -> Tuple[List[str],
                                                     List[List[str]]]:
    """Header and rows of the per-task table (mean +- std over seeds)."""
    table = _table_of(summaries)
    tasks = []
    for s in summaries:
        tasks += [t for t in s.tasks if t not in tasks]
    order = {t: i for i, t in enumerate(table.tasks)}
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


GROUP_HEADER = VTAB_TABLE.header


def format_report(summaries: Sequence[Summary], fmt: str = 'markdown',
                  with_paper: bool = True,
                  table: Optional[ResultTable] = None) -> str:
    """The group table (ours beside the paper), the per-task table and,
    when ``table`` lists them, the paper's rows."""
    if fmt not in ('markdown', 'csv'):
        raise ValueError(f"format must be 'markdown' or 'csv', got {fmt!r}")
    table = table or _table_of(summaries)
    groups = group_rows(summaries, with_paper)
    header, tasks = task_rows(summaries)
    paper = paper_rows(table) if with_paper else []
    if fmt == 'csv':
        out = io.StringIO()
        writer = csv.writer(out, lineterminator='\n')
        writer.writerow(['table'] + table.header)
        for row in groups:
            writer.writerow(['groups'] + row)
        writer.writerow([])
        writer.writerow(['table'] + header)
        for row in tasks:
            writer.writerow(['tasks'] + row)
        if paper:
            writer.writerow([])
            writer.writerow(['table'] + table.header)
            for row in paper:
                writer.writerow(['paper'] + row)
        return out.getvalue()
    parts = [
        f'## {table.title} top-1 (%): {table.caption}, ours beside the '
        'paper',
        '',
        _markdown(table.header, groups),
        '',
        table.footnote,
        '',
        '## Per task: test top-1 mean ± sample std over seeds',
        '',
        _markdown(header, tasks) if tasks else '(no results)',
        '',
    ]
    if paper:
        parts += [f"## The paper's {table.title} rows", '',
                  _markdown(table.header, paper), '', table.paper_note, '']
    return '\n'.join(parts)


def report(paths: Sequence[str], fmt: str = 'markdown',
           with_paper: bool = True,
           table: ResultTable = VTAB_TABLE) -> str:
    records = load_results(paths, table=table)
    if not records:
        raise FileNotFoundError(
            f'no final {table.label} results ({RESULT_FILE} with stage '
            f'"{FINAL_STAGE}") under {list(paths)}')
    return format_report(summarize(records, table), fmt, with_paper, table)
