"""The fixed corpus of bad inputs (tests/bad_inputs.py), run in a subprocess: a segfault, an abort
or a hang there fails this test with the case that caused it, instead of killing the test run.
Every case must raise a clean Python error that names the op and the argument."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fuzz_report

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 300  # the corpus takes a few seconds; a hang in a kernel must not stall the run


def test_bad_inputs_corpus():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE, os.environ.get("PYTHONPATH", "")]))
    try:
        run = subprocess.run([sys.executable, os.path.join(HERE, "bad_inputs.py")], capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        last = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise AssertionError(f"the corpus did not finish in {TIMEOUT_S} s; last case started: {last}") from None
    last = run.stderr.strip().splitlines()[-1:]
    assert run.returncode == 0, f"the corpus process died with exit code {run.returncode} in case {last}:\n{run.stderr[-3000:]}"
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    for row in rows:
        fuzz_report.count(row["op"], "bad_inputs")
    problems = [f"{row['case']}: {row['problem']}" for row in rows if row["problem"]]
    assert len(rows) > 500, f"only {len(rows)} cases ran"
    assert not problems, f"{len(problems)} of {len(rows)} bad inputs were not refused cleanly:\n" + "\n".join(problems)
