"""The serving benchmark: its task files, the three servers it compares
(:mod:`mmseg_vpt.analysis.serve_baselines`), its report, and
``tools/analysis/serve_benchmark.py`` end to end with real server
processes on loopback."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_vpt.analysis.serve_baselines import (SERVER_MODES,
                                                SeparateSegmentors,
                                                server_model, task_names)
from mmseg_vpt.analysis.serve_load import (CLASS_COUNTS, PROMPT_LENGTHS,
                                           prepare_task_files,
                                           process_memory)
from mmseg_vpt.analysis.serve_report import format_report, unanswered_modes
from mmseg_vpt.serving import UnknownTask

from .test_task_file_loading import VIT_DEMO
from .tools_helpers import PYTHON, REPO, read_checkpoint, run


@pytest.fixture(scope='module')
def made(tmp_path_factory) -> dict:
    work_dir = tmp_path_factory.mktemp('serve_bench')
    return prepare_task_files(str(REPO / VIT_DEMO), str(work_dir), 2,
                              mixed_lengths=True)


def test_task_files_differ_in_classes_and_prompt_length(made):
    for i, path in enumerate(made['files']):
        ckpt = read_checkpoint(Path(path))
        cfg = Config.fromstring(ckpt['meta']['cfg'], file_format='.py')
        assert cfg.model.decode_head.num_classes == CLASS_COUNTS[i]
        assert cfg.model.backbone.prompt_length == PROMPT_LENGTHS[i]
        assert len(ckpt['meta']['dataset_meta']['classes']) == \
            CLASS_COUNTS[i]
        assert cfg.model.backbone.init_cfg.checkpoint == made['base']


def test_task_files_already_written_are_kept(made):
    before = [os.stat(f).st_mtime_ns for f in made['files']]
    again = prepare_task_files(str(REPO / VIT_DEMO),
                               os.path.dirname(made['base']), 2,
                               mixed_lengths=True)
    assert again == made
    assert [os.stat(f).st_mtime_ns for f in made['files']] == before


def test_the_three_servers_give_the_same_predictions(made):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
              for _ in range(3)]
    names = ['task0', 'task1', 'task0']
    results = {mode: server_model(mode, made['files']).predict(images, names)
               for mode in SERVER_MODES}
    for mode in ('per_task', 'separate'):
        for ref, out in zip(results['mixed'], results[mode]):
            a, b = ref.seg_logits.data, out.seg_logits.data
            assert a.shape == b.shape
            torch.testing.assert_close(
                b, a, rtol=0, atol=1e-4 * float(a.abs().max()))


def test_separate_segmentors_name_an_unknown_task(made):
    model = SeparateSegmentors(made['files'][:1], task_names(1))
    assert model.task('task0').classes[0] == 't0-c0'
    with pytest.raises(UnknownTask, match="'task5'"):
        model.task('task5')


def test_server_model_refuses_an_unknown_mode(made):
    with pytest.raises(ValueError, match="mode must be one of .*'shared'"):
        server_model('shared', made['files'])


def test_process_memory_reads_resident_and_peak_bytes():
    memory = process_memory(os.getpid())
    assert 0 < memory['VmRSS'] <= memory['VmHWM']


def test_report_rows_and_ratios():
    mb = 2**20

    def server(mode, throughput, rss, answered=16):
        return dict(mode=mode, memory=dict(VmRSS=rss * mb, VmHWM=rss * mb),
                    load=dict(throughput=throughput, p50_ms=10.0,
                              p95_ms=20.0, answered=answered, sent=16),
                    server_metrics=dict(mean_batch_size=4.0))
    result = dict(config='c.py', tasks=2, prompts='prompt_length 10',
                  threads=1, task_file_bytes=10 * mb,
                  one_segmentor=dict(memory=dict(VmRSS=90 * mb)),
                  servers=[server('mixed', 30.0, 110),
                           server('per_task', 15.0, 105),
                           server('separate', 10.0, 200, answered=15)])
    lines = format_report(result).splitlines()
    assert lines[0] == ('Serving 2 tasks of `c.py` (prompt_length 10), '
                        '1 thread(s)')
    assert '| mixed | 30.00 | 10 | 20 | 16 / 16 | 4.00 | 110 | 110 | 1.10 |' \
        in lines
    assert '| separate | 10.00 | 10 | 20 | 15 / 16 | 4.00 | 200 | 200 | ' \
        '2.00 |' in lines
    assert ('Throughput mixed / separate: **3.00x** (goal >= 3); '
            'mixed / per_task: 2.00x.') in lines
    assert lines[-1] == ('Memory mixed / (one segmentor + task files): '
                         '**1.10** (goal <= 1.2).')
    assert unanswered_modes(result) == ['separate']


@pytest.mark.slow
def test_tool_serves_every_request_and_writes_its_files(tmp_path):
    out = tmp_path / 'results/serve.json'
    stdout = run([PYTHON, REPO / 'tools/analysis/serve_benchmark.py',
                  REPO / VIT_DEMO, '--tasks', '2', '--modes', 'mixed',
                  '--clients', '2', '--requests', '6', '--no-backbone',
                  '--work-dir', tmp_path / 'work', '--out', out], REPO,
                 timeout=600)
    result = json.loads(out.read_text())
    (mixed, ) = result['servers']
    assert mixed['load']['answered'] == mixed['load']['sent'] == 6
    assert mixed['load']['ok'] == 6
    assert result['one_segmentor']['tasks'] == 1
    assert out.with_suffix('.md').read_text() == format_report(result) + '\n'
    assert format_report(result) in stdout
