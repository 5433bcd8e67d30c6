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

# The project's hooks (mmseg_vpt/engine/):
# - TrainableParamsHook: total / trainable / prompt parameter counts before
#   training.
# - TunedCheckpointHook: tuned-only checkpoints when the backbone is frozen
#   and loads Pretrained base weights (the shared base is not copied into
#   every task's checkpoint); loads such checkpoints on top of the base
#   weights (load_from, --resume, tools/test.py).
# - BatchNormInputCheckHook: a BatchNorm layer that gets one value per
#   channel (one image per GPU into UperNet's 1x1 pyramid pooling) stops the
#   run with the layer named and the fixes, instead of torch's bare error.
# - SegDataCheckHook: a bad annotation stops the run, naming the file: label
#   values outside [0, num_classes) other than the ignore index (after
#   reduce_zero_label), a size other than its image's, several channels or
#   values above 255.
# - WorkDirLockHook: a second training run in a work dir that a live run
#   uses is refused (two runs would overwrite each other's checkpoints).
#   Exact, atomic resume is the schedules' checkpoint hook,
#   ResumableCheckpointHook (default_hooks can be set in one base file
#   only).
# - RankWatchdogHook (distributed runs only): a rank whose heartbeat stops
#   for `timeout` seconds (stopped, killed, machine down) is named in an
#   ERROR, and every other rank exits with status 3.
#   MMSEG_VPT_RANK_TIMEOUT overrides the timeout; 0 turns it off.
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='TunedCheckpointHook', check_base_hash=True),
    dict(type='BatchNormInputCheckHook'),
    dict(type='SegDataCheckHook'),
    dict(type='WorkDirLockHook'),
    dict(type='RankWatchdogHook', timeout=120),
]

# used by tools/test.py --tta
tta_model = dict(type='SegTTAModel')
