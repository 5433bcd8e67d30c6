# VPT-deep on DINOv2-g/14 with 4 registers (LVD-142M; 1.1B parameters, 40
# blocks of width 1536, SwiGLU): 10 prompts before each of the 40 blocks,
# after the class and register tokens; the backbone is frozen, prompts +
# neck + heads train. UperNet + MultiLevelNeck, ADE20K 512x512 (padded to
# 518, a 37x37 grid), 160k iterations, 8 GPUs x 2 images (see the base).
# Not a row of the VPT paper (no DINOv2 / UperNet rows there).
# Memory: the backbone is built on the meta device and its weights go from
# the file straight into bfloat16 (meta_init, frozen_dtype: 2.3 GB, never a
# float32 copy); each block is checkpointed while training (with_cp).
# Outputs: blocks 10, 20, 30 and 40, the four even intervals that the DINOv3
# release's segmentation evaluation takes from a 40-block ViT
# (dinov3/eval/segmentation/models/__init__.py, FOUR_EVEN_INTERVALS:
# [9, 19, 29, 39]), applied to this 40-block model. The neck maps them from
# 1536 to the 1024 channels of the ViT-L rows, whose heads are unchanged.
# Optimizer: the base's AdamW, lr 6e-5 for neck and heads (mmseg's UperNet
# recipe), prompts 10x with no weight decay: the rule of the ViT-L rows
# (upernet_dinov2-l14-reg4_mln_vpt-deep-10_ade20k-512x512.py); DINOv2's
# release has no UperNet or prompt recipe for this model.
# This project's choice; sweep the 'prompt' lr_mult.
# Normalisation: ImageNet mean / std (the base's), as timm's pretrained
# config of this tag says.
_base_ = ['../_base_/upernet_timm-vit-l_mln_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        model_name='vit_giant_patch14_reg4_dinov2.lvd142m',
        out_indices=(9, 19, 29, 39),
        with_cp=True,
        frozen_dtype='bf16',
        meta_init=True,
        prompt_length=10,
        prompt_layers='deep',
        frozen_exclude=['prompt'],
        # timm's hub file of the tag; a local file in timm's layout or the
        # official DINOv2 release works too: checkpoint='pretrain/FILE.pth'
        init_cfg=dict(
            checkpoint='timm://vit_giant_patch14_reg4_dinov2.lvd142m')),
    neck=dict(in_channels=[1536, 1536, 1536, 1536]))
