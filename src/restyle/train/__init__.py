"""Fine-tuning the inpainting model: DreamBooth (prior preservation) and LoRA, through accelerate.

Depends on the core (inpaint, segment, prompts); the core never imports this package.
"""

from restyle.train.config import TrainConfig, parse_masks
from restyle.train.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "TrainResult", "Trainer", "parse_masks"]
