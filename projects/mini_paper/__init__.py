"""A miniature version of the VPT paper's segmentation table, on a CPU.

The paper compares ways of adapting one pretrained backbone to a new
segmentation task: full fine-tuning, training the head only, tuning biases,
VPT-shallow, VPT-deep and VPT + Bias. This project reruns that comparison in
miniature, in minutes, on **synthetic data** (generated; no download, no
real images). Scenes are 2-4 shapes (disc, square, triangle) on a shaded
grey background; each shape has one of 6 colours and one of 3 surface
textures (flat, stripes, checks), all drawn at random (:mod:`.data`).

1. *Pretraining*: a small ViT (mmseg_vpt's ``VPTVisionTransformer`` with
   prompts off; 6 layers of width 64, 8x8 patches, 64x64 images) learns to
   segment the scenes **by colour**. Texture is a nuisance there, so the
   backbone has no reason to keep it.
2. *Downstream*: the same kind of scenes, segmented **by texture** (flat /
   stripes / checks / background), whatever the colour. Telling stripes from
   checks needs a nonlinear function of a patch's pixels, which the colour
   backbone's last-layer features do not offer to a linear head.
3. Every protocol adapts the same pretrained backbone with the same linear
   head (a 1x1 convolution on the last layer's patch tokens, upsampled),
   the same steps, batches and evaluation (mIoU over the 4 classes on
   held-out scenes). The protocols are the backbone's own settings
   (``prompt_length``, ``prompt_layers``, ``frozen_exclude``), exactly as in
   ``configs/vpt/`` (:data:`~.config.PROTOCOLS`); learning rates are fixed
   per parameter group (:attr:`~.config.MiniPaperConfig.lrs`), chosen once
   on seeds 0-1 of the quick run.

``run.py`` prints the table and plots mIoU against tunable parameters. What
it shows is the *shape* of the paper's result on toy data (prompts recover
part of full fine-tuning's gain over head-only at a small fraction of its
tunable parameters), not the paper's numbers. Downstream segmentation *by
shape* would not separate the protocols: within this budget every protocol,
full fine-tuning included, stays near 0.35-0.39 mIoU on it.

Modules: :mod:`.data` (scenes), :mod:`.config` (settings and protocols),
:mod:`.model`, :mod:`.train` (optimisation and mIoU), :mod:`.experiment`
(pretraining and adaptation, seed by seed), :mod:`.report` (table, plot).
"""
from .config import (ENSEMBLES, MAIN_PROTOCOLS, PROTOCOL_NAMES, PROTOCOLS,
                     ROWS, MiniPaperConfig, scenes)
from .data import (SHAPES, SYNTHETIC_NOTE, SceneSet, make_scenes, palette,
                   render_scene, to_tensor)
from .experiment import (adapt, adapt_ensemble, pretrain, run_mini_paper,
                         run_seed)
from .model import MiniSegmentor, PromptEnsemble, build_protocol_model
from .report import format_table, plot_results, summarize
from .train import evaluate, param_groups, train_steps

__all__ = [
    'ENSEMBLES', 'MAIN_PROTOCOLS', 'PROTOCOL_NAMES', 'PROTOCOLS', 'ROWS',
    'MiniPaperConfig', 'scenes', 'SHAPES', 'SYNTHETIC_NOTE', 'SceneSet',
    'make_scenes', 'palette', 'render_scene', 'to_tensor', 'adapt',
    'adapt_ensemble', 'pretrain', 'run_mini_paper', 'run_seed',
    'MiniSegmentor', 'PromptEnsemble', 'build_protocol_model',
    'format_table', 'plot_results', 'summarize', 'evaluate', 'param_groups',
    'train_steps'
]
