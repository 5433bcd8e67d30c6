"""Tabulate FGVC results beside the VPT paper's Table 1.

    python tools/fgvc_report.py work_dirs/fgvc_sweep
    python tools/fgvc_report.py work_dirs/fgvc_sweep --format csv \
        --out fgvc.csv

tools/vtab_report.py with the FGVC table (mmseg_vpt/fgvc/benchmark.py):
reads every final result.json of tools/fgvc_sweep.py under the given
folders (VTAB results there are skipped), averages seeds (mean, sample std)
and prints one column per dataset and their mean, the paper's row above
ours, then every FGVC row of the paper's Table 1.
"""
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed; vtab_report is the
# tool beside this one.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import vtab_report  # noqa: E402

from mmseg_vpt.fgvc.benchmark import FGVC_TABLE  # noqa: E402


def main(argv=None) -> int:
    return vtab_report.main(argv, table=FGVC_TABLE)


if __name__ == '__main__':
    sys.exit(main())
