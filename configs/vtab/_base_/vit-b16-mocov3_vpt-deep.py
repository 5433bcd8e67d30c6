# VTAB-1k, VPT-deep on MoCo v3 ViT-B/16 (ImageNet-1k self-supervised
# pre-training, 300 epochs, no fine-tuning), one of the VPT paper's
# self-supervised backbones. The backbone is this project's VPTTimmViT
# (timm's ViT-B/16 architecture + prompts after the class token), from
# mmseg's registry, read by mmpretrain's VisionTransformerClsHead as in
# vit-b16_vpt-deep.py.
# Prompt lengths: the per-task lengths of the supervised ViT-B/16 table
# (mmseg_vpt.vtab.tasks; the paper searched them per backbone, values we
# could not check). Protocol, splits and lr / weight decay grid as
# vit-b16_vpt-deep.py; normalisation: ImageNet mean / std, as MoCo v3's
# own code (timm's config of the plain vit_base_patch16_224 name is that
# of its default supervised tag and does not apply).
_base_ = ['./vit-b16_vpt-deep.py']
model = dict(
    backbone=dict(
        # replace the inherited VPTVisionTransformer arguments
        _delete_=True,
        type='mmseg.VPTTimmViT',
        # MoCo v3's ViT-B is timm's ViT-B/16 (qkv bias, LayerNorm eps 1e-6)
        model_name='vit_base_patch16_224',
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
        # The official release: the vit-b-300ep checkpoint of the MoCo v3
        # repo (github.com/facebookresearch/moco-v3), downloaded from
        # dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar
        # and saved under this name. The ViT is read from its
        # module.base_encoder. keys; the momentum encoder and predictor are
        # dropped.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='pretrain/mocov3_vit-b-300ep.pth.tar')),
    head=dict(in_channels=768))
