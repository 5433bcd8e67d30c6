"""Time and memory of segmentor training steps and inference.

One measurement (:func:`measure`) builds a segmentor from a config with
random weights, feeds it a random batch of the config's crop size through
its data preprocessor, runs warm-up iterations, then timed ones, and reports
median/min/max seconds per iteration, images/s and peak memory:

* GPU: ``torch.cuda.max_memory_allocated`` (parameters, gradients, optimizer
  state, activations);
* CPU: the process's peak resident memory (``ru_maxrss``) minus its resident
  memory just before the model was built, i.e. the same things plus allocator
  overhead, without the interpreter and libraries. The raw peak is kept too.

Both peaks are those of the iterations: the high-water mark restarts once
the model, its optimizer and the batch are built (on CPU through Linux's
``/proc/self/clear_refs``), and the build's own peak is reported beside it
(``build_peak_mem``), since a backbone built in float32 and then stored in
bfloat16 (``frozen_dtype``) briefly holds both.

:func:`run_isolated` runs one measurement in a fresh Python process, so that
variants never share an allocator or a memory high-water mark;
:func:`compare` runs two variants alternately (A B A B ...) and gives their
ratios pair by pair. ``tools/analysis/benchmark.py`` is the command line.
"""
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from ..checkpoint import model_from_config
from ..engine.memory_options import (backbone_with_cp,
                                     configured_checkpointing, memory_options,
                                     turn_on_activation_checkpointing)
from ..engine.runner_config import enable_amp, load_config
from ..utils.dist import convert_syncbn_to_bn
from ..utils.params import count_parameters

Spec = Dict[str, Any]
Progress = Callable[[str], None]

MODES = ('train', 'train_backbone', 'infer', 'backbone')
DEFAULT_SPEC: Spec = dict(
    config=None, cfg_options=None, label=None, mode='train', batch_size=2,
    warmup=2, iters=5, amp=False, device='auto', threads=None, seed=0,
    breakdown=False)


def make_spec(**kwargs) -> Spec:
    """A measurement spec: :data:`DEFAULT_SPEC` updated with ``kwargs``."""
    unknown = set(kwargs) - set(DEFAULT_SPEC)
    if unknown:
        raise ValueError(f'unknown benchmark settings: {sorted(unknown)}')
    spec = dict(DEFAULT_SPEC, **kwargs)
    if spec['mode'] not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {spec['mode']!r}")
    if spec['label'] is None:
        spec['label'] = os.path.splitext(os.path.basename(spec['config']))[0]
    return spec


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------
def _drop_pretrained(node: Any) -> None:
    """Random weights instead of ``Pretrained`` checkpoint files."""
    if isinstance(node, dict):
        init = node.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            node['init_cfg'] = None
        if isinstance(node.get('pretrained'), str):
            node['pretrained'] = None
        for value in node.values():
            _drop_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _drop_pretrained(value)


def load_bench_config(spec: Spec):
    """The config of ``spec`` as measured: random init, BN for SyncBN (one
    process), and mixed precision if ``spec['amp']``. Its
    ``activation_checkpointing`` modules are checkpointed by
    :func:`measure` (as ``tools/train.py`` does)."""
    cfg = load_config(spec['config'], spec['cfg_options'])
    _drop_pretrained(cfg.model)
    convert_syncbn_to_bn(cfg.model)
    if spec['amp']:
        enable_amp(cfg)
    return cfg


def crop_size(cfg) -> Sequence[int]:
    size = cfg.model.get('data_preprocessor', {}).get('size') or cfg.get(
        'crop_size')
    if size is None:
        raise ValueError('config has neither model.data_preprocessor.size '
                         'nor crop_size')
    return tuple(size)


def num_classes(cfg) -> int:
    head = cfg.model.decode_head
    return (head[-1] if isinstance(head, (list, tuple)) else
            head)['num_classes']


