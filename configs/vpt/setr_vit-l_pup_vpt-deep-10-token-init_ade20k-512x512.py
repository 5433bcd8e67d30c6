# The prompt-initialisation ablation on the SETR-PUP ViT-L/16 VPT-deep row:
# the same 10 prompts per layer and recipe, but before the first iteration
# each layer's prompts become k-means centres of the image tokens that the
# first training batch brings to that layer (PromptTokenInitHook; the
# prompts of the layers before it are already set, so each layer sees what
# training will show it). The VPT paper trains from random prompts (its
# main rows); this is the "prompts from samples' patch tokens" option. A
# resumed run, or one with load_from, keeps the checkpoint's prompts.
_base_ = ['./setr_vit-l_pup_vpt-deep-10_ade20k-512x512.py']

# default_runtime.py's hooks (a config cannot extend a base list) and the
# initialisation
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='TunedCheckpointHook', check_base_hash=True),
    dict(type='BatchNormInputCheckHook'),
    dict(type='SegDataCheckHook'),
    dict(type='WorkDirLockHook'),
    dict(type='RankWatchdogHook', timeout=120),
    dict(type='PromptTokenInitHook', method='kmeans'),
]
