"""table1_findings names what its tables lack instead of raising a bare KeyError."""

import pandas as pd
import pytest

from gatlib import scene_eval

KEYS = {"segmentation": "foreground_accuracy", "detection": "map"}


def table(rows, key="foreground_accuracy"):
    return pd.DataFrame({f"clean_{key}_mean": [0.9] * len(rows), f"adversarial_{key}_mean": [0.5] * len(rows)},
                        index=rows)


def test_a_missing_original_row_is_named_with_the_rows_present():
    with pytest.raises(ValueError, match=r"segmentation table has no 'original' row "
                                         r"\(rows present: \['gat', 'control-generated'\]\)"):
        scene_eval.table1_findings({"segmentation": table(["gat", "control-generated"])}, KEYS)


def test_a_missing_headline_column_is_named():
    with pytest.raises(ValueError, match=r"detection table lacks column\(s\) \['clean_map_mean', "
                                         r"'adversarial_map_mean'\]"):
        scene_eval.table1_findings({"detection": table(["original"])}, KEYS)


def test_a_task_without_a_headline_key_is_named():
    with pytest.raises(ValueError, match=r"keys has no headline metric for 'detection'"):
        scene_eval.table1_findings({"detection": table(["original"], "map")}, {"segmentation": "foreground_accuracy"})
    with pytest.raises(ValueError, match=r"task must be one of \['detection', 'segmentation'\], got 'depth'"):
        scene_eval.table1_findings({"depth": table(["original"])}, KEYS)
