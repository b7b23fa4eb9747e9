"""Build the byte-level BPE tokenizer of the tiny CPU model (``saga_sgl/assets/tiny-llama``).

The tiny Llama config has a 512-id vocabulary and dummy weights, so any tokenizer with exactly 512
ids and Llama's special ids (``<unk>``=0, ``<s>``=1, ``</s>``=2, LlamaConfig's defaults) lets an
SGLang CPU worker serve text, chat and grammars. Byte-level, so every string encodes (no ``<unk>``)
and every id the model can emit decodes.

Reproducible and offline: the training corpus is text that ships with the pinned sglang==0.5.23
(its DSL sources and test prompts), read in a fixed order; ``tokenizers`` BPE training is
deterministic for a fixed corpus. ``--check`` rebuilds into a temporary directory and fails if the
committed files differ. The files are committed; setup never regenerates them.

    python scripts/build_tiny_tokenizer.py            # write the files next to config.json
    python scripts/build_tiny_tokenizer.py --check    # verify the committed files
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

VOCAB_SIZE = 512
"""Must equal ``vocab_size`` in the model's config.json."""
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
"""Ids 0, 1, 2: LlamaConfig's default pad/bos/eos layout (bos_token_id=1, eos_token_id=2)."""
MODEL_DIR = Path(__file__).resolve().parents[1] / "saga_sgl" / "assets" / "tiny-llama"
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")

# A minimal Llama-2-like chat template, for the server's OpenAI chat API (the DSL uses its own).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def corpus_files() -> list[Path]:
    """Text shipped with sglang 0.5.23, in a fixed order."""
    import sglang

    root = Path(sglang.__file__).resolve().parent
    files = [root / "test" / "long_prompt.txt", root / "test" / "test_programs.py"]
    files += sorted((root / "lang").rglob("*.py"))
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"corpus file(s) missing (is sglang==0.5.23 installed?): {missing}")
    return files


def corpus_lines(files: list[Path]) -> Iterator[str]:
    for f in files:
        yield from f.read_text(encoding="utf-8").splitlines()


def build(out_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(corpus_files()), trainer=trainer)
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(f"trained vocabulary has {tok.get_vocab_size()} ids, expected {VOCAB_SIZE}")
    for i, special in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(special) != i:
            raise SystemExit(f"{special} got id {tok.token_to_id(special)}, expected {i}")
    # Like Llama: every encoded text starts with <s>.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    unk, bos, eos = SPECIAL_TOKENS
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "pad_token": unk,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    special_map = {"bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": unk}
    generation_config = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    for name, data in (
        ("tokenizer_config.json", tokenizer_config),
        ("special_tokens_map.json", special_map),
        ("generation_config.json", generation_config),
    ):
        (out_dir / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=MODEL_DIR, help=f"directory to write the files into (default {MODEL_DIR})"
    )
    parser.add_argument(
        "--check", action="store_true", help="rebuild into a temporary directory and compare with --out"
    )
    args = parser.parse_args(argv)
    if not args.check:
        build(args.out)
        print(f"wrote {', '.join(FILES)} to {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        _, mismatch, errors = filecmp.cmpfiles(args.out, tmp, FILES, shallow=False)
    if mismatch or errors:
        print(f"tokenizer files differ from a fresh build: {mismatch + errors}", file=sys.stderr)
        return 1
    print("committed tokenizer files match a fresh build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
