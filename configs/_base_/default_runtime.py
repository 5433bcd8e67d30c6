# Runtime settings shared by every config (mmseg 1.x's default_runtime.py,
# plus this project's package import, parameter-count and checkpoint hooks).

# Registers VPTVisionTransformer, VPTSwinTransformer, the hooks below,
# BFloat16OptimWrapper and FrozenSummaryOptimWrapperConstructor, so mmseg's
# own tools/train.py runs these configs too.
custom_imports = dict(imports=['mmseg_vpt'], allow_failed_imports=False)
default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py switches this to gloo when distributed without a GPU.
    # timeout: seconds a collective may wait for the other ranks before the
    # process fails (gloo's own default is 30 min).
    dist_cfg=dict(backend='nccl', timeout=600),
)
# Training curves: LocalVisBackend writes every logged scalar (loss, lr,
# mIoU ...) to WORK_DIR/<timestamp>/vis_data/scalars.json
# (tools/analysis/plot_curves.py plots it); TensorBoard event files are
# written next to it when tensorboard is installed.
from importlib.util import find_spec as _find_spec  # noqa: E402

vis_backends = [dict(type='LocalVisBackend')]
if _find_spec('tensorboard') is not None:
    vis_backends.append(dict(type='TensorboardVisBackend'))
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

# TrainableParamsHook logs total / trainable / prompt parameter counts before
# training. TunedCheckpointHook writes tuned-only checkpoints when the
# backbone is frozen and loads from Pretrained base weights (the shared base
# is not copied into every task's checkpoint), and loads such checkpoints
# on top of the base weights (load_from, --resume, tools/test.py).
# BatchNormInputCheckHook stops a run whose BatchNorm layer gets one value
# per channel (one image per GPU into UperNet's 1x1 pyramid pooling) with
# the layer named and the fixes, instead of torch's bare error.
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='TunedCheckpointHook', check_base_hash=True),
    dict(type='BatchNormInputCheckHook'),
]
# SegDataCheckHook stops on a bad annotation, naming the file: label values
# outside [0, num_classes) other than the ignore index (after
# reduce_zero_label), an annotation whose size differs from its image's, or
# one with several channels or values above 255.
custom_hooks.append(dict(type='SegDataCheckHook'))

# Exact resume (mmseg_vpt/engine/work_dir.py, resume.py). WorkDirLockHook
# stops a second training run in a work dir another live run is using (two
# runs overwrite each other's checkpoints). The schedules' checkpoint hook is
# ResumableCheckpointHook: atomic checkpoints that resume bit-exactly
# (default_hooks can only be set in one base file, so it is set there).
custom_hooks += [dict(type='WorkDirLockHook')]

# used by tools/test.py --tta
tta_model = dict(type='SegTTAModel')

# RankWatchdogHook (distributed runs only): a rank whose heartbeat stops for
# `timeout` seconds (stopped, killed, machine down) is named in an ERROR, and
# every other rank exits with status 3. MMSEG_VPT_RANK_TIMEOUT overrides the
# timeout; 0 turns it off.
custom_hooks.append(dict(type='RankWatchdogHook', timeout=120))
