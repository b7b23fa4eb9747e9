# sglang imports InterpolationMode from torchvision.transforms itself (configs/deepseek_ocr.py).
from . import functional
from .functional import InterpolationMode

__all__ = ["InterpolationMode", "functional"]
