"""Initialise prompts from the first training batch's patch tokens."""
from mmengine.dist import broadcast, get_world_size
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..utils.params import unwrap_model
from ..models.prompt_token_init import TOKEN_INIT_METHODS


def init_prompts_on_every_rank(backbone, inputs, method: str,
                               seed: int) -> int:
    """``backbone.init_prompts_from_tokens`` on this rank's ``inputs``,
    then rank 0's prompts broadcast to the other ranks (each rank's batch
    differs; DDP does not synchronise parameters after it wraps them)."""
    num_set = backbone.init_prompts_from_tokens(inputs, method, seed)
    if get_world_size() > 1:
        for tensor in backbone.prompt_tensors():
            broadcast(tensor.data, 0)
    return num_set


@HOOKS.register_module()
class PromptTokenInitHook(Hook):
    """Set the backbone's prompts from the image tokens of the first
    training batch (``backbone.init_prompts_from_tokens``), just before the
    first iteration trains on it.

    The batch is the one the loop hands to that iteration, so the data
    order and random state of the run are those it has without the hook.
    Runs only on a fresh start: after ``resume`` or with ``load_from`` the
    prompts come from the checkpoint and are kept. With several ranks each
    computes on its own batch and rank 0's prompts are broadcast, so all
    ranks start equal.

    Args:
        method (str): ``'kmeans'`` (centres of the layer's tokens) or
            ``'sample'`` (tokens drawn at random). Default: 'kmeans'.
        seed (int): Seed of the draw. Default: 0.
    """

    priority = 'NORMAL'

    def __init__(self, method: str = 'kmeans', seed: int = 0) -> None:
        if method not in TOKEN_INIT_METHODS:
            raise ValueError(f'method must be one of {TOKEN_INIT_METHODS}, '
                             f'got {method!r}')
        self.method = method
        self.seed = seed
        self._pending = False

    def before_train(self, runner) -> None:
        self._pending = not (runner.iter > 0 or runner._resume
                             or runner._load_from)
        if not self._pending:
            runner.logger.info(
                'PromptTokenInitHook: prompts come from the loaded '
                'checkpoint; not initialising them from tokens')
            return
        backbone = getattr(unwrap_model(runner.model), 'backbone', None)
        if not hasattr(backbone, 'init_prompts_from_tokens'):
            raise TypeError(
                f'PromptTokenInitHook needs a VPT backbone, got '
                f'{type(backbone).__name__} in '
                f'{type(unwrap_model(runner.model)).__name__}')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if not self._pending:
            return
        self._pending = False
        model = unwrap_model(runner.model)
        inputs = model.data_preprocessor(data_batch, True)['inputs']
        num_set = init_prompts_on_every_rank(model.backbone, inputs,
                                             self.method, self.seed)
        runner.logger.info(
            f'PromptTokenInitHook: {num_set} prompt sets initialised from '
            f'the image tokens of the first training batch ({len(inputs)} '
            f'images per rank; {self.method}, seed {self.seed})')