def random_batch(cfg, batch_size: int, seed: int = 0) -> dict:
    """mmseg's data dict: uint8 images and random labels of the crop size."""
    g = torch.Generator().manual_seed(seed)
    H, W = crop_size(cfg)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, H, W), generator=g,
                                    dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(
            img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        label = torch.randint(0, num_classes(cfg), (1, H, W), generator=g)
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def resolve_device(device: str) -> torch.device:
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(device)


# ---------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------
def _current_rss() -> int:
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:  # not Linux: fall back to the high-water mark
        return _peak_rss()


def _peak_rss() -> int:
    """The process's resident high-water mark: Linux's ``VmHWM``, which
    belongs to this program alone. ``ru_maxrss`` is the fallback: Linux
    carries it over ``exec`` from the process that forked this one, so a
    child of a large process would report the parent's size."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024


def _reset_peak_rss() -> bool:
    """Restart the process's resident high-water mark at its current
    resident memory (Linux: ``/proc/self/clear_refs``); False where that
    cannot be done."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of what runs after construction (see module doc).

    :meth:`built` marks the end of building (model, optimizer, batch): the
    peak so far is kept as the build's, and the peak of the iterations
    starts again from the memory then held, so that a transient of the
    build (a backbone built in float32 and then stored in bfloat16) does
    not count as training memory, on CPU as on GPU. Where the high-water
    mark cannot be restarted, ``peak_mem`` covers the build too
    (``peak_covers_build``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.build_peak = None
        self.covers_build = True
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.baseline = torch.cuda.memory_allocated(device)
            self.kind = 'cuda_max_memory_allocated'
        else:
            self.baseline = _current_rss()
            self.kind = 'cpu_peak_rss_minus_baseline'

    def _peak(self) -> int:
        return (torch.cuda.max_memory_allocated(self.device)
                if self.device.type == 'cuda' else _peak_rss())

    def built(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        self.build_peak = self._peak()
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
            self.covers_build = False
        else:
            self.covers_build = not _reset_peak_rss()

    def read(self) -> Dict[str, Any]:
        peak = self._peak()
        if self.covers_build and self.build_peak is not None:
            peak = max(peak, self.build_peak)
        out = dict(peak_mem=peak - self.baseline, mem_kind=self.kind,
                   peak_raw=peak, baseline=self.baseline,
                   peak_covers_build=self.covers_build)
        if self.build_peak is not None:
            out['build_peak_mem'] = self.build_peak - self.baseline
        return out


# ---------------------------------------------------------------------------
# one measurement
# ---------------------------------------------------------------------------
def _backbone_settings(model) -> dict:
    bb = model.backbone
    out = dict(backbone=type(bb).__name__)
    for key in ('prompt_length', 'fused_attn'):
        if hasattr(bb, key):
            out[key] = getattr(bb, key)
    out['with_cp'] = backbone_with_cp(bb)
    out['frozen_dtype'] = getattr(bb, 'frozen_dtype', None)
    return out


def _step_fn(model, cfg, spec: Spec, data: dict,
             device: torch.device) -> Tuple[Callable[[], None], Any]:
    """One iteration of ``spec['mode']`` as a closure:

    * ``train``: ``model.train_step`` (preprocessing, forward, losses,
      backward, optimizer step) with the config's ``optim_wrapper``;
    * ``train_backbone``: the same for the backbone alone, with a cheap
      stand-in loss on its outputs (what prompt tuning changes, without the
      heads every variant shares);
    * ``infer``: ``model.test_step`` (the whole segmentor, no grad);
    * ``backbone``: the backbone's forward alone, no grad.

    Returns the closure and the optimizer wrapper (None without training).
    """
    mode = spec['mode']
    amp = bool(spec['amp'])
    if mode in ('train', 'train_backbone'):
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        model.train()
        if mode == 'train':
            return (lambda: model.train_step(data, optim_wrapper),
                    optim_wrapper)
        inputs = model.data_preprocessor(copy.copy(data), True)['inputs']

        def train_backbone():
            with optim_wrapper.optim_context(model):
                feats = model.backbone(inputs)
                loss = sum(f.float().mean() for f in feats)
            optim_wrapper.update_params(loss)
        return train_backbone, optim_wrapper

    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=amp)
    if mode == 'infer':
        def infer():
            with torch.no_grad(), autocast:
                model.test_step(data)
        return infer, None

    inputs = model.data_preprocessor(copy.copy(data), False)['inputs']

    def backbone():
        with torch.no_grad(), autocast:
            model.backbone(inputs)
    return backbone, None


def memory_breakdown(model, step: Callable[[], None],
                     optim_wrapper) -> Dict[str, int]:
    """Bytes by kind for one more training step: parameters, gradients
    (one per trainable parameter at the end of the backward), optimizer
    state, and the activations autograd keeps for the backward, attributed
    to the model's top-level module (backbone, decode_head, ...) that saved
    them first. Activations are counted per storage (views and tensors saved
    twice count once; parameters are not activations).

    This explains peak memory rather than measuring it: the peak also holds
    temporaries and, on CPU, allocator slack.
    """
    params = list(model.parameters())
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    owner = ['other']  # stack of the top-level modules being run

    def attributed(name: str, method: Callable) -> Callable:
        def run(*args, **kwargs):
            owner.append(name)
            try:
                return method(*args, **kwargs)
            finally:
                owner.pop()
        return run

    # instance attributes shadow the methods: mmseg's heads call
    # self.forward() from loss(), which module hooks would not see
    # (several auxiliary heads come as a ModuleList: one name for all)
    # (a checkpointed module's forward is itself an instance attribute,
    # put back afterwards)
    wrapped = []
    for name, child in model.named_children():
        if name == 'data_preprocessor':
            continue
        members = child if isinstance(child, torch.nn.ModuleList) else [child]
        for member in members:
            for method in ('forward', 'loss'):
                if hasattr(member, method):
                    wrapped.append((member, method,
                                    member.__dict__.get(method)))
                    setattr(member, method,
                            attributed(name, getattr(member, method)))
    seen: Dict[int, str] = {}
    saved: Dict[str, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in param_ptrs and ptr not in seen:
            seen[ptr] = owner[-1]
            saved[owner[-1]] = saved.get(owner[-1], 0) + storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
    finally:
        for child, method, own in wrapped:
            if own is None:
                delattr(child, method)
            else:
                setattr(child, method, own)
    state = optim_wrapper.optimizer.state.values()
    out = dict(
        params=sum(p.numel() * p.element_size() for p in params),
        grads=sum(p.numel() * p.element_size() for p in params
                  if p.requires_grad),
        optimizer_state=sum(v.numel() * v.element_size() for st in state
                            for v in st.values()
                            if isinstance(v, torch.Tensor)))
    out.update({f'saved_{k}': v for k, v in saved.items()})
    out['saved_total'] = sum(saved.values())
    return out


def measure(spec: Spec, progress: Progress = _stderr) -> Dict[str, Any]:
    """Build the model of ``spec`` and time ``spec['mode']`` in this
    process."""
    # mmengine logs every parameter's init, lr and frozen state
    # (a new instance becomes mmengine's current logger)
    MMLogger.get_instance(f'mmseg_vpt.benchmark.{time.time_ns()}',
                          log_level='ERROR')

    if spec['threads']:
        torch.set_num_threads(spec['threads'])
    device = resolve_device(spec['device'])
    cfg = load_bench_config(spec)
    torch.manual_seed(spec['seed'])

    memory = PeakMemory(device)
    model = model_from_config(cfg)
    model.init_weights()
    model.to(device)
    turn_on_activation_checkpointing(model, configured_checkpointing(cfg))
    data = random_batch(cfg, spec['batch_size'], spec['seed'])
    step, optim_wrapper = _step_fn(model, cfg, spec, data, device)
    memory.built()
    if spec['breakdown'] and optim_wrapper is None:
        raise ValueError('breakdown needs a training mode (train or '
                         f"train_backbone), got mode {spec['mode']!r}")

    def timed() -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    label = f"{spec['label']} ({spec['mode']})"
    for i in range(spec['warmup']):
        progress(f'  {label} warm-up {i + 1}/{spec["warmup"]}: '
                 f'{timed():.3f} s')
    times = []
    for i in range(spec['iters']):
        times.append(timed())
        progress(f'  {label} iter {i + 1}/{spec["iters"]}: {times[-1]:.3f} s')

    counts = count_parameters(model)
    median = statistics.median(times)
    result = dict(
        label=spec['label'], config=spec['config'],
        cfg_options=spec['cfg_options'], mode=spec['mode'],
        batch_size=spec['batch_size'], crop_size=list(crop_size(cfg)),
        amp=bool(spec['amp']), device=str(device),
        device_name=(torch.cuda.get_device_name(device)
                     if device.type == 'cuda' else 'cpu'),
        threads=torch.get_num_threads(), torch=torch.__version__,
        warmup=spec['warmup'], iters=spec['iters'], times=times,
        median=median, min=min(times), max=max(times),
        images_per_s=spec['batch_size'] / median,
        params=counts['total'],
        trainable_params=counts['trainable'],
        # fp32 bytes of everything a task trains (prompts, heads): what a
        # tuned-only checkpoint must store at least
        trainable_fp32_bytes=4 * counts['trainable'])
    result.update(_backbone_settings(model))
    options = memory_options(model, cfg)
    result['activation_checkpointing'] = options['activation_checkpointing']
    result['amp_dtype'] = options['amp']
    result.update(memory.read())  # before the breakdown step's hooks
    if spec['breakdown']:
        result['breakdown'] = memory_breakdown(model, step, optim_wrapper)
    return result


# ---------------------------------------------------------------------------
# isolation and A/B comparison
# ---------------------------------------------------------------------------
def run_in_fresh_process(module: str, before: Sequence[str],
                         after: Sequence[str] = (),
                         what: str = 'measurement') -> Any:
    """``python -m module *before RESULT *after`` in a fresh process, which
    writes its result to the JSON file RESULT; returns that result. The
    child imports this package from where this process does, and its
    progress goes to this process's stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'result.json')
        cmd = [sys.executable, '-m', module, *before, out, *after]
        env = dict(os.environ)
        env.setdefault('PYTHONWARNINGS', 'ignore::UserWarning')
        env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.run(cmd, env=env, stdout=sys.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f'{what} failed (exit code '
                               f'{proc.returncode})')
        with open(out) as f:
            return json.load(f)


def run_isolated(spec: Spec) -> Dict[str, Any]:
    """:func:`measure` in a fresh Python process (progress goes to this
    process's stderr)."""
    return run_in_fresh_process('mmseg_vpt.analysis.benchmark',
                                [json.dumps(spec)],
                                what=f"benchmark of {spec['label']}")


def ratios(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, float]:
    """A / B for time per iteration and peak memory."""
    return dict(time=a['median'] / b['median'],
                peak_mem=a['peak_mem'] / b['peak_mem'])


def compare(spec_a: Spec, spec_b: Optional[Spec], repeats: int,
            isolated: bool = True,
            progress: Progress = _stderr) -> Dict[str, Any]:
    """Run A (and B) ``repeats`` times, alternating A B A B ..., each run in
    its own process unless ``isolated`` is False."""
    run = run_isolated if isolated else (lambda s: measure(s, progress))
    results: List[Dict[str, Any]] = []
    pairs: List[Dict[str, float]] = []
    for r in range(repeats):
        a = dict(run(spec_a), repeat=r)
        results.append(a)
        progress(f'[{r + 1}/{repeats}] {_one_line(a)}')
        if spec_b is None:
            continue
        b = dict(run(spec_b), repeat=r)
        results.append(b)
        progress(f'[{r + 1}/{repeats}] {_one_line(b)}')
        pairs.append(ratios(a, b))
        progress(f"[{r + 1}/{repeats}] A/B time {pairs[-1]['time']:.3f}x, "
                 f"peak memory {pairs[-1]['peak_mem']:.3f}x")
    summary: Dict[str, Any] = dict(results=results, pairs=pairs)
    if pairs:
        summary['median_ratio'] = {
            k: statistics.median(p[k] for p in pairs) for k in pairs[0]}
    return summary


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------
def _mib(n: float) -> str:
    return f'{n / 2**20:.0f}'


def _one_line(r: Dict[str, Any]) -> str:
    return (f"{r['label']}: {r['mode']} median {r['median']:.3f} s/iter, "
            f"{r['images_per_s']:.2f} img/s, peak {_mib(r['peak_mem'])} MiB")


TABLE_HEADER = ('| variant | mode | batch | crop | median s | min s | max s '
                '| img/s | peak MiB | trainable | trainable fp32 MiB '
                '| memory options |')


def _options_cell(r: Dict[str, Any]) -> str:
    """Frozen weights' type, backbone ``with_cp`` and checkpointed modules
    of a result (AMP is in the mode column)."""
    parts = []
    if r.get('frozen_dtype'):
        parts.append(f"frozen {r['frozen_dtype']}")
    if r.get('with_cp'):
        parts.append('with_cp')
    ckpt = r.get('activation_checkpointing') or []
    if ckpt:
        parts.append(f'{len(ckpt)} modules checkpointed')
    return ', '.join(parts) or '-'


def format_table(summary: Dict[str, Any]) -> str:
    """A Markdown table of every run, then the A/B ratios."""
    lines = [TABLE_HEADER, '|' + '---|' * (TABLE_HEADER.count('|') - 1)]
    for r in summary['results']:
        lines.append(
            f"| {r['label']} | {r['mode']}{' amp' if r['amp'] else ''} "
            f"| {r['batch_size']} | {r['crop_size'][0]}x{r['crop_size'][1]} "
            f"| {r['median']:.3f} | {r['min']:.3f} | {r['max']:.3f} "
            f"| {r['images_per_s']:.2f} | {_mib(r['peak_mem'])} "
            f"| {r['trainable_params']:,} "
            f"| {r['trainable_fp32_bytes'] / 2**20:.1f} "
            f"| {_options_cell(r)} |")
    for i, p in enumerate(summary['pairs']):
        lines.append(f"pair {i + 1}: A/B time {p['time']:.3f}x, "
                     f"peak memory {p['peak_mem']:.3f}x")
    if 'median_ratio' in summary:
        m = summary['median_ratio']
        lines.append(f"median A/B: time {m['time']:.3f}x, "
                     f"peak memory {m['peak_mem']:.3f}x")
    broken = [r for r in summary['results'] if 'breakdown' in r]
    if broken:
        lines += ['', format_breakdown(broken)]
    return '\n'.join(lines)


def format_breakdown(results: List[Dict[str, Any]]) -> str:
    """Markdown table of :func:`memory_breakdown` (MiB), one row per run."""
    saved = sorted({k for r in results for k in r['breakdown']
                    if k.startswith('saved_') and k != 'saved_total'})
    cols = ['params', 'grads', 'optimizer_state'] + saved + ['saved_total']
    names = [c.replace('saved_', 'kept for backward: ') for c in cols]
    lines = ['| variant (MiB) | ' + ' | '.join(names) + ' |',
             '|' + '---|' * (len(cols) + 1)]
    for r in results:
        b = r['breakdown']
        lines.append(f"| {r['label']} | " + ' | '.join(
            _mib(b.get(c, 0)) for c in cols) + ' |')
    return '\n'.join(lines)


def _child_main(argv: List[str]) -> None:
    warnings.filterwarnings('ignore', category=UserWarning)
    spec, out = json.loads(argv[0]), argv[1]
    result = measure(spec)
    with open(out, 'w') as f:
        json.dump(result, f)


if __name__ == '__main__':
    _child_main(sys.argv[1:])
