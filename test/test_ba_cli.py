"""mpslam ba: BAL in, BAL out, JSON summary; a malformed file gives a clear error."""

import json

from mpslam_ros.cli import main
from mpslam_ros.io.bal import read_bal


def test_cli_solves_and_writes(data_dir, tmp_path, capsys):
    out = tmp_path / "out.txt"
    rc = main(["ba", str(data_dir / "ba" / "dubrovnik-3-7-pre.txt"), "-o", str(out), "--solver", "schur", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["cameras"] == 3 and d["observations"] == 19
    assert d["final_cost"] < 1e-3 * d["initial_cost"]
    assert read_bal(out).num_points == 7


def test_cli_reports_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 1\n0 0 x 1\n")
    assert main(["ba", str(bad)]) == 1
    assert "bad.txt:2" in capsys.readouterr().err
