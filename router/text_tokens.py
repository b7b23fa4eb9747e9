"""Token ids of text prompts, with the model's own tokenizer, for token counts and prefix matching.

Loaded from ``tokenizer.json`` in the model directory (the ``tokenizers`` library, no transformers
import on the hot path). Without one, text prompts are routed by their characters (sglang-router's
own fallback: the code points of the routing text) and counted as characters / 4.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4


class TextTokens:
    def __init__(self, model_path: str | Path | None) -> None:
        self._tokenizer: Any = None
        if model_path is None:
            return
        path = Path(model_path) / "tokenizer.json"
        if not path.is_file():
            log.info("no tokenizer.json in %s: text prompts are matched by characters", model_path)
            return
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        log.info("text prompts tokenized with %s", path)

    @property
    def available(self) -> bool:
        return self._tokenizer is not None

    def ids(self, text: str) -> list[int] | None:
        if self._tokenizer is None:
            return None
        return list(self._tokenizer.encode(text).ids)

    def routing_ids(self, text: str) -> tuple[list[int], int]:
        """(ids to prefix-match, prompt token count) of a text prompt."""
        ids = self.ids(text)
        if ids is not None:
            return ids, len(ids)
        return [ord(c) for c in text], max(1, len(text) // CHARS_PER_TOKEN)
