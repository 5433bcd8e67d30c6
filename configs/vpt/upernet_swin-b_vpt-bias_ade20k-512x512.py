# VPT+Bias: VPT-deep with 10 prompts, and the backbone's bias terms train
# too (at the base lr). Otherwise as upernet_swin_vpt_ade20k.py.
_base_ = ['./upernet_swin_vpt_ade20k.py']

# '.bias' (not 'bias'): the bias terms of linear and norm layers, without
# the relative position bias tables, which are position embeddings.
model = dict(backbone=dict(frozen_exclude=['prompt', '.bias']))
