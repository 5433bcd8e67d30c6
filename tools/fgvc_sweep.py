"""Run the VPT paper's FGVC protocol: grid search, final runs, table.

    python tools/fgvc_sweep.py                                  # everything
    python tools/fgvc_sweep.py --tasks cub stanford_dogs --gpus 8
    python tools/fgvc_sweep.py --method linear --tasks nabirds
    python tools/fgvc_sweep.py --tasks cub --lrs 1 --wds 0 --seeds 0 \
        --cfg-options train_cfg.max_epochs=2                    # smoke run

tools/vtab_sweep.py with the FGVC benchmark (mmseg_vpt/fgvc/benchmark.py):
for each dataset, train -> val runs over the (lr, weight decay) grid,
selection by val top-1 (ties: smaller lr), then trainval -> test runs with
each seed, and a results table beside the paper's Table 1. Finished jobs
are skipped, so rerunning the same command resumes.
"""
import os.path as osp
import sys

# Work from a source checkout that is not pip-installed; vtab_sweep is the
# tool beside this one.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import vtab_sweep  # noqa: E402

from mmseg_vpt.fgvc.benchmark import FGVC  # noqa: E402


def main(argv=None) -> int:
    return vtab_sweep.main(argv, benchmark=FGVC)


if __name__ == '__main__':
    sys.exit(main())
