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
    # tools/train.py switches this to gloo when distributed without a GPU
    dist_cfg=dict(backend='nccl'),
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

# used by tools/test.py --tta
tta_model = dict(type='SegTTAModel')
