# Full fine-tuning of UperNet Swin-B: no prompts, everything trains, the
# backbone runs in train mode (drop-path 0.3). This is mmseg's own recipe
# (50.76 mIoU ss / 52.4 ms reported by mmseg), the reference for the VPT rows.
_base_ = ['../_base_/upernet_swin-b_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        prompt_length=0, frozen_exclude=['all'], frozen_eval=False))
