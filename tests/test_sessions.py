"""A sweep's sessions: each records its start, refreshes its last sign of life while it runs, and a killed
one's record ends within a heartbeat of its death; the wall time is the union of their spans."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from taetlib import sessions, study_sections


def test_a_session_beats_while_it_runs_and_says_when_it_ended(tmp_path):
    with sessions.session(tmp_path, "sweep", heartbeat=0.05, jobs=2) as path:
        first = json.loads(path.read_text())
        time.sleep(0.4)
        beating = json.loads(path.read_text())
    last = json.loads(path.read_text())
    assert first["what"] == "sweep" and first["jobs"] == 2 and not first["ended"]
    assert first["machine"] == sessions.machine_label() and " with " in first["machine"]   # whose time this is
    assert beating["last_seen"] > first["start"] and not beating["ended"]
    assert last["ended"] and last["last_seen"] >= beating["last_seen"]
    assert sessions.read_sessions(tmp_path) == [last]


def test_a_killed_session_ends_within_a_heartbeat_of_its_death(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from taetlib.sessions import session
        with session({str(tmp_path)!r}, "sweep", heartbeat=0.1):
            print("in", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "in"
    time.sleep(1.0)
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)   # no finally block runs: only the heartbeat says how long it lived
    proc.wait()
    (record,) = sessions.read_sessions(tmp_path)
    assert not record["ended"]
    assert killed_at - 0.5 < record["last_seen"] <= killed_at
    assert 0.9 < sessions.wall_seconds([record]) < killed_at - record["start"] + 0.01


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), max_size=8))
def test_the_wall_time_is_the_union_of_the_spans(spans):
    records = [{"start": float(a), "last_seen": float(a + n)} for a, n in spans]
    covered = {t for a, n in spans for t in range(a, a + n)}   # unit cells: an oracle that shares no code
    assert sessions.wall_seconds(records) == len(covered)


def test_the_study_readme_reads_the_sessions(tmp_path):
    rebuilt = "rebuilt from sessions.csv of commit abc123"
    for start, end, by_hand in ((0.0, 3600.0, rebuilt), (7200.0, 9000.0, False), (8000.0, 9500.0, False)):
        folder = tmp_path / sessions.SESSIONS_DIR
        folder.mkdir(exist_ok=True)
        (folder / f"{start:.0f}.json").write_text(json.dumps(
            {"what": "sweep", "start": start, "last_seen": end, "ended": True, "reconstructed": by_hand}))
    text = study_sections.sessions_text("the sweep", sessions.read_sessions(tmp_path))
    assert "1.6 h of wall time over 3 sessions" in text and "1 of them reconstructed" in text
    assert study_sections.sessions_text("the sweep", []) == ""
    no_runs = pd.DataFrame(columns=["run", "status"])
    assert study_sections.wall_text(no_runs, tmp_path) == f"Time: {text}."   # the README's time line carries it
    assert study_sections.wall_text(no_runs, tmp_path / "elsewhere") == "Time: no run has finished yet."
    tuning = tmp_path / "still_tuning"   # no tuning.json yet, no study run: the tuning's sessions are the time
    (tuning / "tuning" / sessions.SESSIONS_DIR).mkdir(parents=True)
    (tuning / "tuning" / sessions.SESSIONS_DIR / "1.json").write_text(json.dumps(
        {"what": "tune", "start": 0.0, "last_seen": 5400.0, "ended": False}))
    assert study_sections.wall_text(no_runs, tuning).startswith("Time: the tuning has run 1.5 h of wall time over 1 ")
    table = sessions.sessions_table(sessions.read_sessions(tmp_path))   # what the study publishes
    assert table["hours"].tolist() == [1.0, 0.5, 0.417] and table["reconstructed"].tolist() == [True, False, False]
    assert table["note"].tolist() == [rebuilt, "", ""]   # a rebuilt session says from what
    assert table["start_utc"].tolist()[0] == "1970-01-01 00:00:00"


def test_the_time_line_names_each_sessions_machine(tmp_path):
    folder = tmp_path / sessions.SESSIONS_DIR
    folder.mkdir()
    for k, where in enumerate(["CPU A with 2 cores", "CPU B with 2 cores", "CPU B with 2 cores", None]):
        record = {"what": "sweep", "start": 3600.0 * k, "last_seen": 3600.0 * k + 60, "ended": True}
        (folder / f"{k}.json").write_text(json.dumps(record | ({"machine": where} if where else {})))
    records = sessions.read_sessions(tmp_path)
    text = study_sections.sessions_text("the sweep", records)
    assert text.endswith(", 2 of them on CPU B with 2 cores and 1 on CPU A with 2 cores "
                         "(the other 1 did not record their machine)")
    assert sessions.sessions_table(records)["machine"].tolist() == ["CPU A with 2 cores", "CPU B with 2 cores",
                                                                     "CPU B with 2 cores", ""]
    assert study_sections.machines_text(records[3:]) == ""   # no machine on record: nothing claimed


def test_the_runs_time_is_told_by_the_machine_that_finished_them(tmp_path):
    runs = []
    for k, where in enumerate(["CPU A", "CPU B", "CPU B", None]):
        (tmp_path / f"r{k}").mkdir()
        (tmp_path / f"r{k}" / "DONE.json").write_text(json.dumps({"status": "done"} | ({"machine": where} if where
                                                                                     else {})))
        runs.append(str(tmp_path / f"r{k}"))
    done = pd.DataFrame({"run": runs})
    text = study_sections.per_machine(done, np.array([600.0, 120.0, 240.0, 3000.0]))
    assert text == "; by the machine that finished them: 2 on CPU B (3 min each), 1 on CPU A (10 min each), " \
                   "1 on a machine not recorded (50 min each)"
    assert study_sections.per_machine(done.iloc[3:], np.array([3000.0])) == ""   # none recorded: nothing told
