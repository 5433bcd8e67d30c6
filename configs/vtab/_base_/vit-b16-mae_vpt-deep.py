# VTAB-1k, VPT-deep on MAE ViT-B/16 (ImageNet-1k self-supervised
# pre-training, no fine-tuning), one of the VPT paper's self-supervised
# backbones. The backbone is this project's VPTTimmViT (timm's ViT + prompts
# after the class token), from mmseg's registry; its output with
# output_cls_token=True is ([patch_map, cls_token],), read by mmpretrain's
# VisionTransformerClsHead as for the supervised ViT-B/16.
# Prompt lengths: the per-task lengths of the supervised ViT-B/16 table
# (mmseg_vpt.vtab.tasks; the paper searched them per backbone, values we
# could not check). Protocol, splits and lr / weight decay grid as
# vit-b16_vpt-deep.py; normalisation: ImageNet mean / std, as MAE's own
# code and timm's pretrained config of the tag.
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(
    backbone=dict(
        # replace the inherited VPTVisionTransformer arguments
        _delete_=True,
        type='mmseg.VPTTimmViT',
        model_name='vit_base_patch16_224.mae',
        timm_kwargs=dict(drop_path_rate=0.),
        out_indices=-1,
        # the [CLS] token is read after the final norm
        out_norm=True,
        output_cls_token=True,
        prompt_length=10,  # per task in the task file
        prompt_layers='deep',
        prompt_dropout=0.0,
        prompt_init='uniform',
        # only the prompts train in the backbone (not the class token)
        frozen_exclude=['prompt'],
        frozen_eval=True,
        # timm's hub file of the tag; MAE's release works too
        # (dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth):
        # checkpoint='pretrain/mae_pretrain_vit_base.pth'
        init_cfg=dict(
            type='Pretrained', checkpoint='timm://vit_base_patch16_224.mae')),
    head=dict(in_channels=768))
