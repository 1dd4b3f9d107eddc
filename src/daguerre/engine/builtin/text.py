"""The built-in model's tokenizer and text encoder configuration.

The tokenizer is word-level (`tokenizers.models.WordLevel`), its vocabulary every word the scene
generator's captions and instructions use, plus the special tokens of `model.SPECIAL_TOKENS`.
Words outside the vocabulary become `[UNK]`. It is a `transformers.PreTrainedTokenizerFast`, saved
and loaded with the pipeline.
"""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import BertConfig, PreTrainedTokenizerFast

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.model import MAX_TEXT_TOKENS, SLOTS, SPECIAL_TOKENS


def vocabulary(samples: int = 20000, seed: int = 0) -> list[str]:
    """Every word the generator writes, found by drawing many captions and instructions."""
    rng = random.Random(seed)
    words: set[str] = set()
    splitter = pre_tokenizers.Whitespace()
    for i in range(samples):
        scene = scenes.sample_scene(rng, rng.choice(tuple(scenes.training_ratios())))
        texts = [scenes.describe(scene, rng)]
        if i % 2 == 0:
            texts.append(scenes.sample_edit(rng, scene).instruction)
        for text in texts:
            words.update(word for word, _ in splitter.pre_tokenize_str(text.lower()))
    for table in (scenes.COLOUR_WORDS, scenes.SIZE_WORDS):
        for synonyms in table.values():
            words.update(synonyms)
    for pairs in scenes.SHAPE_WORDS.values():
        for singular, plural in pairs:
            words.update((singular, plural))
    return SPECIAL_TOKENS + sorted(words - set(SPECIAL_TOKENS))


UNK, PAD, CLS, SEP = "[UNK]", "[PAD]", "[CLS]", "[SEP]"


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    model = WordLevel({word: i for i, word in enumerate(words)}, unk_token=UNK)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        model_max_length=MAX_TEXT_TOKENS,
    )


def text_encoder_config(vocab_size: int, hidden_size: int = 128, layers: int = 3) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=MAX_TEXT_TOKENS + 8,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )


def encode_prompts(
    tokenizer: PreTrainedTokenizerFast, prompts: list[str], ratios: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for `[CLS] [R:ratio] [OBJ1] [OBJ2] [OBJ3] [BG] words [SEP]`."""
    prefix_len = 2 + SLOTS + 1
    budget = MAX_TEXT_TOKENS - prefix_len - 1
    rows: list[list[int]] = []
    for prompt, ratio in zip(prompts, ratios, strict=True):
        words = tokenizer(prompt, add_special_tokens=False)["input_ids"][:budget]
        prefix = ["[CLS]", f"[R:{ratio}]", *(f"[OBJ{k + 1}]" for k in range(SLOTS)), "[BG]"]
        rows.append(tokenizer.convert_tokens_to_ids(prefix) + words + [tokenizer.sep_token_id])
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask
