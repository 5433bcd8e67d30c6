"""One task's prompts, held apart from the frozen backbone they run in."""
from typing import Optional, Sequence, Tuple, Union

from mmengine.model import BaseModule
from mmseg.registry import MODELS

from ..models.prompts import PromptLayers, PromptTuningMixin


@MODELS.register_module()
class TaskPrompts(PromptTuningMixin, BaseModule):
    """The prompts of one task for a shared VPT backbone.

    It stands where a task's backbone stood in its segmentor, so that the
    task file's keys (``backbone.prompt_embeddings``,
    ``backbone.prompt_proj.*``) load into it unchanged, and the layout
    (rows per stage, layer slots) is the mixin's, as in the backbone the
    task trained with. It has no ``forward``: a
    :class:`~mmseg_vpt.serving.MultiTaskSegmentor` runs the shared backbone
    with these prompts (``backbone.mixed_prompts``).

    Args:
        stage_dims, stage_depths, init_patch_size, init_dims: The shared
            backbone's ``prompt_geometry``.
        prompt_length, prompt_layers, prompt_init, prompt_proj_dims,
        prompt_shared: As the task's backbone config has them.
    """

    def __init__(self,
                 stage_dims: Sequence[int],
                 stage_depths: Sequence[int],
                 init_patch_size: Union[int, Tuple[int, int]],
                 init_dims: int,
                 prompt_length: int = 10,
                 prompt_layers: PromptLayers = 'deep',
                 prompt_init: str = 'uniform',
                 prompt_proj_dims: Optional[int] = None,
                 prompt_shared: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.init_prompt_tuning(
            stage_dims=stage_dims,
            stage_depths=stage_depths,
            prompt_length=prompt_length,
            prompt_layers=prompt_layers,
            prompt_dropout=0.0,  # serving is inference
            prompt_init=prompt_init,
            init_patch_size=init_patch_size,
            init_dims=init_dims,
            frozen_exclude=['prompt'] if prompt_length else [],
            frozen_eval=True,
            prompt_proj_dims=prompt_proj_dims,
            prompt_shared=prompt_shared)
        self.frozen_weights_set = True  # there are none

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            'TaskPrompts holds a task\'s prompts for a shared backbone and '
            'does not run alone; predict through MultiTaskSegmentor')
