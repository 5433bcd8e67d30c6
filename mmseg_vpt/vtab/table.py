"""What VTAB-1k and FGVC share: the VPT paper's search grids and batch
rule, the tuning-method record, and the few-line per-task config.

Each benchmark's ``tasks.py`` holds its data (tasks, method rows, the
paper's numbers) and a :class:`TaskTable` that looks names up and renders
its configs. Imports nothing of this package: it sits in the data layer.

"The paper" is VPT (Jia et al., ECCV 2022, arXiv 2203.12119); values
marked "our default" are this project's choice.
"""
from typing import Mapping, Optional, Tuple, Union

__all__ = [
    'PAPER_LRS', 'PAPER_WDS', 'FULL_FT_LRS', 'BATCH_SIZE',
    'LONG_PROMPT_BATCH_SIZE', 'LONG_PROMPT', 'DEFAULT_PROMPT_LENGTH',
    'Method', 'TaskTable'
]

# The paper's grid for prompt (and head) learning rates, before the
# lr = base_lr * batch / 256 scaling, and for weight decay.
PAPER_LRS = (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05)
PAPER_WDS = (0.01, 0.001, 0.0001, 0.0)
# Our default for full fine-tuning: the prompt grid's rates diverge when all
# 86M weights train.
FULL_FT_LRS = (0.005, 0.001, 0.0005, 0.0001)

# The paper's protocol: batch 128, 64 when the prompt length is >= 100.
BATCH_SIZE = 128
LONG_PROMPT_BATCH_SIZE = 64
LONG_PROMPT = 100

# Prompt length for a task that a method's per-task table lacks (our
# default).
DEFAULT_PROMPT_LENGTH = 10

#: None: no prompts; an int: that length for every task; a mapping: the
#: length per task.
Prompts = Union[None, int, Mapping[str, int]]


class Method:
    """A tuning method: its base config under ``configs/<benchmark>/_base_/``
    and the per-task values it sets.

    Args:
        name: The name on the command line and in work folders.
        base: File name of its base config.
        backbone: The backbone's name in tables, e.g. ``'ViT-B/16'``.
        paper_name: Key (with ``backbone``) into the paper's numbers.
        prompts: Prompt tokens per layer (see :data:`Prompts`).
        lrs: Base learning rates of its grid.
        wds: Weight decays of its grid.
        description: One line for ``--help``.
    """

    def __init__(self, name: str, base: str, backbone: str, paper_name: str,
                 prompts: Prompts, lrs=PAPER_LRS, wds=PAPER_WDS,
                 description: str = ''):
        self.name = name
        self.base = base
        self.backbone = backbone
        self.paper_name = paper_name
        self.prompts = prompts
        self.lrs = tuple(lrs)
        self.wds = tuple(wds)
        self.description = description

    def prompt_length(self, task: str) -> int:
        if self.prompts is None:
            return 0
        if isinstance(self.prompts, int):
            return self.prompts
        return self.prompts.get(task, DEFAULT_PROMPT_LENGTH)

    def prompt_text(self, task: str) -> Tuple[str, str]:
        """The backbone override and the comment words of a rendered task
        config: ``('backbone=dict(prompt_length=10), ', '10 prompts')``."""
        if self.prompts is None:
            return '', 'no prompts'
        n = self.prompt_length(task)
        return (f'backbone=dict(prompt_length={n}), ',
                f'{n} prompt' + 's' * (n != 1))

    def batch_size(self, task: str) -> int:
        return (LONG_PROMPT_BATCH_SIZE if self.prompt_length(task) >=
                LONG_PROMPT else BATCH_SIZE)


class TaskTable:
    """A benchmark's tasks and methods, and how its per-task config reads.

    Args:
        label: The benchmark in error messages, e.g. ``'VTAB'``.
        noun: What a task is called in error messages (``'task'``,
            ``'dataset'``).
        num_classes: Task name -> class count, in the paper's order.
        methods: Method name -> :class:`Method`.
        task_variable: The config variable holding the task's name, e.g.
            ``'vtab_task'``.
        dataset_field: The dataset argument it fills, e.g. ``'task'``.
        renderer: The public function named in a rendered config's
            comment, e.g. ``'mmseg_vpt.vtab.tasks.render_task_config'``.
        guide: The documentation section named there.
    """

    def __init__(self, label: str, noun: str, num_classes: Mapping[str, int],
                 methods: Mapping[str, Method], task_variable: str,
                 dataset_field: str, renderer: str, guide: str):
        self.label = label
        self.noun = noun
        self.num_classes = num_classes
        self.methods = methods
        self.task_variable = task_variable
        self.dataset_field = dataset_field
        self.renderer = renderer
        self.guide = guide

    def check_task(self, name: str) -> None:
        if name not in self.num_classes:
            raise ValueError(f'unknown {self.label} {self.noun} {name!r}; '
                             f'choose from {list(self.num_classes)}')

    def get_method(self, name: str) -> Method:
        if name not in self.methods:
            raise ValueError(f'unknown {self.label} method {name!r}; choose '
                             f'from {list(self.methods)}')
        return self.methods[name]

    def _task_lines(self, task: str, num_classes: int, backbone: str,
                    batch: Optional[int]) -> str:
        var, field = self.task_variable, self.dataset_field
        batch_arg = '' if batch is None else f'batch_size={batch}, '
        return (f"{var} = '{task}'\n"
                f'model = dict({backbone}head=dict(num_classes='
                f'{num_classes}))\n'
                f'train_dataloader = dict({batch_arg}dataset=dict('
                f'{field}={var}))\n'
                f'val_dataloader = dict(dataset=dict({field}={var}))\n'
                f'test_dataloader = dict(dataset=dict({field}={var}))\n')

    def render(self, task: str, method: str, base_dir: str,
               headline: str) -> str:
        """The few-line config of a task of the table for ``method``: a
        ``headline`` comment, the method's base and the task lines."""
        self.check_task(task)
        m = self.get_method(method)
        batch = m.batch_size(task)
        backbone, what = m.prompt_text(task)
        return (f'# {headline}\n'
                f'# {m.backbone} {m.name}: {what}, batch {batch}.\n'
                f'# Written by {self.renderer}; README section\n'
                f'# "{self.guide}" explains the other methods.\n'
                f"_base_ = ['{base_dir}/{m.base}']\n" +
                self._task_lines(task, self.num_classes[task], backbone,
                                 batch))

    def render_custom(self, task: str, method: Method, num_classes: int,
                      base_dir: str) -> str:
        """The config of a task outside the table (a generated or custom
        one): the method's base with the task lines; batch size and prompt
        length stay the base's."""
        return (f'# custom task {task} ({num_classes} classes), '
                f'{method.backbone} {method.name}\n'
                f"_base_ = ['{base_dir}/{method.base}']\n" +
                self._task_lines(task, num_classes, '', None))
