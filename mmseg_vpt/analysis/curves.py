"""Training curves from mmengine's ``LocalVisBackend`` logs.

Every run of ``tools/train.py`` writes
``WORK_DIR/<timestamp>/vis_data/scalars.json``: one JSON object per line,
training lines (``loss``, ``lr``, ``decode.loss_ce`` ..., with ``step`` =
iteration) and validation lines (``mIoU``, ``aAcc``, ``mAcc`` with ``step``
= the iteration validated at).
"""
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

Series = Dict[str, List[Tuple[int, float]]]


def find_scalars(work_dir: Union[str, Path]) -> List[Path]:
    """``scalars.json`` files under ``work_dir`` (or the file itself), oldest
    run first (timestamped folders sort by time)."""
    path = Path(work_dir)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f'{work_dir}: no such folder')
    found = sorted(path.glob('*/vis_data/scalars.json')) + sorted(
        path.glob('vis_data/scalars.json'))
    if not found:
        raise FileNotFoundError(
            f'{work_dir}: no */vis_data/scalars.json (is it the --work-dir '
            'of a training run with the default LocalVisBackend?)')
    return found


def read_scalars(files: Sequence[Union[str, Path]]) -> Series:
    """key -> [(step, value)], over all files in order (a resumed run
    continues the previous one's steps)."""
    series: Series = {}
    for f in files:
        for line in Path(f).read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            step = rec.get('step', rec.get('iter'))
            if step is None:
                continue
            for key, value in rec.items():
                if key in ('step', 'iter', 'epoch') or not isinstance(
                        value, (int, float)):
                    continue
                series.setdefault(key, []).append((int(step), float(value)))
    return series


def plot_curves(work_dir: Union[str, Path], out: Union[str, Path],
                train_keys: Sequence[str] = ('loss', ),
                val_keys: Sequence[str] = ('mIoU', ),
                title: Optional[str] = None) -> List[str]:
    """Plot training losses and validation metrics to ``out`` (PNG); returns
    the keys plotted."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    files = find_scalars(work_dir)
    series = read_scalars(files)
    panels = [(k, 'train') for k in train_keys if k in series] + \
        [(k, 'val') for k in val_keys if k in series]
    if not panels:
        raise ValueError(
            f'none of {list(train_keys) + list(val_keys)} was logged in '
            f'{[str(f) for f in files]}; logged: {sorted(series)}')
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(4.8 * len(panels), 3.4), dpi=100)
    for ax, (key, kind) in zip(axes[0], panels):
        steps, values = zip(*series[key])
        ax.plot(steps, values, marker='o' if kind == 'val' else None,
                ms=4, lw=1.2)
        ax.set_xlabel('iteration')
        ax.set_title(f'{key} ({kind})', fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title or str(work_dir), fontsize=9)
    fig.tight_layout()
    fig.savefig(str(out))
    plt.close(fig)
    return [k for k, _ in panels]
