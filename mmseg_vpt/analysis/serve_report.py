"""The serving benchmark's results as text: the Markdown summary printed
by ``tools/analysis/serve_benchmark.py`` and its JSON / Markdown files."""
import json
import os
import os.path as osp
from typing import List

from ..utils.config import read_config
from .serve_load import PROMPT_LENGTHS


def prompts_label(config: str, num_tasks: int, mixed_lengths: bool) -> str:
    """How the report names the tasks' prompts."""
    if mixed_lengths:
        return f'prompt lengths {list(PROMPT_LENGTHS[:num_tasks])}'
    cfg = read_config(config)
    return f'prompt_length {cfg.model.backbone.get("prompt_length", 10)}'


def unanswered_modes(result: dict) -> List[str]:
    """The modes of ``result['servers']`` whose load lost requests."""
    return [r['mode'] for r in result['servers']
            if r.get('load') and r['load']['answered'] != r['load']['sent']]


def format_report(result: dict) -> str:
    """The Markdown summary of a benchmark ``result``: the run's header
    (``config``, ``tasks``, ``prompts``, ``threads``), the ``backbone``
    comparison if measured, one table row per entry of ``servers``, and
    memory against ``one_segmentor`` plus ``task_file_bytes``."""
    mb = 1 / 2**20
    lines = [f'Serving {result["tasks"]} tasks of `{result["config"]}` '
             f'({result["prompts"]}), {result["threads"]} thread(s)', '']
    b = result.get('backbone')
    if b:
        lines += [
            f'Backbone forward, batch {b["batch"]} at {b["input"]} px: '
            f'single task {b["single_ms"]:.1f} ms, {b["batch"]} tasks '
            f'{b["mixed_ms"]:.1f} ms, ratio **{b["ratio"]:.3f}** (goal <= '
            f'1.15; per pair {b["ratios"]})',
            f'The same {b["batch"]} samples one by one (batch 1, as '
            f'separate segmentors run them): {b["one_by_one_ms"]:.1f} ms, '
            f'so batching them gains {b["batching_gain"]:.2f}x on this '
            'device: the most that sharing the backbone pass can add to '
            'throughput.', '']
    base = result['one_segmentor']['memory']['VmRSS']
    files = result['task_file_bytes']
    lines += ['| server | throughput (req/s) | p50 ms | p95 ms | answered '
              '/ sent | mean batch | RSS MB | peak MB | RSS / (one '
              'segmentor + task files) |', '|---|---|---|---|---|---|---|'
              '---|---|']
    for r in result['servers']:
        load = r.get('load')
        m = r.get('server_metrics') or {}
        ratio = r['memory']['VmRSS'] / (base + files)
        cells = ['-'] * 5 if not load else [
            f'{load["throughput"]:.2f}', f'{load["p50_ms"]:.0f}',
            f'{load["p95_ms"]:.0f}', f'{load["answered"]} / {load["sent"]}',
            f'{m.get("mean_batch_size", float("nan")):.2f}']
        lines.append(' | '.join(
            [f'| {r["mode"]}', *cells, f'{r["memory"]["VmRSS"] * mb:.0f}',
             f'{r["memory"]["VmHWM"] * mb:.0f}', f'{ratio:.2f} |']))
    lines += ['', f'One segmentor (a `separate` server with one task): RSS '
              f'{base * mb:.0f} MB; the {result["tasks"]} task files: '
              f'{files * mb:.1f} MB.']
    t = {r['mode']: (r.get('load') or {}).get('throughput')
         for r in result['servers']}
    if t.get('mixed') and t.get('separate'):
        lines.append(f'Throughput mixed / separate: '
                     f'**{t["mixed"] / t["separate"]:.2f}x** (goal >= 3); '
                     f'mixed / per_task: {t["mixed"] / t["per_task"]:.2f}x.'
                     if t.get('per_task') else '')
    mixed = next((r for r in result['servers'] if r['mode'] == 'mixed'),
                 None)
    if mixed:
        lines.append(f'Memory mixed / (one segmentor + task files): '
                     f'**{mixed["memory"]["VmRSS"] / (base + files):.2f}** '
                     '(goal <= 1.2).')
    return '\n'.join(lines)


def write_results(result: dict, table: str, out: str) -> None:
    """``result`` as JSON to ``out``, and ``table`` beside it (``.md``)."""
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
    with open(osp.splitext(out)[0] + '.md', 'w') as f:
        f.write(table + '\n')


__all__ = ['format_report', 'prompts_label', 'unanswered_modes',
           'write_results']
