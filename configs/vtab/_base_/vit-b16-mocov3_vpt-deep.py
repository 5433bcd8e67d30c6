# VTAB-1k, VPT-deep on MoCo v3 ViT-B/16 (ImageNet-1k self-supervised
# pre-training, 300 epochs, no fine-tuning), one of the VPT paper's
# self-supervised backbones. The setting is the MAE base's (VPTTimmViT on
# timm's ViT-B/16 with prompts after the class token, read through the
# class token; the same protocol, splits, lr / weight decay grid, ImageNet
# mean / std as MoCo v3's own code, and the ViT-B/16 prompt-length table);
# only the model and its weights differ.
_base_ = ['./vit-b16-mae_vpt-deep.py']
model = dict(
    backbone=dict(
        # MoCo v3's ViT-B is timm's ViT-B/16 (qkv bias, LayerNorm eps 1e-6);
        # timm's config of the plain name is that of a supervised tag, whose
        # normalisation does not apply
        model_name='vit_base_patch16_224',
        # The official release: the vit-b-300ep checkpoint of the MoCo v3
        # repo (github.com/facebookresearch/moco-v3), downloaded from
        # dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar
        # and saved under this name. The ViT is read from its
        # module.base_encoder. keys; the momentum encoder and predictor are
        # dropped.
        init_cfg=dict(checkpoint='pretrain/mocov3_vit-b-300ep.pth.tar')))
