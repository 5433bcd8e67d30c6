"""Run the VPT paper's VTAB-1k protocol: grid search, final runs, table.

    python tools/vtab_sweep.py                                  # everything
    python tools/vtab_sweep.py --tasks dtd eurosat --gpus 8
    python tools/vtab_sweep.py --method linear --tasks cifar100
    python tools/vtab_sweep.py --tasks dtd --lrs 1 --wds 0 --seeds 0 \
        --cfg-options train_cfg.max_epochs=2                    # smoke run

For each task: train800 -> val200 runs over the (lr, weight decay) grid,
selection by val top-1 (ties: smaller lr), then train800val200 -> test runs
with each seed, and finally a results table (mean / std per task, group
means beside the paper's). Jobs are subprocesses of tools/train.py and
tools/test.py; finished jobs are skipped, so rerunning the same command
resumes. The logic lives in mmseg_vpt/vtab/sweep.py; tools/fgvc_sweep.py is
this tool for the FGVC benchmark.

The jobs run the train.py / test.py beside this tool on the configs/ beside
its folder (--tools-dir / --configs-dir to choose others); that holds for a
checkout and for the copies an installed wheel carries in mmseg_vpt/.mim/.
"""
import argparse
import os
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmseg_vpt.vtab.sweep import (VTAB, Benchmark,  # noqa: E402
                                  SweepSettings, run_sweep)

CONFIGS_DIR = osp.join(ROOT, 'configs')
TOOLS_DIR = osp.join(ROOT, 'tools')


def parse_args(argv=None,
               benchmark: Benchmark = VTAB) -> argparse.Namespace:
    b = benchmark
    methods = b.table.methods
    parser = argparse.ArgumentParser(
        description=f'{b.name} sweep with the VPT paper\'s protocol',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='methods:\n' + '\n'.join(
            f'  {m.name:14s} {m.backbone}: {m.description}'
            for m in methods.values()))
    parser.add_argument('--method', default='vpt-deep', choices=list(methods),
                        help='tuning method (default: vpt-deep)')
    parser.add_argument(
        '--tasks', nargs='+', default=list(b.tasks), metavar='TASK',
        help=f'tasks to run (default: all {len(b.tasks)}).' + (
            ' Other task folders under --data-root need --num-classes'
            if b.custom_task else f' Choose from {", ".join(b.tasks)}'))
    parser.add_argument('--lrs', nargs='+', type=float, default=None,
                        metavar='LR', help='base learning rates, before '
                        "lr = base_lr * batch / 256 (default: the method's "
                        'grid; the paper\'s 50 25 10 5 2.5 1 0.5 0.25 0.1 '
                        '0.05 for prompts)')
    parser.add_argument('--wds', nargs='+', type=float, default=None,
                        metavar='WD', help='weight decays (default: the '
                        "paper's 0.01 0.001 0.0001 0)")
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        metavar='SEED', help='seeds of the final runs; the '
                        'grid uses the first (default: 0 1 2)')
    parser.add_argument('--data-root', default=b.data_root,
                        help='folder of the task folders '
                        f'(default: {b.data_root})')
    if b.custom_task:
        parser.add_argument('--num-classes', type=int, default=None,
                            help=f'class count for tasks that are not '
                            f'{b.name} tasks (e.g. a generated one)')
    parser.add_argument('--work-dir', default=b.work_dir,
                        help='where runs and tables go '
                        f'(default: {b.work_dir})')
    parser.add_argument('--configs-dir', default=CONFIGS_DIR,
                        help=f'the configs folder holding {b.config_folder}/'
                        f' (default: {CONFIGS_DIR})')
    parser.add_argument('--tools-dir', default=TOOLS_DIR,
                        help='the folder of the train.py and test.py the '
                        f'jobs run (default: {TOOLS_DIR})')
    parser.add_argument('--gpus', type=int, default=None,
                        help='run this many jobs at a time, one GPU each '
                        '(default: all visible GPUs; 0 = CPU, one job at a '
                        'time)')
    parser.add_argument('--delete-checkpoints', action='store_true',
                        help='delete the final runs\' checkpoints once tested')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the jobs and commands without running')
    parser.add_argument(
        '--write-configs', metavar='DIR',
        help='only write the per-task configs of --method for --tasks into '
        'DIR (for running tools/train.py by hand) and exit')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='passed to every tools/train.py and test.py '
                        'run')
    return parser.parse_args(argv)


def write_configs(method: str, tasks, out_dir: str,
                  benchmark: Benchmark = VTAB,
                  configs_dir: str = CONFIGS_DIR) -> None:
    base_dir = osp.relpath(benchmark.config_dir(configs_dir) / '_base_',
                           osp.abspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    for task in tasks:
        path = osp.join(out_dir, f'{task}.py')
        with open(path, 'w') as f:
            f.write(benchmark.render(task, method, base_dir=base_dir))
        print(path)


def main(argv=None, benchmark: Benchmark = VTAB) -> int:
    args = parse_args(argv, benchmark)
    if args.write_configs:
        unknown = [t for t in args.tasks if t not in benchmark.tasks]
        if unknown:
            sys.exit(f'error: not {benchmark.name} tasks: {unknown}')
        try:
            write_configs(args.method, args.tasks, args.write_configs,
                          benchmark, args.configs_dir)
        except FileNotFoundError as e:
            sys.exit(f'error: {e}')
        return 0
    gpus = args.gpus
    if gpus is None:
        import torch
        gpus = torch.cuda.device_count()
    try:
        settings = SweepSettings(
            work_dir=args.work_dir, method=args.method, tasks=args.tasks,
            lrs=args.lrs, wds=args.wds, seeds=args.seeds,
            data_root=args.data_root,
            num_classes=getattr(args, 'num_classes', None),
            cfg_options=args.cfg_options, gpus=gpus,
            delete_checkpoints=args.delete_checkpoints,
            dry_run=args.dry_run, benchmark=benchmark,
            configs_dir=args.configs_dir, tools_dir=args.tools_dir)
    except ValueError as e:
        sys.exit(f'error: {e}')
    try:
        failed = run_sweep(settings, log=lambda msg: print(msg, flush=True))
    except FileNotFoundError as e:
        sys.exit(f'error: {e}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
