"""How far a VPT backbone's fast and low-precision paths are from its
reference path, on one device.

    python tools/analysis/precision_check.py CONFIG [--device cuda]
        [--cfg-options ...] [--batch-size 2] [--out RESULT.md]

For the config's backbone (random weights, the crop size of the config),
three comparisons on the same weights and the same random batch:

* fused vs plain attention (``fused_attn=True`` against ``False``) in
  float32: the largest absolute and the relative difference of the outputs;
* ``frozen_dtype='bf16'`` (and ``'fp16'``) against float32: the relative
  difference of the outputs, the cosine similarity of the prompts'
  gradients, and the bytes the frozen weights take;
* each row's device and the torch version, so the table says where it ran.

Differences are printed, never judged here: the GPU check
(``benchmarks/gpu_check.sh``) records them beside the other rows.
"""
import argparse
import copy
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', category=UserWarning)
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

from mmseg_vpt.analysis.benchmark import (crop_size,  # noqa: E402
                                          load_bench_config, make_spec,
                                          resolve_device)
from mmseg_vpt.apis.args import add_cfg_options  # noqa: E402
from mmseg_vpt.utils.files import write_text_atomically  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--device', default='auto',
                        help="'auto' (cuda if present), 'cpu', 'cuda:0'...")
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--dtypes', nargs='+', default=['bf16', 'fp16'],
                        help='frozen_dtype values compared with float32')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='also write the table here (.md)')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def _features(out):
    """The tensors a backbone returns (ViTs may pair a map with a vector)."""
    flat = []
    for o in out:
        flat.extend(o if isinstance(o, (list, tuple)) else [o])
    return [o for o in flat if isinstance(o, torch.Tensor)]


def _run(backbone, x, train: bool):
    """Outputs and the prompts' gradient (flattened; None without
    prompts) of one forward (and backward with ``train``)."""
    backbone.train(train)
    backbone.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(train):
        outs = [o.detach().float() if not train else o.float()
                for o in _features(backbone(x))]
    if not train:
        return outs, None
    # a fixed random direction: a norm's output has a constant mean square,
    # so that stand-in loss would give the prompts no gradient
    g = torch.Generator().manual_seed(0)
    sum((o * torch.randn(o.shape, generator=g).to(o.device)).mean()
        for o in outs).backward()
    grads = [p.grad.flatten() for n, p in backbone.named_parameters()
             if p.requires_grad and p.grad is not None and 'prompt' in n]
    return [o.detach() for o in outs], torch.cat(grads) if grads else None


def _rel(a, b) -> float:
    return float(max((x - y).norm() / y.norm().clamp_min(1e-12)
                     for x, y in zip(a, b)))


def _frozen_bytes(backbone) -> int:
    return sum(p.numel() * p.element_size()
               for p in backbone.parameters() if not p.requires_grad)


def check(args) -> str:
    spec = make_spec(config=args.config, cfg_options=args.cfg_options)
    cfg = load_bench_config(spec)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    base_cfg = copy.deepcopy(cfg.model.backbone)
    reference = MODELS.build(base_cfg)
    reference.init_weights()
    reference.to(device)
    state = reference.state_dict()
    H, W = crop_size(cfg)
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch_size, 3, H, W, generator=g).to(device)

    rows = []
    ref_eval, _ = _run(reference, x, train=False)
    if hasattr(reference, 'fused_attn'):
        reference.fused_attn = False
        plain, _ = _run(reference, x, train=False)
        reference.fused_attn = True
        diff = max(float((a - b).abs().max()) for a, b in zip(ref_eval,
                                                              plain))
        rows.append(('fused vs plain attention (float32, inference)',
                     f'max abs {diff:.2e}, relative '
                     f'{_rel(ref_eval, plain):.2e}'))
    ref_out, ref_grad = _run(reference, x, train=True)
    rows.append(('float32 frozen weights',
                 f'{_frozen_bytes(reference) / 2**20:.1f} MiB'))
    for dtype in args.dtypes:
        low = MODELS.build(dict(copy.deepcopy(base_cfg), frozen_dtype=dtype))
        low.load_state_dict(state)
        low.to(device)
        out, grad = _run(low, x, train=True)
        cos = 'no prompts' if grad is None or ref_grad is None else \
            f'{float(F.cosine_similarity(grad, ref_grad, dim=0)):.5f}'
        rows.append((f'frozen_dtype={dtype} vs float32 (training forward)',
                     f'outputs relative {_rel(out, ref_out):.2e}; prompt '
                     f'gradient cosine {cos}; frozen weights '
                     f'{_frozen_bytes(low) / 2**20:.1f} MiB'))
        del low
    where = (torch.cuda.get_device_name(device) if device.type == 'cuda'
             else 'CPU')
    lines = [f'## Precision check: {osp.basename(args.config)}', '',
             f'{type(reference).__name__}, {H}x{W}, batch '
             f'{args.batch_size}, random weights; {where}, torch '
             f'{torch.__version__}', '', '| comparison | result |',
             '|---|---|']
    lines += [f'| {name} | {value} |' for name, value in rows]
    return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
    args = parse_args(argv)
    table = check(args)
    print(table)
    if args.out:
        write_text_atomically(args.out, table)


if __name__ == '__main__':
    main()
