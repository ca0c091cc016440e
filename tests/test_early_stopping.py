"""Early stopping: with patience 1 and a validation metric that cannot improve, training stops at the second
evaluation (the first sets the best value, the second does not beat it), far before --max-steps."""

from __future__ import annotations

from test_training import small_run

import distilvit.training.trainer as trainer_mod


def test_patience_one_stops_at_the_second_evaluation(tmp_path, tiny_lm, monkeypatch):
    scores = []

    def constant(predictions, references, use_meteor=False):
        scores.append(len(predictions))
        return {"bleu_4": 0.1, "rouge_l": 0.2, "cider": 0.5, "exact_match": 0.0}

    monkeypatch.setattr(trainer_mod, "compute_caption_metrics", constant)
    result = small_run(tmp_path, tiny_lm, max_steps=12, eval_steps=2, save_steps=2, eval_captions=2,
                       metric_for_best_model="cider", early_stopping_patience=1)
    evals = [entry["step"] for entry in result.log_history if "eval_cider" in entry]
    trained = [entry["step"] for entry in result.log_history if "loss" in entry]
    # evaluated at steps 2 and 4, stopped there; the last entry is the final evaluation of the saved model
    assert evals == [2, 4, 4] and len(scores) == 3
    assert max(trained) == 4 < 12
