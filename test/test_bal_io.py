"""BAL reader/writer: the shared benchmark files, round trips, and bad-input errors with line numbers."""

import bz2

import numpy as np
import pytest

from mpslam_ros.io.bal import BALFormatError, read_bal, write_bal


def test_reads_shared_ladybug_file(data_dir):
    p = read_bal(data_dir / "ba" / "problem-49-1800-pre.txt")
    assert (p.num_cameras, p.num_points, p.num_observations) == (49, 1800, 10863)
    assert p.obs_cam.max() < 49 and p.obs_pt.max() < 1800
    assert np.isfinite(p.cameras).all() and p.cameras[:, 6].min() > 100  # focal lengths


@pytest.mark.parametrize("suffix", [".txt", ".txt.bz2"])
def test_round_trip_is_exact(data_dir, tmp_path, suffix):
    p = read_bal(data_dir / "ba" / "dubrovnik-3-7-pre.txt")
    out = tmp_path / ("copy" + suffix)
    write_bal(out, p)
    if suffix.endswith(".bz2"):
        assert bz2.open(out, "rt").readline().split() == ["3", "7", "19"]
    q = read_bal(out)
    for a, b in [(p.cameras, q.cameras), (p.points, q.points), (p.obs_uv, q.obs_uv),
                 (p.obs_cam, q.obs_cam), (p.obs_pt, q.obs_pt)]:
        np.testing.assert_array_equal(a, b)


GOOD = ["1 1 1", "0 0 1.5 -2.5"] + ["0.1"] * 9 + ["1", "2", "3"]


@pytest.mark.parametrize("line,text,pattern", [
    (1, "1 1", r":1: header"),
    (2, "0 0 1.5", r":2: observation must be"),
    (2, "0 3 1.5 2.0", r":2: point index 3 out of range"),
    (2, "7 0 1.5 2.0", r":2: camera index 7 out of range"),
    (2, "0 0 nan 2.0", r":2: non-finite observation"),
    (5, "inf", r":5: non-finite camera parameter"),
    (14, "abc", r":14: malformed number"),
])
def test_bad_input_names_file_and_line(tmp_path, line, text, pattern):
    lines = list(GOOD)
    lines[line - 1] = text
    f = tmp_path / "bad.txt"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(BALFormatError, match="bad.txt" + pattern):
        read_bal(f)


def test_truncated_file(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("\n".join(GOOD[:-2]) + "\n")
    with pytest.raises(BALFormatError, match="ends after 10 of 12"):
        read_bal(f)
