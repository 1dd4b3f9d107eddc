"""Tune and measure the text moderation on the labelled prompt set.

    .venv/bin/python bench/moderation/evaluate.py [--tune] [--write]

Each prompt of bench/moderation/prompts.jsonl has a split: tune, test, or holdout (a batch written
after the policy was settled, never looked at while tuning). `--tune` picks, per category, the lowest
semantic threshold at which no benign prompt of the tune split is flagged by that category's
semantic score (a margin of 0.02 above the highest benign score, so benign false positives stay
rare), and prints them for policy.toml. Without it the policy's thresholds are used. The report
gives precision and recall of "blocked" against "harmful" on the test split (and on all prompts),
the benign false-positive rate, and recall per category, for each split and all prompts; `--write`
appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from daguerre.moderation.text import PolicyTextChecker

HERE = Path(__file__).parent
RESULTS = HERE.parent / "RESULTS.md"


def load() -> list[dict[str, str]]:
    return [json.loads(line) for line in (HERE / "prompts.jsonl").read_text().splitlines()]


def tune(checker: PolicyTextChecker, rows: list[dict[str, str]]) -> dict[str, float]:
    benign = [r for r in rows if r["split"] == "tune" and r["label"] == "benign"]
    highest: dict[str, float] = {}
    for row in benign:
        for category, score in checker.scores(row["text"]).items():
            highest[category] = max(highest.get(category, 0.0), score)
    return {category: round(score + 0.02, 3) for category, score in highest.items()}


def report(checker: PolicyTextChecker, rows: list[dict[str, str]]) -> dict[str, object]:
    def metrics(subset: list[dict[str, str]]) -> dict[str, object]:
        tp = fp = fn = tn = 0
        per_label: dict[str, list[int]] = {}
        mistakes = []
        for row in subset:
            flagged = checker.check(row["text"]) is not None
            harmful = row["label"] != "benign"
            tp += flagged and harmful
            fp += flagged and not harmful
            fn += not flagged and harmful
            tn += not flagged and not harmful
            hits = per_label.setdefault(row["label"], [0, 0])
            hits[0] += flagged
            hits[1] += 1
            if flagged != harmful:
                mistakes.append(f"{row['label']}: {row['text']}")
        return {
            "prompts": len(subset),
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
            "benign_false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
            "flagged_per_label": {label: f"{a}/{b}" for label, (a, b) in sorted(per_label.items())},
            "mistakes": mistakes,
        }

    return {
        "holdout": metrics([r for r in rows if r["split"] == "holdout"]),
        "test": metrics([r for r in rows if r["split"] == "test"]),
        "all": metrics(rows),
    }


def latency(checker: PolicyTextChecker) -> dict[str, float]:
    """Median time of one text check (a prompt that passes, so the semantic check runs) and one
    NudeNet check of a 1024² image, after warming up."""
    import numpy as np
    from PIL import Image

    from daguerre.moderation.image import NudeNetChecker

    def median_ms(call: Callable[[], object], repeat: int = 30) -> float:
        call()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times), 1)

    prompt = "a red fox in the snow at dusk, oil painting, highly detailed"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    images = NudeNetChecker()
    return {
        "text": median_ms(lambda: checker.check(prompt)),
        "image_1024": median_ms(lambda: images.check(image)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = load()
    checker = PolicyTextChecker()
    if args.tune:
        thresholds = tune(checker, rows)
        print("thresholds for policy.toml:", json.dumps(thresholds))
        checker = PolicyTextChecker(thresholds)
    result = report(checker, rows)
    result["latency_ms"] = latency(checker)
    print(json.dumps(result, indent=2))
    if args.write:
        write(result, checker.thresholds)


def write(result: dict[str, object], thresholds: dict[str, float]) -> None:
    lines = [
        f"### Text moderation on the labelled prompt set — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. "
        "Command: `python bench/moderation/evaluate.py --write` on bench/moderation/prompts.jsonl "
        "(built by bench/moderation/build_prompts.py; thresholds "
        f"chosen on the tune split: {json.dumps(thresholds)}).",
        "",
        "| split | prompts | precision | recall | benign false positives | flagged per label |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for split in ("holdout", "test", "all"):
        m = result[split]
        assert isinstance(m, dict)
        per_label = ", ".join(f"{k} {v}" for k, v in m["flagged_per_label"].items())
        lines.append(
            f"| {split} | {m['prompts']} | {m['precision']:.0%} | {m['recall']:.0%} | "
            f"{m['benign_false_positive_rate']:.1%} | {per_label} |"
        )
    timing = result["latency_ms"]
    assert isinstance(timing, dict)
    lines += [
        "",
        f"Time per check (median, one process): text {timing['text']} ms, "
        f"image (NudeNet, 1024² output) {timing['image_1024']} ms.",
    ]
    mistakes = result["all"]["mistakes"]  # type: ignore[index]
    if mistakes:
        lines += ["", "Mistakes on the whole set:", "", *(f"- {m}" for m in mistakes)]
    lines.append("")
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
