"""The prompt mechanism shared by every VPT backbone.

VPT (Jia et al., ECCV 2022) keeps a pretrained Transformer frozen and feeds
learnable prompt tokens into its token sequence. This module holds all of the
method that does not depend on the backbone's architecture:

* which layers receive fresh prompts (``prompt_layers``),
* how the prompt parameters are laid out and initialised,
* how prompts are fetched for a layer (projection, dropout, batch expansion)
  and spliced into a token sequence,
* which parameters stay trainable (``frozen_exclude``), keeping the frozen
  part in eval mode, and storing it in low precision (``frozen_dtype``,
  with :func:`frozen_precision` on the host's ``forward``).

A backbone mixes in :class:`PromptTuningMixin`, calls
:meth:`~PromptTuningMixin.init_prompt_tuning` once its layers exist, and in
``forward`` lets a :meth:`~PromptTuningMixin.prompt_flow` splice each layer's
prompts into the sequence (:mod:`~mmseg_vpt.models.prompt_flow`). The
backbone only decides *where* prompts enter and leave its token sequence.
"""
import contextlib
import functools
import math
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model.weight_init import kaiming_init

from ..utils.params import has_frozen_parameters
from .adapters import attach_adapter
from .base_weights import load_into_backbone
from .convert import ConversionInfo, adapt_to_model, convert_to_mmseg
from .pretrained import load_pretrained
from .prompt_flow import MixedPromptFlow, PromptFlow, splice_prompts
from .prompt_locations import (PIXEL_LOCATIONS, PROMPT_LOCATIONS,
                               TOKEN_LOCATIONS, attach_channel_prompt,
                               init_pixel_prompts, resize_grid)
from .prompt_token_init import TOKEN_INIT_METHODS, TokenInitFlow

__all__ = ['PromptTuningMixin', 'resolve_prompt_layers', 'splice_prompts',
           'uniform_init_bound', 'check_frozen_exclude', 'frozen_precision',
           'resolve_frozen_dtype', 'FROZEN_DTYPES']

PromptLayers = Union[str, Sequence[int]]

PROMPT_INITS = ('uniform', 'normal')

# what a ViT hands its classification head beside the patch map (the VPT
# paper's output ablation): the class token, or the mean of the image
# patch tokens, of the prompt tokens, or of every token
CLS_FEATURES = ('cls', 'image-pool', 'prompt-pool', 'global-pool')

# storage types of frozen weights (``frozen_dtype``), by config spelling
FROZEN_DTYPES = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16,
                 'fp16': torch.float16, 'float16': torch.float16}
# modules whose weight and bias must share a type on CPU
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def resolve_frozen_dtype(frozen_dtype) -> Optional[str]:
    """The canonical name (``'bfloat16'`` / ``'float16'``) of a
    ``frozen_dtype`` setting, or None for float32 (unchanged weights)."""
    if frozen_dtype is None or frozen_dtype in ('fp32', 'float32',
                                                torch.float32):
        return None
    if isinstance(frozen_dtype, torch.dtype) and \
            frozen_dtype in FROZEN_DTYPES.values():
        return str(frozen_dtype).replace('torch.', '')
    if isinstance(frozen_dtype, str) and frozen_dtype in FROZEN_DTYPES:
        return str(FROZEN_DTYPES[frozen_dtype]).replace('torch.', '')
    raise ValueError(
        f'frozen_dtype must be None (float32), {sorted(FROZEN_DTYPES)} or '
        f'a torch.bfloat16 / torch.float16 dtype, got {frozen_dtype!r}')


