"""Text side of the small models: a T5 sentencepiece tokenizer learned from captions.

The full KumoVideo reads prompts with T5-XXL and its sentencepiece vocabulary; the small
built-in model uses the same classes (`T5Tokenizer` + `T5EncoderModel`) with a vocabulary
learned here from ShapesWorld captions, so its prompts are at most 16 tokens instead of
~90 bytes. Learning it needs no download: sentencepiece trains on the captions in a second.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np


def shapes_caption_corpus(num: int = 20000, seed: int = 0) -> list[str]:
    from kumovideo.data.shapes_world import caption, sample_clip_spec

    rng = np.random.default_rng(seed)
    return [caption(sample_clip_spec(rng, size=64, num_frames=17)) for _ in range(num)]


def train_t5_tokenizer(sentences: list[str], out_dir: str | Path, vocab_size: int = 128):
    """Learn a BPE sentencepiece model (with 128 pieces every grammar word is one token;
    other words fall back to characters) (T5's ids: pad 0, eos 1, unk 2) and return a
    `T5Tokenizer` saved in `out_dir`."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (out_dir / "spiece.model").write_bytes(model.getvalue())
    # Loading from the folder (not the constructor) is the path every T5 checkpoint takes,
    # and the one that converts the sentencepiece model in every transformers version.
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "T5Tokenizer",
                "extra_ids": 0,
                "legacy": False,
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "model_max_length": 512,
            }
        )
    )
    tokenizer = T5Tokenizer.from_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def warn_unreadable_captions(tokenizer, captions: list[str], max_length: int, where: str) -> None:
    """One warning line each when the run's cached captions are longer than the text window
    (training truncates them, as generation does, but generation says so per prompt) or hold
    characters the tokenizer cannot read (they become <unk>: the built-in model's vocabulary
    is ShapesWorld's lowercase words), with an example of each."""
    import logging

    logger = logging.getLogger(__name__)
    unique = sorted(set(captions))
    if not unique:
        return
    ids = tokenizer(unique, add_special_tokens=True).input_ids
    long = [(caption, len(row)) for caption, row in zip(unique, ids) if len(row) > max_length]
    if long:
        caption, length = long[0]
        logger.warning(
            "%s: %d of %d captions are longer than the text window of %d tokens and train cut short "
            "(e.g. %r, %d tokens); shorten them or train a model with a longer max_text_seq_length",
            where,
            len(long),
            len(unique),
            max_length,
            caption,
            length,
        )
    unk = tokenizer.unk_token_id
    unreadable = [caption for caption, row in zip(unique, ids) if unk is not None and unk in row]
    if unreadable:
        logger.warning(
            "%s: %d of %d captions hold characters this tokenizer cannot read, which train as <unk> (e.g. %r); "
            "a model with another vocabulary reads them",
            where,
            len(unreadable),
            len(unique),
            unreadable[0],
        )
