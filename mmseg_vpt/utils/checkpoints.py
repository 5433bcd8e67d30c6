"""Checkpoint files: fail fast, and name the file, when one is missing, empty,
cut short or not a checkpoint.

torch reports a truncated file as "failed finding central directory" (or,
for small files, a bare ``OSError: Invalid argument``) and an empty one as a
bare ``EOFError``, naming no file; mmengine only notices a missing
``init_cfg`` checkpoint after building the whole model. So:

* :func:`check_checkpoint_file` looks at a file's structure without loading
  its tensors (a zip's central directory, a legacy file's magic number, a
  safetensors header) and says what is wrong, with the path and size;
* tools run it on every checkpoint a config names before building anything
  (:func:`check_checkpoints_exist`), and the project's readers call it;
* mmengine's local checkpoint loader (behind ``load_from``, ``--resume``,
  auto-resume, ``mmseg.apis.init_model``...) is replaced by one that checks
  the file the same way and names it in every load error.

Remote checkpoints (URLs, ``open-mmlab://``, ``s3://``...) load through
mmengine's ``CheckpointLoader``; :func:`local_checkpoint_path` gives the
local copy a URL is cached in, for hashing. ``timm://NAME`` is the weights
file of timm's pretrained tag NAME (:func:`timm_hub_file`), kept in the
Hugging Face cache like any timm download.
"""
import json
import os.path as osp
import pickle
import tarfile
import zipfile
from typing import Any, Iterator, Mapping, Optional, Tuple
from urllib.parse import urlparse

import torch
from mmengine.config import Config
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

# how torch.save's legacy (non-zip) format starts, one per pickle protocol
_LEGACY_TORCH_HEADS = tuple(
    pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=p)
    for p in range(2, pickle.HIGHEST_PROTOCOL + 1))
_ZIP_LOCAL_HEADER = b'PK\x03\x04'


class CheckpointFileError(ValueError):
    """A checkpoint file is empty, cut short, or not a checkpoint."""


def is_remote(path: str) -> bool:
    """URLs and mmengine prefixes (``open-mmlab://``, ``s3://``...)."""
    return '://' in path


def _describe(path: str, key: Optional[str]) -> str:
    """``Checkpoint file 'PATH' (N bytes), named by KEY,``"""
    origin = f', named by {key},' if key else ''
    if is_remote(path) or not osp.isfile(path):
        return f'Checkpoint {path!r}{origin}'
    return f'Checkpoint file {path!r} ({osp.getsize(path)} bytes){origin}'


def _safetensors_problem(path: str, size: int) -> Optional[str]:
    with open(path, 'rb') as f:
        head = f.read(8)
        if len(head) < 8:
            return ('truncated or not a safetensors file: shorter than the '
                    '8-byte header length')
        header_bytes = int.from_bytes(head, 'little')
        if 8 + header_bytes > size:
            return (f'truncated or not a safetensors file: its header should '
                    f'be {header_bytes} bytes long')
        try:
            header = json.loads(f.read(header_bytes))
            data_bytes = max((v['data_offsets'][1] for k, v in header.items()
                              if k != '__metadata__'), default=0)
        except (ValueError, TypeError, KeyError, IndexError):
            return 'not a safetensors file: its header is not a tensor index'
    if 8 + header_bytes + data_bytes > size:
        return (f'truncated: its header lists {data_bytes} bytes of tensor '
                f'data, the file holds {size - 8 - header_bytes}')
    return None


def _torch_file_problem(path: str) -> Optional[str]:
    with open(path, 'rb') as f:
        head = f.read(32)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            return f'truncated or not a torch checkpoint: {err}'
        if not any(n == 'data.pkl' or n.endswith('/data.pkl')
                   for n in names):
            return ('not a torch checkpoint: a zip archive without data.pkl '
                    f'(it holds {", ".join(names[:3]) or "nothing"})')
        return None
    if head.startswith(_ZIP_LOCAL_HEADER):
        return ('truncated or not a torch checkpoint: it starts like a torch '
                'zip archive but has no central directory (the index a zip '
                'ends with), so it was cut short, e.g. by an interrupted '
                'copy, download or save')
    if head.startswith(_LEGACY_TORCH_HEADS) or tarfile.is_tarfile(path):
        return None  # torch.save's formats before the zip one
    return ('not a torch checkpoint: neither a torch zip archive nor a '
            f'legacy torch file (it starts with {head[:16]!r})')


