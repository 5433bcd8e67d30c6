# The paper's Adapter baseline on the SETR-PUP ViT-L/16 row: a bottleneck
# adapter after every layer's MLP (width 1024 // 256 = 4, zero-initialised
# up-projection, so training starts from the frozen backbone's features),
# trained with the heads; the backbone is otherwise frozen. Reduction 256
# gives the smallest per-task file of the paper's factors (8, 64, 256).
# Optimizer: as the head-only row (SGD, lr 0.005, heads lr_mult 10); this
# project's choice, not a value from the paper's segmentation recipe.
_base_ = ['../_base_/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        prompt_length=0, frozen_exclude=['adapter'], adapter_reduction=256))
optim_wrapper = dict(optimizer=dict(lr=0.005))
