import numpy as np
import pandas as pd

from reuse.toolkit.markdown import table


def test_table_escapes_and_formats():
    rows = [["p|q", 1 / 3], [None, float("nan")], ["a\nb", np.float32(0.25)]]
    assert table(["a|b", "x"], rows).splitlines() == [
        "| a\\|b | x |", "| --- | --- |", "| p\\|q | 0.3333 |", "|  |  |", "| a b | 0.25 |"]


def test_table_takes_a_frames_rows():
    frame = pd.DataFrame({"layer": ["conv1", "conv2"], "rmse": [0.123456, np.nan], "n": [3, 4]})
    assert table(list(frame.columns), frame.itertuples(index=False)).splitlines()[2:] == [
        "| conv1 | 0.1235 | 3 |", "| conv2 |  | 4 |"]