def checkpoint_file_problem(path: str) -> Optional[str]:
    """What is structurally wrong with the local file ``path``, or None.

    Cheap: reads a zip's central directory, a legacy torch file's magic
    number or a safetensors header, never the tensors. A file that passes
    can still fail to load (damaged tensor data); the loaders report that
    with :func:`unreadable_checkpoint`.
    """
    size = osp.getsize(path)
    if size == 0:
        return 'an empty file'
    if path.endswith('.safetensors'):
        return _safetensors_problem(path, size)
    return _torch_file_problem(path)


def check_checkpoint_file(path: str, key: Optional[str] = None) -> None:
    """Raise, naming ``path``, its size and ``key`` (what named the file,
    e.g. ``'config key `load_from`'`` or ``'argument TUNED'``), if the local
    checkpoint ``path`` is missing, empty, cut short or not a checkpoint.
    Remote paths are left to mmengine's loader.

    Raises:
        FileNotFoundError: no such file.
        CheckpointFileError: see :func:`checkpoint_file_problem`.
    """
    if is_remote(path):
        return
    if not osp.isfile(path):
        origin = f' (named by {key})' if key else ''
        raise FileNotFoundError(
            f'Checkpoint file {path!r}{origin} does not exist (resolved: '
            f'{osp.abspath(path)})')
    problem = checkpoint_file_problem(path)
    if problem is not None:
        raise CheckpointFileError(f'{_describe(path, key)} is {problem}.')


def unreadable_checkpoint(path: str, err: BaseException,
                          key: Optional[str] = None) -> CheckpointFileError:
    """The error for a checkpoint whose loader failed with ``err``."""
    if is_remote(path):
        return CheckpointFileError(
            f"{_describe(path, key)} could not be loaded by mmengine's "
            f'CheckpointLoader ({type(err).__name__}: {err})')
    return CheckpointFileError(
        f'{_describe(path, key)} cannot be read; is it damaged or not a '
        f'checkpoint? ({type(err).__name__}: {err})')


def not_a_checkpoint(path: str, obj: Any,
                     key: Optional[str] = None) -> CheckpointFileError:
    """The error for a file that loads but holds no checkpoint dict."""
    return CheckpointFileError(
        f'{_describe(path, key)} holds a {type(obj).__name__}, not a '
        'checkpoint (a dict of tensors, or one with a state_dict)')


def read_checkpoint(path: str, key: Optional[str] = None) -> dict:
    """``torch.load`` a checkpoint written by mmengine or this project's
    tools (a URL or another mmengine scheme through mmengine's
    ``CheckpointLoader``), as ``{'meta', 'state_dict', ...}`` (a bare state
    dict is wrapped). Errors name the file, its size and ``key`` (what named
    it, e.g. ``'argument TUNED'``)."""
    check_checkpoint_file(path, key)
    try:
        ckpt = CheckpointLoader.load_checkpoint(path, 'cpu') if \
            is_remote(path) else \
            torch.load(path, map_location='cpu', weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch.load's many errors
        raise unreadable_checkpoint(path, err, key) from err
    if not isinstance(ckpt, Mapping):
        raise not_a_checkpoint(path, ckpt, key)
    if 'state_dict' not in ckpt:  # a bare state dict
        ckpt = {'meta': {}, 'state_dict': ckpt}
    return ckpt


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location=None) -> Mapping:
    """mmengine's local checkpoint loader (``load_from``, ``--resume``,
    auto-resume, ``load_checkpoint``), with errors that name the file."""
    path = osp.expanduser(filename)
    check_checkpoint_file(path)
    try:
        checkpoint = mmengine_checkpoint.load_from_local(path, map_location)
    except Exception as err:  # noqa: BLE001 - torch.load's many errors
        raise unreadable_checkpoint(path, err) from err
    if not isinstance(checkpoint, Mapping):
        raise not_a_checkpoint(path, checkpoint)
    return checkpoint


