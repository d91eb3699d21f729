"""`--trace-json` (Chrome trace-event JSON, for Perfetto) and `replay --dump-at`.

The validator follows Google's Trace Event Format document (JSON object
form): the fields each phase needs, async begin/end pairs matched by
(cat, name, id), complete events on one thread nested, never crossing.
"""

from __future__ import annotations

import json

import pytest

from emu.cli import main

PHASES = {"X", "B", "E", "i", "I", "b", "e", "n", "M", "C"}
METADATA = {"process_name", "thread_name", "thread_sort_index", "process_sort_index",
            "process_labels"}


def validate_trace_events(doc: object) -> list[dict]:
    """Raise AssertionError unless `doc` is a valid trace-event JSON object."""
    assert isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list)
    if "displayTimeUnit" in doc:
        assert doc["displayTimeUnit"] in ("ms", "ns")
    events = doc["traceEvents"]
    open_async: dict[tuple, float] = {}
    by_thread: dict[tuple, list[tuple[float, float]]] = {}
    for e in events:
        assert isinstance(e, dict), e
        ph = e.get("ph")
        assert ph in PHASES, e
        assert isinstance(e.get("name"), str) and e["name"], e
        assert isinstance(e.get("pid"), int) and isinstance(e.get("tid"), int), e
        if ph == "M":
            assert e["name"] in METADATA and isinstance(e.get("args"), dict), e
            continue
        assert isinstance(e.get("ts"), (int, float)) and e["ts"] >= 0, e
        if "args" in e:
            assert isinstance(e["args"], dict), e
        if ph == "X":
            assert isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0, e
            by_thread.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
        elif ph in ("i", "I"):
            assert e.get("s", "t") in ("g", "p", "t"), e
        elif ph in ("b", "e", "n"):
            assert "id" in e and isinstance(e.get("cat"), str), e
            key = (e["cat"], e["name"], e["id"])
            if ph == "b":
                assert key not in open_async, f"async span {key} begun twice"
                open_async[key] = e["ts"]
            elif ph == "e":
                assert key in open_async, f"async end without begin: {key}"
                assert e["ts"] >= open_async.pop(key), e
    assert not open_async, f"async spans never ended: {sorted(open_async)[:3]}"
    for spans in by_thread.values():  # complete events nest: sorted, none crosses another
        stack: list[float] = []
        for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1], "complete events cross on one thread"
            stack.append(end)
    return events


@pytest.fixture(scope="module")
def retract_schedule(tmp_path_factory) -> str:
    """A clean run of retract_x86 whose RCU callback runs before the end (seed 1)."""
    out = tmp_path_factory.mktemp("run") / "r.json"
    assert main(["run", "retract_x86", "--seed", "1", "--json", str(out)]) == 0
    schedule = json.loads(out.read_text())["schedule"]
    assert "z" in schedule  # the callback is a step of the schedule
    return schedule


def test_a_clean_run_has_lanes_windows_and_a_grace_period(retract_schedule, tmp_path, capsys):
    f = tmp_path / "t.json"
    assert main(["replay", "retract_x86", "--schedule", retract_schedule, "--trace", "1",
                 "--trace-json", str(f)]) == 0
    events = validate_trace_events(json.loads(f.read_text()))
    names = {(e["ph"], e["name"]) for e in events}
    for lane in ("cpu0", "cpu1", "cpu2", "cpu3", "rcu callbacks"):
        assert any(e["ph"] == "M" and e["args"].get("name") == lane for e in events), lane
    assert {("b", "rcu read-side"), ("b", "IRQs off"), ("b", "grace period (call_rcu)")} <= names
    steps = [e for e in events if e["ph"] == "X"]
    assert len(steps) > 500 and all("trace" in e["args"] for e in steps)


def test_a_failure_has_the_violation_as_an_instant_event(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["explore", "lockless_sync_pae", "--variant", "no_lockless_sync", "--depth", "3",
                 "--quiet", "--trace-json", "t.json"]) == 1
    events = validate_trace_events(json.loads((tmp_path / "t.json").read_text()))
    inst = [e for e in events if e["ph"] == "i"]
    assert len(inst) == 1 and inst[0]["s"] == "g" and "lockless-sync" in inst[0]["name"]
    # the instant sits on a step event of the failing lane
    assert any(e["ph"] == "X" and e["ts"] == inst[0]["ts"] and e["tid"] == inst[0]["tid"]
               for e in events)


def test_the_validator_rejects_what_it_should():
    good = {"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 4},
                            {"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 1, "dur": 1}]}
    validate_trace_events(good)
    bad = [
        {"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0}]},  # no dur
        {"traceEvents": [{"ph": "b", "name": "a", "cat": "c", "id": 1, "pid": 1, "tid": 1,
                          "ts": 0}]},  # never ended
        {"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 2},
                         {"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 1, "dur": 2}]},
        {"traceEvents": [{"ph": "i", "name": "a", "pid": 1, "tid": 1, "ts": 0, "s": "x"}]},
    ]
    for doc in bad:
        with pytest.raises(AssertionError):
            validate_trace_events(doc)


def test_dump_at_a_step_and_at_the_failure(retract_schedule, capsys):
    assert main(["replay", "retract_x86", "--schedule", retract_schedule, "--trace", "1",
                 "--dump-at", "0"]) == 0
    out = capsys.readouterr().out
    assert "-- state before step 0 runs --" in out
    assert "x86-pae page tables, root" in out and "cpu3 TLB: 0 entries" in out
    assert main(["replay", "retract_x86", "--schedule", retract_schedule, "--trace", "1",
                 "--dump-at", "fail"]) == 0
    out = capsys.readouterr().out
    assert "state when the run stopped" in out and "filled at step" in out
    assert main(["replay", "retract_x86", "--schedule", retract_schedule, "--dump-at", "x"]) == 2
    assert "--dump-at" in capsys.readouterr().err
