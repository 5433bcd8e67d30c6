# VTAB-1k, ViT-B/16 VPT-deep whose prompts start as k-means centres of the
# image tokens the first training batch brings to each layer (the paper's
# "prompts from samples' patch tokens" initialisation option), instead of
# U(-v, v). Everything else is vit-b16_vpt-deep.py.
_base_ = ['./vit-b16_vpt-deep.py']
# the base's hooks (a config cannot extend a base list) and the
# initialisation
custom_hooks = [
    dict(type='mmseg.TrainableParamsHook'),
    dict(type='mmseg.TunedCheckpointHook', check_base_hash=True),
    dict(type='mmseg.PromptTokenInitHook', method='kmeans'),
]