def _download_url(path: str) -> Optional[str]:
    """The http(s) URL that mmengine's CheckpointLoader downloads ``path``
    from (``torchvision://``, ``open-mmlab://`` and ``mmcls://`` names are
    looked up in mmengine's tables), a local file for ``open-mmlab://``
    names mapped to one, or None for other schemes."""
    if path.startswith(('http://', 'https://')):
        return path
    tables = (
        (('torchvision://', 'modelzoo://'),
         mmengine_checkpoint.get_torchvision_models),
        (('open-mmlab://', 'openmmlab://'),
         mmengine_checkpoint.get_external_models),
        (('mmcls://', ), mmengine_checkpoint.get_mmcls_models),
    )
    for prefixes, table in tables:
        prefix = next((p for p in prefixes if path.startswith(p)), None)
        if prefix is None:
            continue
        name = path[len(prefix):]
        if table is mmengine_checkpoint.get_external_models:
            name = mmengine_checkpoint.get_deprecated_model_names().get(
                name, name)
        urls = table()
        if name not in urls:
            raise CheckpointFileError(
                f'Checkpoint {path!r}: mmengine knows no model {name!r} '
                f'under {prefix}')
        url = urls[name]
        if url.startswith(('http://', 'https://')):
            return url
        return osp.join(mmengine_checkpoint._get_mmengine_home(), url)
    return None


TIMM_SCHEME = 'timm://'
# what timm's hub loader looks for in a tag's repository, in its order
_HF_WEIGHTS_FILES = ('model.safetensors', 'pytorch_model.bin')


def timm_hub_file(path: str) -> str:
    """The local file of ``timm://NAME``: the weights of timm's pretrained
    tag NAME (e.g. ``timm://vit_large_patch14_reg4_dinov2.lvd142m``),
    from the Hugging Face cache, downloading them there first if they are
    not in it (the same file ``timm.create_model(NAME, pretrained=True)``
    uses; ``HF_HUB_OFFLINE=1`` only reads the cache).

    Raises:
        CheckpointFileError: NAME is no timm model, has no hub weights, or
            the file is neither cached nor downloadable (names the cache).
    """
    import timm
    from timm.models import get_pretrained_cfg
    name = path[len(TIMM_SCHEME):]
    try:
        cfg = get_pretrained_cfg(name) if timm.is_model(name) else None
    except RuntimeError as err:  # an unknown tag
        raise CheckpointFileError(f'Checkpoint {path!r}: {err}') from err
    if cfg is None or not cfg.hf_hub_id:
        raise CheckpointFileError(
            f'Checkpoint {path!r}: timm has no Hugging Face hub weights for '
            f'{name!r}. Name a pretrained tag, e.g. '
            "timm://vit_large_patch14_reg4_dinov2.lvd142m (timm.list_models"
            "('*dinov2*', pretrained=True) lists them), or a local file")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import (EntryNotFoundError,
                                        LocalEntryNotFoundError)
    repo, _, revision = cfg.hf_hub_id.partition('@')
    files = (cfg.hf_hub_filename, ) if cfg.hf_hub_filename else \
        _HF_WEIGHTS_FILES
    not_cached = None
    for filename in files:
        try:
            return hf_hub_download(repo, filename, revision=revision or None)
        except LocalEntryNotFoundError as err:  # offline, not cached
            not_cached = not_cached or err
        except EntryNotFoundError:
            continue
        except Exception as err:  # noqa: BLE001 - network, auth, ...
            raise unreadable_checkpoint(path, err) from err
    if not_cached is not None:
        raise CheckpointFileError(
            f'Checkpoint {path!r}: none of {list(files)} of {repo} is in the '
            f'Hugging Face cache ({HF_HUB_CACHE}), and they cannot be '
            'downloaded here. Fetch them on a machine with network access '
            f"(python -c \"import timm; timm.create_model('{name}', "
            "pretrained=True)\") and copy the cache (or set HF_HUB_CACHE), "
            'or save the file and name its local path instead') \
            from not_cached
    raise CheckpointFileError(f'Checkpoint {path!r}: the hub repository '
                              f'{repo} has none of {list(files)}')


