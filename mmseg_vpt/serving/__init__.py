"""Serving many tasks from one frozen backbone: mixed-task batches, prompt
ensembles, and an HTTP server with dynamic batching (``tools/serve.py``;
the server lives in :mod:`mmseg_vpt.serving.server`, which needs the
``serve`` extra: FastAPI and uvicorn)."""
from .ensemble import PromptEnsembleSegmentor
from .multitask import (FrozenWeightsChanged, MultiTaskSegmentor, Task,
                        TaskConflict, TaskError, TaskExists, TaskMember,
                        UnknownTask, slide_boxes)
from .task_prompts import TaskPrompts

__all__ = [
    'FrozenWeightsChanged', 'MultiTaskSegmentor', 'PromptEnsembleSegmentor',
    'Task', 'TaskConflict', 'TaskError', 'TaskExists', 'TaskMember',
    'TaskPrompts', 'UnknownTask', 'slide_boxes'
]