def _float32(out):
    """``out`` (tensors in nested tuples / lists) with floating tensors
    as float32, the type the heads' weights have."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_float32(o) for o in out)
    return out


def frozen_precision(forward):
    """Decorate a VPT backbone's ``forward(inputs, ...)``: with a
    ``frozen_dtype``, run it under ``torch.autocast`` to that type on the
    inputs' device (frozen weights are stored in it; trainable ones stay
    float32 and are cast per op, so their gradients and optimizer state are
    float32) and hand float32 outputs to the heads. Without one, the
    forward runs unchanged."""
    @functools.wraps(forward)
    def run(self, inputs, *args, **kwargs):
        name = getattr(self, 'frozen_dtype', None)
        if name is None:
            return forward(self, inputs, *args, **kwargs)
        with torch.autocast(inputs.device.type, dtype=FROZEN_DTYPES[name]):
            out = forward(self, inputs, *args, **kwargs)
        return _float32(out)
    return run


def resolve_prompt_layers(prompt_layers: PromptLayers,
                          num_layers: int) -> List[int]:
    """Turn ``prompt_layers`` into the sorted indices of prompted layers.

    ``'deep'`` is every layer, ``'shallow'`` only the first one, and a list
    names the layers explicitly (the paper's depth ablations).
    """
    if isinstance(prompt_layers, str):
        if prompt_layers == 'deep':
            return list(range(num_layers))
        if prompt_layers == 'shallow':
            return [0]
        raise ValueError(
            f"prompt_layers must be 'deep', 'shallow' or a list of layer "
            f'indices in [0, {num_layers}), got {prompt_layers!r}')
    if not isinstance(prompt_layers, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool)
            for i in prompt_layers):
        raise ValueError(
            f"prompt_layers must be 'deep', 'shallow' or a list of int layer "
            f'indices in [0, {num_layers}), got {prompt_layers!r}')
    if len(prompt_layers) == 0:
        raise ValueError('prompt_layers is an empty list; use '
                         'prompt_length=0 to turn prompts off')
    bad = [i for i in prompt_layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f'prompt_layers has indices {bad} outside the '
                         f'backbone\'s layers [0, {num_layers})')
    if len(set(prompt_layers)) != len(prompt_layers):
        raise ValueError(
            f'prompt_layers has repeated indices: {list(prompt_layers)}')
    return sorted(prompt_layers)


def uniform_init_bound(patch_size: Union[int, Tuple[int, int]],
                       dims: int) -> float:
    """The paper's bound v for U(-v, v): a Xavier-uniform rule over the
    patch-embedding fan-in (3 * patch_h * patch_w) and the prompt width."""
    ph, pw = (patch_size, patch_size) if isinstance(patch_size,
                                                    int) else patch_size
    return math.sqrt(6.0 / float(3 * ph * pw + dims))


def check_frozen_exclude(frozen_exclude: Sequence[str],
                         param_names: Sequence[str], owner: str) -> List[str]:
    """Validate mmseg's ``frozen_exclude`` (substrings of the names of the
    parameters that stay trainable; ``'all'`` trains everything)."""
    if isinstance(frozen_exclude, str) or not isinstance(
            frozen_exclude, (list, tuple)) or not all(
                isinstance(e, str) for e in frozen_exclude):
        raise ValueError(
            'frozen_exclude must be a list of parameter-name substrings '
            f"(e.g. ['prompt'], ['prompt', 'bias'], [] or ['all']), got "
            f'{frozen_exclude!r}')
    for entry in frozen_exclude:
        if entry != 'all' and not any(entry in n for n in param_names):
            hint = (' (prompt_length=0 leaves no prompt parameters: use '
                    "frozen_exclude=[] for head-only or ['all'] for full "
                    'fine-tuning)' if 'prompt' in entry else '')
            raise ValueError(
                f'frozen_exclude entry {entry!r} matches no parameter name '
                f'of {owner}{hint}. Example names: {list(param_names)[:4]}')
    return list(frozen_exclude)


class PromptTuningMixin:
    """VPT prompts and the freeze policy for a Transformer backbone.

    The host class keeps its own ``forward`` and layers. Layers are counted in
    execution order over the whole backbone (for Swin: the flattened block
    list) and grouped into stages of equal width, one prompt tensor per stage.

    Parameters created on the host:

    * ``prompt_embeddings``: one ``nn.Parameter`` of shape
      (prompted layers, prompt_length, dims) when the backbone has one stage
      (ViT), else an ``nn.ParameterList`` with one such tensor per stage
      (Swin); rows follow layer order.
    * ``prompt_proj`` (optional): ``nn.Linear`` from ``prompt_proj_dims`` to
      the layer width, for lower-dimensional prompts.
    * ``prompt_dropout``: applied every time prompts enter a layer.

    ``frozen_weights_set`` is False until ``init_weights`` runs or a state
    dict provides every frozen weight; until then a load that lacks some of
    them is refused (see :meth:`_load_from_state_dict`).
    """

    def init_prompt_tuning(self,
                           stage_dims: Sequence[int],
                           stage_depths: Sequence[int],
                           prompt_length: int,
                           prompt_layers: PromptLayers,
                           prompt_dropout: float,
                           prompt_init: str,
                           init_patch_size: Union[int, Tuple[int, int]],
                           init_dims: int,
                           frozen_exclude: Sequence[str],
                           frozen_eval: bool,
                           prompt_proj_dims: Optional[int] = None,
                           adapter_reduction: Optional[int] = None,
                           adapter_mlps: Sequence[Tuple[nn.Module, int]] = (),
                           partial_k: int = 0,
                           layer_prefixes: Sequence[str] = (),
                           final_norm_prefixes: Sequence[str] = (),
                           prompt_location: str = 'prepend',
                           prompt_shared: bool = False,
                           frozen_dtype=None) -> None:
        """Create the prompts (and, with ``adapter_reduction``, an adapter
        after each of ``adapter_mlps``, (MLP, output width) pairs: the
        paper's Adapter baseline, :mod:`~mmseg_vpt.models.adapters`) and
        apply ``frozen_exclude``. ``partial_k`` > 0 also trains the last
        ``partial_k`` layers (``layer_prefixes``: each layer's parameter-name
        prefix, in execution order) and the final norm
        (``final_norm_prefixes``): the paper's Partial-k baseline.
        ``prompt_location`` (:mod:`~mmseg_vpt.models.prompt_locations`; a
        host lists the ones it supports in ``prompt_locations``) and
        ``prompt_shared`` (one prompt set per stage, used by every prompted
        layer) are the paper's prompt ablations. ``frozen_dtype``
        (``'bf16'`` / ``'fp16'``) stores the frozen parameters in that type
        (:meth:`store_frozen`); the host decorates its ``forward`` with
        :func:`frozen_precision`.

        Must run after the host has built all of its own parameters, so that
        freezing sees them all.
        """
        if not isinstance(prompt_length, int) or prompt_length < 0:
            raise ValueError('prompt_length must be an int >= 0 (0 turns '
                             f'prompts off), got {prompt_length!r}')
        if prompt_init not in PROMPT_INITS:
            raise ValueError(f'prompt_init must be one of {PROMPT_INITS}, '
                             f'got {prompt_init!r}')
        if not 0.0 <= prompt_dropout < 1.0:
            raise ValueError(
                f'prompt_dropout must be in [0, 1), got {prompt_dropout!r}')
        self._check_location(prompt_location, prompt_length, prompt_layers,
                             prompt_proj_dims, sum(stage_depths))
        if not isinstance(prompt_shared, bool):
            raise ValueError(
                f'prompt_shared must be True or False, got {prompt_shared!r}')
        if prompt_proj_dims is not None and (
                not isinstance(prompt_proj_dims, int) or prompt_proj_dims <= 0
                or len(set(stage_dims)) != 1):
            raise ValueError(
                'prompt_proj_dims must be None or a positive int, and needs a '
                f'backbone of constant width; got {prompt_proj_dims!r} for '
                f'widths {list(stage_dims)}')

        self.frozen_dtype = resolve_frozen_dtype(frozen_dtype)
        self.prompt_length = prompt_length
        self.prompt_init = prompt_init
        self.prompt_location = prompt_location
        self.prompt_shared = prompt_shared
        # how the prompts are laid out (another prompt set must share the
        # widths and depths to run in this backbone, see mixed_prompts)
        self.prompt_geometry = dict(
            stage_dims=list(stage_dims), stage_depths=list(stage_depths),
            init_patch_size=init_patch_size, init_dims=init_dims)
        self.frozen_weights_set = False
        self.frozen_eval = frozen_eval
        num_layers = sum(stage_depths)
        layers = resolve_prompt_layers(prompt_layers, num_layers)
        # channel prompts join the image: no layer gets prompt tokens
        self.prompt_layers = layers if prompt_length > 0 and \
            prompt_location != 'concat-channel' else []

        # layer index -> (stage, row in that stage's prompt tensor)
        self._prompt_slots: Dict[int, Tuple[int, int]] = {}
        rows_per_stage = [0] * len(stage_depths)
        stage_of_layer = [
            s for s, depth in enumerate(stage_depths) for _ in range(depth)
        ]
        for layer in self.prompt_layers:
            stage = stage_of_layer[layer]
            if prompt_shared:  # every prompted layer of a stage: row 0
                self._prompt_slots[layer] = (stage, 0)
                rows_per_stage[stage] = 1
                continue
            self._prompt_slots[layer] = (stage, rows_per_stage[stage])
            rows_per_stage[stage] += 1

        # With prompts off the backbone has exactly its parent's parameters,
        # so the parent's checkpoints load strictly.
        self.prompt_embeddings = None
        self.prompt_proj = None
        self._channel_prompts = []  # a plain list, as for the adapters
        if prompt_length > 0 and prompt_location == 'concat-channel':
            conv, _, grid = self.prompt_patch_embed()
            size = (grid[0] * conv.stride[0], grid[1] * conv.stride[1])
            self._channel_prompts.append(attach_channel_prompt(
                conv, prompt_length, size, prompt_init))
        elif prompt_length > 0:
            width = [prompt_proj_dims or d for d in stage_dims]
            if prompt_location == 'prepend-pixel':
                conv = self.prompt_patch_embed()[0]
                width = [conv.in_channels * math.prod(conv.kernel_size)]
            tensors = [
                nn.Parameter(torch.zeros(rows, prompt_length, w))
                for rows, w in zip(rows_per_stage, width)
            ]
            self.prompt_embeddings = tensors[0] if len(tensors) == 1 else \
                nn.ParameterList(tensors)
            if prompt_proj_dims is not None:
                self.prompt_proj = nn.Linear(prompt_proj_dims, stage_dims[0])
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        # a plain list: the adapters are registered inside their MLPs
        self.adapters = [] if adapter_reduction is None else [
            attach_adapter(mlp, dims, adapter_reduction)
            for mlp, dims in adapter_mlps]
        self._prompt_init_bound = uniform_init_bound(
            init_patch_size, prompt_proj_dims or init_dims)
        self.reset_prompts()

        names = [n for n, _ in self.named_parameters()]
        self.frozen_exclude = check_frozen_exclude(frozen_exclude, names,
                                                   type(self).__name__)
        if not isinstance(partial_k, int) or isinstance(partial_k, bool) \
                or not 0 <= partial_k <= len(layer_prefixes):
            raise ValueError(
                f'partial_k must be an int in [0, {len(layer_prefixes)}] '
                f'(the backbone has {len(layer_prefixes)} layers; 0 turns '
                f'Partial-k off), got {partial_k!r}')
        self.partial_k = partial_k
        partial = tuple(layer_prefixes[len(layer_prefixes) - partial_k:]) + \
            tuple(final_norm_prefixes) if partial_k else ()
        self.partial_prefixes = partial  # what Partial-k trains
        train_all = 'all' in self.frozen_exclude
        for name, param in self.named_parameters():
            # an empty stage tensor (a Swin stage without prompted blocks)
            # never gets a gradient; trainable, it would break DDP
            param.requires_grad_(param.numel() > 0 and (train_all or any(
                e in name for e in self.frozen_exclude)
                or name.startswith(partial)))
        frozen_prompts = [t for t in self.prompt_tensors()
                          if t.numel() and not t.requires_grad]
        if any(not p.requires_grad for a in self.adapters
               for p in a.parameters()):
            warnings.warn(
                f'{type(self).__name__}: adapter_reduction='
                f'{adapter_reduction} but frozen_exclude='
                f'{self.frozen_exclude} freezes the adapters, which then '
                "stay the identity. Add 'adapter' to frozen_exclude.")
        if frozen_prompts:
            warnings.warn(
                f'{type(self).__name__}: prompt_length={prompt_length} but '
                f'frozen_exclude={self.frozen_exclude} freezes the prompts, '
                'so fixed random prompts enter the backbone. Use '
                'prompt_length=0 for head-only or bias tuning.')
        self.store_frozen()

    def store_frozen(self) -> None:
        """Store the frozen floating parameters in :attr:`frozen_dtype`
        (with the buffers of norm layers that are wholly frozen), in place:
        parameter objects stay, so later loads copy into the new type.

        A norm layer with a trainable parameter (Bias tuning, Partial-k)
        keeps float32 throughout: on CPU a norm's weight and bias must share
        a type. Everything that trains stays float32."""
        if self.frozen_dtype is None:
            return
        dtype = FROZEN_DTYPES[self.frozen_dtype]
        for module in self.modules():
            own = list(module.parameters(recurse=False))
            if isinstance(module, _NORMS) and any(p.requires_grad
                                                   for p in own):
                continue
            for p in own:
                if not p.requires_grad and p.is_floating_point():
                    p.data = p.data.to(dtype)
            if isinstance(module, _NORMS) and own:
                for name, buf in module.named_buffers(recurse=False):
                    if buf.is_floating_point():
                        setattr(module, name, buf.to(dtype))

    def prompt_tensors(self) -> List[torch.Tensor]:
        """The per-stage prompt tensors, in stage order."""
        if self.prompt_embeddings is None:
            return []
        if isinstance(self.prompt_embeddings, nn.ParameterList):
            return list(self.prompt_embeddings)
        return [self.prompt_embeddings]

    def layer_modules(self) -> List[nn.Module]:
        """The backbone's layers in execution order: the units prompts
        enter, and the units a sharded backbone is split into."""
        raise NotImplementedError

    # prompt locations this backbone supports (prompt_locations.py)
    prompt_locations: Tuple[str, ...] = ('prepend', )

    def prompt_patch_embed(self) -> Tuple[nn.Conv2d, Optional[nn.Module],
                                          Tuple[int, int]]:
        """The patch embedding's convolution, its norm (or None) and the
        patch grid of the configured image size; needed by the locations
        other than ``'prepend'``."""
        raise NotImplementedError

    def _check_location(self, location: str, prompt_length: int,
                        prompt_layers: PromptLayers,
                        prompt_proj_dims: Optional[int],
                        num_layers: int) -> None:
        if location not in PROMPT_LOCATIONS:
            raise ValueError(f'prompt_location must be one of '
                             f'{PROMPT_LOCATIONS}, got {location!r}')
        if location not in self.prompt_locations:
            raise ValueError(
                f'prompt_location={location!r} is not available for '
                f'{type(self).__name__}, which supports '
                f'{self.prompt_locations}')
        if location == 'prepend' or prompt_length == 0:
            return
        if prompt_proj_dims is not None:
            raise ValueError(f'prompt_proj_dims needs latent prompts; '
                             f'prompt_location={location!r} has none')
        if location in PIXEL_LOCATIONS and resolve_prompt_layers(
                prompt_layers, num_layers) != [0]:
            raise ValueError(
                f'prompt_location={location!r} puts prompts into the input '
                f"image, which enters once: use prompt_layers='shallow', "
                f'got {prompt_layers!r}')
        if location == 'add':
            grid = self.prompt_patch_embed()[2]
            if prompt_length != grid[0] * grid[1]:
                raise ValueError(
                    f"prompt_location='add' adds one prompt to each patch "
                    f'token: prompt_length must be the number of patches of '
                    f'the configured image size, {grid[0]}x{grid[1]} = '
                    f'{grid[0] * grid[1]} (or 0), got {prompt_length}')

    @property
    def num_prompt_tokens(self) -> int:
        """Prompt tokens a prompted layer's sequence holds."""
        return self.prompt_length if self.prompt_layers and \
            self.prompt_location in TOKEN_LOCATIONS else 0

    def check_cls_feature(self, cls_feature: str) -> str:
        """Validate a ViT's ``cls_feature`` (see :data:`CLS_FEATURES`)."""
        if cls_feature not in CLS_FEATURES:
            raise ValueError(f'cls_feature must be one of {CLS_FEATURES}, '
                             f'got {cls_feature!r}')
        if cls_feature == 'prompt-pool' and not self.num_prompt_tokens:
            raise ValueError(
                "cls_feature='prompt-pool' averages the prompt tokens, but "
                f'this backbone has none (prompt_length={self.prompt_length}'
                f', prompt_location={self.prompt_location!r})')
        return cls_feature

    def cls_output(self, x: torch.Tensor, num_prefix: int,
                   num_prompts: int) -> torch.Tensor:
        """The (B, C) vector ``cls_feature`` names, from a sequence
        ``[prefix tokens, prompts, patches]``."""
        feature = getattr(self, 'cls_feature', 'cls')
        if feature == 'cls':
            return x[:, 0]
        if feature == 'image-pool':
            return x[:, num_prefix + num_prompts:].mean(1)
        if feature == 'prompt-pool':
            return x[:, num_prefix:num_prefix + num_prompts].mean(1)
        return x.mean(1)

    @torch.no_grad()
    def reset_prompts(self) -> None:
        """Initialise prompts with the paper's rule (or N(0, 0.02));
        pixel-space prompts like image pixels."""
        for prompt in self._channel_prompts:
            prompt.reset_parameters()
        for tensor in self.prompt_tensors():
            if self.prompt_location == 'prepend-pixel':
                init_pixel_prompts(tensor, self.prompt_init)
            elif self.prompt_init == 'uniform':
                bound = self._prompt_init_bound
                tensor.uniform_(-bound, bound)
            else:
                nn.init.normal_(tensor, std=0.02)
        if self.prompt_proj is not None:
            kaiming_init(self.prompt_proj, mode='fan_out', bias=0.)

    def is_prompted(self, layer: int) -> bool:
        """Whether ``layer`` receives fresh prompts."""
        return layer in self._prompt_slots

    def layer_prompts(self, layer: int, batch_size: int,
                      grid: Optional[Tuple[int, int]] = None
                      ) -> Optional[torch.Tensor]:
        """Fresh prompts for ``layer`` as (batch, prompt_length, dims), or
        None when the layer keeps the previous layer's prompt outputs.
        ``grid``: the input's patch grid (``'add'`` prompts follow it)."""
        slot = self._prompt_slots.get(layer)
        if slot is None:
            return None
        stage, row = slot
        prompts = self.prompt_tensors()[stage][row]
        if self.prompt_location == 'prepend-pixel':
            conv, norm, _ = self.prompt_patch_embed()
            pixels = prompts.reshape(-1, conv.in_channels, *conv.kernel_size)
            prompts = conv(pixels).flatten(1)  # (L, C): one token each
            prompts = prompts if norm is None else norm(prompts)
        elif self.prompt_location == 'add' and grid is not None:
            prompts = resize_grid(prompts, self.prompt_patch_embed()[2],
                                  grid)
        if self.prompt_proj is not None:
            prompts = self.prompt_proj(prompts)
        # expand before dropout so that every sample gets its own mask
        return self.prompt_dropout(prompts.expand(batch_size, -1, -1))

    def prompt_flow(self, batch_size: int,
                    grid: Optional[Tuple[int, int]] = None) -> PromptFlow:
        """The prompts of one forward pass over ``batch_size`` samples
        (``grid``: their patch grid): the backbone's own, or per-sample
        ones inside :meth:`mixed_prompts`."""
        token_init = getattr(self, '_token_init', None)
        if token_init is not None:
            return TokenInitFlow(self, batch_size, grid, *token_init)
        mixed = getattr(self, '_mixed_prompts', None)
        if mixed is None:
            return PromptFlow(self, batch_size, grid)
        if mixed[1].numel() != batch_size:
            raise ValueError(f'mixed_prompts names the prompt sets of '
                             f'{mixed[1].numel()} samples, but the batch has '
                             f'{batch_size}')
        return MixedPromptFlow(*mixed)

    @torch.no_grad()
    def init_prompts_from_tokens(self, inputs: torch.Tensor,
                                 method: str = 'kmeans',
                                 seed: int = 0) -> int:
        """Set every prompt from the image tokens that ``inputs`` (a batch
        of preprocessed images) bring to its layer, in one forward pass of
        the frozen backbone (:mod:`~mmseg_vpt.models.prompt_token_init`;
        ``method``: ``'kmeans'`` centres, or ``'sample'``: tokens drawn at
        random). Returns how many prompt sets (layers, or stages with
        ``prompt_shared``) were set: those of layers the forward pass ran."""
        if method not in TOKEN_INIT_METHODS:
            raise ValueError(f'method must be one of {TOKEN_INIT_METHODS}, '
                             f'got {method!r}')
        if not self.prompt_layers or self.prompt_location != 'prepend' or \
                self.prompt_proj is not None:
            raise ValueError(
                f'{type(self).__name__}: prompts initialised from tokens '
                f'need latent prompts as wide as the tokens (prompt_length'
                f' > 0, prompt_location=\'prepend\', no prompt_proj_dims); '
                f'got prompt_length={self.prompt_length}, prompt_location='
                f'{self.prompt_location!r}, prompt_proj='
                f'{self.prompt_proj is not None}')
        was_training = self.training
        self.eval()
        done = set()
        self._token_init = (method, torch.Generator().manual_seed(seed),
                            done)
        try:
            self(inputs)
        finally:
            self._token_init = None
            self.train(was_training)
        return len(done)

    @contextlib.contextmanager
    def mixed_prompts(self, prompt_sets: Sequence,
                      sample_sets: torch.Tensor) -> Iterator[None]:
        """Run forward passes in which sample ``b`` carries the prompts of
        ``prompt_sets[sample_sets[b]]`` instead of this backbone's own
        (one frozen backbone serving many tasks, :mod:`mmseg_vpt.serving`).
        Each set must have this backbone's layer and stage layout."""
        def layout(host):
            geometry = getattr(host, 'prompt_geometry', {})
            return geometry.get('stage_dims'), geometry.get('stage_depths')

        for s in [self] + list(prompt_sets):
            location = getattr(s, 'prompt_location', 'prepend')
            if location != 'prepend':
                raise ValueError(
                    f'mixed_prompts runs prepended prompts only; a prompt '
                    f'set or the backbone has prompt_location={location!r}')
        for s in prompt_sets:
            if layout(s) != layout(self):
                raise ValueError(
                    f'a prompt set for stage widths and depths {layout(s)} '
                    f'cannot run in {type(self).__name__} with {layout(self)}')
        self._mixed_prompts = (list(prompt_sets), sample_sets)
        try:
            yield
        finally:
            self._mixed_prompts = None

    # parameters that pretrained weights need not provide (regexes)
    pretrained_optional: Tuple[str, ...] = ('prompt', )

    def pretrained_layout(self, state_dict: Dict[str, torch.Tensor],
                          info: ConversionInfo
                          ) -> Tuple[Dict[str, torch.Tensor], str]:
        """A weights file's tensors under this backbone's keys, and the
        file's layout (here: mmseg's, from timm / official Swin / mmseg
        files; see :mod:`~mmseg_vpt.models.convert`)."""
        return convert_to_mmseg(state_dict, info=info)

    def fit_pretrained(self, state_dict: Dict[str, torch.Tensor],
                       info: ConversionInfo) -> Dict[str, torch.Tensor]:
        """Renamed tensors resized to this backbone (position embeddings,
        relative-position tables); an error for what does not fit."""
        return adapt_to_model(state_dict, self, info=info)

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained')`` all or nothing (see
        :func:`~mmseg_vpt.models.pretrained.load_pretrained`): a frozen
        backbone cannot recover from weights its parent's non-strict load
        silently skipped. Otherwise the parent's init, then the prompts'."""
        self.frozen_weights_set = True  # on purpose, from a file or random
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            # weights files have no adapters: they start as the identity
            optional = tuple(self.pretrained_optional) + (r'\.adapter\.', )
            load_pretrained(self, cfg['checkpoint'], optional)
            self._is_init = True
            return
        super().init_weights()
        # the parent's random init re-initialises every Linear layer
        self.reset_prompts()
        for adapter in self.adapters:
            adapter.reset_parameters()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              *args, **kwargs) -> None:
        """Load a tuned-only checkpoint's base weights first, from the record
        it carries in the state dict's metadata, and refuse to leave frozen
        weights random (:func:`~.base_weights.load_into_backbone`). Here
        rather than in a tool, so that mmseg's ``init_model``,
        ``MMSegInferencer`` and mmengine's ``load_checkpoint`` get it too."""
        load_into_backbone(self, state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      *args, **kwargs)

    def train(self, mode: bool = True):
        """Keep the frozen backbone in eval mode, as the VPT reference does,
        so its dropout and drop-path stay off while prompts train; prompt
        dropout still follows ``mode``. ``frozen_eval=False`` turns this off.
        """
        super().train(mode)
        if mode and self.frozen_eval and has_frozen_parameters(self):
            for module in self.children():
                module.eval()
            self.prompt_dropout.train()
        return self
