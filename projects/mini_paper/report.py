"""The mini-paper's table and plot: mIoU by protocol over seeds, against
tunable parameters."""
from collections import OrderedDict
from typing import Dict, List

import numpy as np

from .config import PROTOCOL_NAMES
from .data import SYNTHETIC_NOTE


def summarize(result: dict) -> List[dict]:
    """One row per protocol: mean/min/max mIoU over seeds, tunable params."""
    by_protocol: Dict[str, List[dict]] = OrderedDict()
    for run in result['runs']:
        for row in run['rows']:
            by_protocol.setdefault(row['protocol'], []).append(row)
    out = []
    full_tunable = None
    for protocol, rows in by_protocol.items():
        mious = np.array([r['miou'] for r in rows])
        if protocol == 'full':
            full_tunable = rows[0]['tunable']
        out.append(dict(protocol=protocol, name=PROTOCOL_NAMES[protocol],
                        miou_mean=float(mious.mean()),
                        miou_std=float(mious.std()),
                        miou_min=float(mious.min()),
                        miou_max=float(mious.max()),
                        mious=mious.tolist(),
                        tunable=rows[0]['tunable'], total=rows[0]['total'],
                        seconds=float(np.mean([r['seconds'] for r in rows]))))
    head = next((r['mious'] for r in out if r['protocol'] == 'head_only'),
                None)
    for row in out:
        row['tunable_pct'] = (100.0 * row['tunable'] / full_tunable
                              if full_tunable else float('nan'))
        # paired by seed: the same pretrained backbone, data and head init
        row['gain_vs_head_only'] = None if head is None else [
            m - h for m, h in zip(row['mious'], head)]
    return out


def format_table(result: dict) -> str:
    rows = summarize(result)
    seeds = result['seeds']
    lines = [
        f'Mini-paper: {result["config"]["pretrain_task"]}-pretrained ViT '
        f'adapted to segmentation by {result["config"]["downstream_task"]} '
        f'(seeds {", ".join(map(str, seeds))})',
        f'NOTE: {SYNTHETIC_NOTE}', '',
        '| protocol | mIoU (mean +- std) | per seed | vs Head-only, per '
        'seed: min / mean | tunable params | % of full |',
        '|---|---|---|---|---|---|'
    ]
    for r in rows:
        per_seed = ' / '.join(f'{m:.3f}' for m in r['mious'])
        gain = r['gain_vs_head_only']
        gain = '-' if not gain or r['protocol'] == 'head_only' else \
            f'{min(gain):+.3f} / {np.mean(gain):+.3f}'
        pct = r['tunable_pct']  # nan: no Full row in this run
        pct = '-' if np.isnan(pct) else f'{pct:.2f}%'
        lines.append(
            f'| {r["name"]} | {r["miou_mean"]:.3f} +- {r["miou_std"]:.3f} | '
            f'{per_seed} | {gain} | {r["tunable"]:,} | {pct} |')
    return '\n'.join(lines)


def plot_results(result: dict, path: str) -> None:
    """mIoU (mean over seeds, min-max bars) against tunable parameters,
    log x-axis."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = summarize(result)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    markers = dict(full='s', head_only='o', bias='^', vpt_shallow='v',
                   vpt_deep='*', vpt_bias='P', vpt_deep_x3='X',
                   adapter='D', partial_1='h', vpt_deep_shared='p',
                   vpt_deep_add='+', vpt_shallow_pixel='<',
                   vpt_shallow_concat='>')
    for r in rows:
        yerr = [[r['miou_mean'] - r['miou_min']],
                [r['miou_max'] - r['miou_mean']]]
        bars = ax.errorbar(r['tunable'], r['miou_mean'], yerr=yerr,
                           fmt=markers.get(r['protocol'], 'o'), ms=9,
                           capsize=4,
                           label=f'{r["name"]} ({r["miou_mean"]:.3f})')
        if len(r['mious']) > 1:  # each seed, small and to the right
            ax.scatter([r['tunable'] * 1.18] * len(r['mious']), r['mious'],
                       s=9, color=bars[0].get_color(), alpha=0.6)
    ax.set_xscale('log')
    ax.set_xlabel('tunable parameters (log scale)')
    ax.set_ylabel('downstream mIoU')
    cfg = result['config']
    ax.set_title(f'Mini-paper on SYNTHETIC data: {cfg["pretrain_task"]} -> '
                 f'{cfg["downstream_task"]}, {len(result["seeds"])} seed(s)',
                 fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    fig.text(0.01, 0.01, 'synthetic data; mean over seeds, bars: min-max, '
             'dots: seeds',
             fontsize=7, alpha=0.7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
