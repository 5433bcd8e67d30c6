"""benchmarks/gpu_check.sh at toy sizes on the CPU (``DEVICE=cpu TOY=1``):
every check runs its tool and writes its result file, so the script a GPU
session runs cannot rot between GPU sessions."""
import json
import os
import re
import subprocess

import pytest

from .tools_helpers import PYTHON, REPO


@pytest.mark.slow
def test_gpu_check_runs_every_check_at_toy_size(tmp_path):
    out, work = tmp_path / 'out', tmp_path / 'work'
    env = dict(os.environ, DEVICE='cpu', TOY='1', OUT=str(out),
               WORK=str(work), PY=PYTHON)
    proc = subprocess.run(['bash', str(REPO / 'benchmarks/gpu_check.sh')],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {'precision_vit', 'precision_swin', 'lean_vs_full_setr',
             'serve_mixed_vs_separate', 'giant_dinov3-7b16'}
    assert {p.stem for p in out.glob('*.md')} == names
    for name in names:  # each file names its command
        assert (out / f'{name}.md').read_text().startswith(
            f'# {name}\n\nCommand: `'), name

    for arch in ('vit', 'swin'):
        text = (out / f'precision_{arch}.md').read_text()
        fused = re.search(r'fused vs plain attention.*?max abs ([\d.e+-]+)',
                          text)
        assert fused and float(fused.group(1)) < 1e-4, text
        cosines = [float(c) for c in re.findall(
            r'prompt gradient cosine ([\d.]+)', text)]
        assert len(cosines) == 2 and min(cosines) > 0.99, text
        sizes = [float(m) for m in re.findall(r'([\d.]+) MiB', text)]
        # float32, then bf16 and fp16: half the frozen bytes
        assert sizes[1] == sizes[2] == pytest.approx(sizes[0] / 2, abs=0.1)  # MiB, 1 decimal

    lean = json.loads((out / 'lean_vs_full_setr.json').read_text())
    assert [r['label'] for r in lean['results']] == [
        'setr_vit-tiny_full', 'setr_vit-tiny_vpt-deep_synthetic-ade20k']
    assert lean['median_ratio']['peak_mem'] > 0

    serve = json.loads((out / 'serve_mixed_vs_separate.json').read_text())
    assert [s['mode'] for s in serve['servers']] == ['mixed', 'separate']
    for server in serve['servers']:
        assert server['load']['answered'] == server['load']['sent'] == 8

    giant = json.loads((out / 'giant_dinov3-7b16.json').read_text())
    assert giant['load']['deferred_left'] == 0
    assert giant['load']['frozen_float32_bytes'] == 0
    assert giant['step']['prompt_grad_norm'] > 0
