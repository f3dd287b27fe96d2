"""The benchmark scripts' own logic (their figures come from real runs, not from tests)."""

import sys
from pathlib import Path

from catdog.evaluation.evaluate import write_predictions

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import accuracy  # noqa: E402 - a benchmark that does not import is a failure, not a skip


def test_the_error_list_puts_confident_mistakes_first_then_pets_given_up(tmp_path):
    rows = [
        {"path": "right.jpg", "label": "dog", "logit": 3.0, "p_dog": 0.95, "answer": "dog"},
        {"path": "unsure.jpg", "label": "dog", "logit": -0.2, "p_dog": 0.45, "answer": "cat", "dog_odds": 4.0},
        {"path": "sure.jpg", "label": "cat", "logit": 4.0, "p_dog": 0.98, "answer": "dog"},
        {"path": "gave-up.jpg", "label": "cat", "logit": -5.0, "p_dog": 0.01, "answer": "unknown", "p_pet": 0.001},
        {"path": "broken.jpg", "label": "cat", "error": "cannot read"},
    ]
    write_predictions(tmp_path / "predictions_test.csv", rows)
    listed = accuracy.mistakes(tmp_path, tta=False)
    assert [e["path"] for e in listed] == ["sure.jpg", "unsure.jpg", "gave-up.jpg"]
    assert listed[1]["dog_odds"] == 4.0 and listed[2]["p_pet"] == 0.001 and "p_pet" not in listed[0]
