"""The results files the benchmarks write for the chapters to read back."""

import json

from benchmarks.semantic_shapes import row_key, save
from utils.budgets import budget


def test_row_key_names_the_settings_a_row_was_measured_with():
    b = budget("03_fcn", "ci", image_size=128, epochs=2, width=0.25)
    assert row_key("segnet_mfb", b) == "segnet_mfb/width=0.25/epochs=2/size=128"


def test_update_keeps_other_settings_and_replaces_the_same_ones(tmp_path):
    path = tmp_path / "results" / "semantic_shapes.json"
    save(path, [{"key": "a", "miou": 0.1}, {"key": "b", "miou": 0.2}], False,
         {"run": 1})
    save(path, [{"key": "b", "miou": 0.3}, {"key": "c", "miou": float("nan")}],
         True, {"run": 2})
    saved = json.loads(path.read_text())
    assert {r["key"]: r["miou"] for r in saved["rows"]} == {
        "a": 0.1, "b": 0.3, "c": None}  # JSON has no NaN
    assert saved["runs"] == [{"run": 1}, {"run": 2}]
    save(path, [{"key": "c", "miou": 0.4}], False, {"run": 3})  # no --update
    saved = json.loads(path.read_text())
    assert saved["rows"] == [{"key": "c", "miou": 0.4}]
    assert saved["runs"] == [{"run": 3}]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
