"""The built-in model's tokenizer and text encoder configuration.

The tokenizer is word-level (`tokenizers.models.WordLevel`), its vocabulary every word the scene
generator's captions and instructions use, plus the special tokens of `model.SPECIAL_TOKENS`.
Words outside the vocabulary become `[UNK]`. It is a `transformers.PreTrainedTokenizerFast`, saved
and loaded with the pipeline.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import BertConfig, PreTrainedTokenizerFast

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.model import MAX_TEXT_TOKENS, SLOTS, SPECIAL_TOKENS


def vocabulary(samples: int = 20000, seed: int = 0) -> list[str]:
    """Every word the generator writes, found by drawing many captions and instructions."""
    rng = random.Random(seed)
    words = _words(world_phrases())
    for i in range(samples):
        scene = scenes.sample_scene(rng, rng.choice(tuple(scenes.training_ratios())))
        texts = [scenes.describe(scene, rng)]
        if i % 2 == 0:
            texts.append(scenes.sample_edit(rng, scene).instruction)
        words |= _words(texts)
    return SPECIAL_TOKENS + sorted(words - set(SPECIAL_TOKENS))


def world_phrases() -> list[str]:
    """Every colour, shape, size, count, fill and relation phrase of the generator."""
    phrases: list[str] = ["background", *scenes.OUTLINED_WORDS, *scenes.FILLED_WORDS]
    for table in (scenes.COLOUR_WORDS, scenes.SIZE_WORDS, scenes.COUNT_WORDS, scenes.RELATIONS):
        for synonyms in table.values():
            phrases.extend(synonyms)
    for pairs in scenes.SHAPE_WORDS.values():
        for singular, plural in pairs:
            phrases.extend((singular, plural))
    return phrases


def _words(texts: Iterable[str]) -> set[str]:
    """The words of these texts as the tokenizer splits them (lower-cased)."""
    splitter = pre_tokenizers.Whitespace()
    return {word for text in texts for word, _ in splitter.pre_tokenize_str(text.lower())}


SHAPE_VOCABULARY = _words(p for pairs in scenes.SHAPE_WORDS.values() for pair in pairs for p in pair) - {
    "sign",  # "plus sign" names a cross by "plus"
    "signs",
    "moon",  # "crescent moon" by "crescent"; "the moon" alone is no shape of this world
    "moons",
}
COLOUR_VOCABULARY = _words(w for words in scenes.COLOUR_WORDS.values() for w in words) - {"light", "pale"}


@dataclass(frozen=True)
class Reading:
    """How the text encoder reads a prompt: the words it knows, the words it ignores (not in its
    vocabulary), and the known words past what it reads at all."""

    known: tuple[str, ...]
    unknown: tuple[str, ...]
    unread: tuple[str, ...]

    @property
    def names_a_shape(self) -> bool:
        return any(word in SHAPE_VOCABULARY for word in self.known)

    @property
    def names_a_colour(self) -> bool:
        return any(word in COLOUR_VOCABULARY for word in self.known)


def read(tokenizer: PreTrainedTokenizerFast, prompt: str) -> Reading:
    """What sampling makes of a prompt (`encode_prompts` with `drop_unknown`): the known words it
    reads, the unknown ones it drops, and the known words past its budget."""
    words = [
        word
        for word, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(
            tokenizer.backend_tokenizer.normalizer.normalize_str(prompt)
        )
    ]
    vocabulary = tokenizer.get_vocab()
    known: list[str] = []
    unknown: list[str] = []
    unread: list[str] = []
    budget = _word_budget()
    for word in words:
        if word not in vocabulary:
            unknown.append(word)
        elif len(known) < budget:
            known.append(word)
        else:
            unread.append(word)
    return Reading(tuple(known), tuple(unknown), tuple(unread))


def _word_budget() -> int:
    return MAX_TEXT_TOKENS - (2 + SLOTS + 1) - 1


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
    tokenizer: PreTrainedTokenizerFast, prompts: list[str], ratios: list[str], drop_unknown: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for `[CLS] [R:ratio] [OBJ1] .. [OBJ4] [BG] words [SEP]`.

    Training texts keep their unknown words, a run of them as one `[UNK]` (training mixes unknown
    words in, so the heads learn to read past them). Sampling drops them (`drop_unknown`): they
    carry nothing this model can draw, and a trailing run of them ("…, 4k, trending on artstation")
    otherwise sits where captions name the background. Either way a long prompt keeps the words the
    model knows within its budget."""
    budget = _word_budget()
    unknown_id = tokenizer.unk_token_id
    rows: list[list[int]] = []
    for prompt, ratio in zip(prompts, ratios, strict=True):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if drop_unknown:
            words = [i for i in ids if i != unknown_id]
        else:
            words = [
                i for k, i in enumerate(ids) if not (i == unknown_id and k > 0 and ids[k - 1] == unknown_id)
            ]
        words = words[:budget]
        prefix = ["[CLS]", f"[R:{ratio}]", *(f"[OBJ{k + 1}]" for k in range(SLOTS)), "[BG]"]
        rows.append(tokenizer.convert_tokens_to_ids(prefix) + words + [tokenizer.sep_token_id])
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask
