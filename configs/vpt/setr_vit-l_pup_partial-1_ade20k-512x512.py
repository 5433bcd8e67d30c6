# The paper's Partial-1 baseline on the SETR-PUP ViT-L/16 row: the last of
# the 24 layers trains with the heads (this row's ViT has no final norm,
# final_norm=False as in every SETR row here); the other layers stay frozen
# (and in eval mode, as in every frozen-backbone row).
# Optimizer: SGD, lr 0.005 as the head-only row, the trained layer at the
# full fine-tuning rate (lr_mult 0.2 = 0.001); this project's choice, not
# a value from the paper's segmentation recipe.
_base_ = ['../_base_/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        prompt_length=0, frozen_exclude=[], partial_k=1))
optim_wrapper = dict(
    optimizer=dict(lr=0.005),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.2)}))
