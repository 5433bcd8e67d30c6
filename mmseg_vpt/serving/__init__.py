"""Serving many tasks from one frozen backbone: mixed-task batches, prompt
ensembles, and an HTTP server with dynamic batching (``tools/serve.py``)."""
from .multitask import (FrozenWeightsChanged, MultiTaskSegmentor, Task,
                        TaskConflict, TaskError, TaskMember, UnknownTask,
                        slide_boxes)
from .task_prompts import TaskPrompts

__all__ = [
    'FrozenWeightsChanged', 'MultiTaskSegmentor', 'Task', 'TaskConflict',
    'TaskError', 'TaskMember', 'TaskPrompts', 'UnknownTask', 'slide_boxes'
]
