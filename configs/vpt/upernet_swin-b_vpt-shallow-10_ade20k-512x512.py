# VPT-shallow: 10 prompts enter before the first Swin-B block only and are
# carried through every block and patch merging. Otherwise as
# upernet_swin_vpt_ade20k.py.
_base_ = ['./upernet_swin_vpt_ade20k.py']

model = dict(backbone=dict(prompt_layers='shallow'))
