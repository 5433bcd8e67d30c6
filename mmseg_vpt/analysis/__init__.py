"""Analysis helpers: prompt attention maps and training curves."""
from .prompt_attention import (LayerAttention, PromptAttentionRecorder,
                               render_attention_grid, swin_attention_probs,
                               vit_attention_probs)

__all__ = [
    'LayerAttention', 'PromptAttentionRecorder', 'render_attention_grid',
    'swin_attention_probs', 'vit_attention_probs'
]
