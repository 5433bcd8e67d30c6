"""Tabulate VTAB-1k results beside the VPT paper's numbers.

    python tools/vtab_report.py work_dirs/vtab_sweep
    python tools/vtab_report.py work_dirs/vtab_sweep other_dir --format csv \
        --out vtab.csv

Reads every result.json of a final run (written by tools/vtab_sweep.py)
under the given folders, averages seeds (mean, sample std) and tasks (the
paper's Natural / Specialized / Structured group means) and prints the
paper's group means for the same backbone and method beside ours. The logic
lives in mmseg_vpt/vtab/report.py; tools/fgvc_report.py is this tool for
the FGVC benchmark.
"""
import argparse
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmseg_vpt.vtab.report import (VTAB_TABLE, ResultTable,  # noqa: E402
                                   report)


def parse_args(argv=None,
               table: ResultTable = VTAB_TABLE) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f'{table.title} results table beside the paper\'s '
        'numbers')
    parser.add_argument('paths', nargs='+',
                        help='sweep folders or result.json files')
    parser.add_argument('--format', default='markdown',
                        choices=['markdown', 'csv'],
                        help='output format (default: markdown)')
    parser.add_argument('--no-paper', action='store_true',
                        help="leave out the paper's rows")
    parser.add_argument('--out', help='write to this file instead of stdout')
    return parser.parse_args(argv)


def main(argv=None, table: ResultTable = VTAB_TABLE) -> int:
    args = parse_args(argv, table)
    try:
        text = report(args.paths, args.format, not args.no_paper, table)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(text)
        print(f'wrote {args.out}')
    else:
        print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