@CheckpointLoader.register_scheme(prefixes=TIMM_SCHEME)
def load_from_timm_hub(filename: str, map_location=None) -> Mapping:
    """``timm://NAME`` for mmengine's loaders (``load_from``,
    ``load_checkpoint``): the tag's hub file, read as a local one."""
    local = timm_hub_file(filename)
    if local.endswith('.safetensors'):
        from safetensors.torch import load_file
        check_checkpoint_file(local)
        return load_file(local, device='cpu')
    return load_from_local(local, map_location)


def local_checkpoint_path(path: str) -> str:
    """The local file holding checkpoint ``path``: ``path`` itself, or for
    a URL (and the schemes mmengine maps to one) the file in torch hub's
    cache (``<hub dir>/checkpoints/<file name>``) that mmengine's
    CheckpointLoader downloads it to, downloading it first if it is not
    there. Used to fingerprint base weights named by URL.

    Raises:
        CheckpointFileError: the download failed (names the URL), or the
            scheme (``s3://``, ``pavi://``...) keeps no local copy.
    """
    if not is_remote(path):
        return path
    if path.startswith(TIMM_SCHEME):
        return timm_hub_file(path)
    url = _download_url(path)
    if url is None:
        raise CheckpointFileError(
            f'Checkpoint {path!r}: this scheme keeps no local copy to '
            'fingerprint; download the file and name the local path')
    if not url.startswith(('http://', 'https://')):
        return url
    cached = osp.join(torch.hub.get_dir(), 'checkpoints',
                      osp.basename(urlparse(url).path))
    if not osp.isfile(cached):
        try:
            CheckpointLoader.load_checkpoint(url, map_location='cpu')
        except Exception as err:  # noqa: BLE001 - urllib's and torch's
            raise unreadable_checkpoint(path, err) from err
    return cached


# --------------------------------------------------------------------------
# every checkpoint a config names
# --------------------------------------------------------------------------
def iter_checkpoint_refs(cfg: Config) -> Iterator[Tuple[str, str]]:
    """Yield ``(key_path, file)`` for every checkpoint the config loads.

    Covers ``Pretrained`` ``init_cfg`` dicts (or lists of them) anywhere in
    ``cfg.model``, ``pretrained`` keys in ``cfg.model`` and ``load_from``.
    """
    def walk(node: Any, path: str) -> Iterator[Tuple[str, str]]:
        if isinstance(node, dict):
            if (node.get('type') == 'Pretrained'
                    and isinstance(node.get('checkpoint'), str)):
                yield f'{path}.checkpoint', node['checkpoint']
            if isinstance(node.get('pretrained'), str):
                yield f'{path}.pretrained', node['pretrained']
            for key, value in node.items():
                yield from walk(value, f'{path}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                yield from walk(value, f'{path}.{i}')

    yield from walk(cfg.get('model'), 'model')
    if isinstance(cfg.get('load_from'), str):
        yield 'load_from', cfg.load_from


def check_checkpoints_exist(cfg: Config) -> None:
    """Raise for the first local checkpoint of ``cfg`` that is missing
    (``FileNotFoundError``), empty, cut short or not a checkpoint
    (:class:`CheckpointFileError`), naming the config key."""
    for key, path in iter_checkpoint_refs(cfg):
        if is_remote(path):
            continue
        if not osp.isfile(path):
            hint = ('Check the CHECKPOINT / --resume argument.'
                    if key == 'load_from' else
                    'Download or convert it as described in docs/'
                    'pretrained_and_timm.md ("Pretrained weights"), or '
                    'override it with '
                    f'--cfg-options {key}=PATH.')
            raise FileNotFoundError(
                f'Config key `{key}` refers to a checkpoint that does not '
                f'exist: {path!r} (resolved: {osp.abspath(path)}). {hint}')
        check_checkpoint_file(
            path, 'config key `load_from` (the CHECKPOINT / --resume '
            'argument)' if key == 'load_from' else f'config key `{key}`')
