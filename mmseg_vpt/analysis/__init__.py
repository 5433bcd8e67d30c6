"""Analysis helpers: prompt attention maps and training curves."""
from .prompt_attention import (LayerAttention, PromptAttentionRecorder,
                               render_attention_grid)

__all__ = ['LayerAttention', 'PromptAttentionRecorder', 'render_attention_grid']
