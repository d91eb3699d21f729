from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.sched import RCU_TASK, Replay, ReplayDivergence, ScheduleError, decode, encode
from emu.sched.schedule import MAX_SCHEDULE_STEPS, Choices, encode_runs

tasks = st.sampled_from([0, 1, 2, 3, RCU_TASK])


@given(st.lists(tasks, max_size=300))
def test_schedule_string_roundtrip(choices):
    text = encode(choices)
    assert text.startswith("pt1:")
    assert decode(text) == choices


def test_schedule_string_is_compact():
    assert encode([0] * 12 + [1] * 3 + [0]) == "pt1:a12b3a"


@pytest.mark.parametrize("bad", ["a3", "pt1:A3", "pt1:a0", "pt1:q2", "pt1:a3-"])
def test_bad_schedule_strings_are_refused(bad):
    with pytest.raises(ScheduleError):
        decode(bad)


def test_replay_names_the_divergence():
    r = Replay([0, 1])
    assert r.choose([0, 1], 0) == 0
    with pytest.raises(ReplayDivergence, match="wants cpu1"):
        r.choose([0], 1)


def test_every_cpu_letter_and_the_rcu_task_decode():
    # a..p are the 16 CPUs, z is the RCU callback task; q..y name nothing
    assert decode("pt1:a2p3z") == [0, 0, 15, 15, 15, 25]


def test_decoded_choices_read_like_the_list_they_encode():
    plain = [0, 0, 0, 1, 25, 25, 0]
    c = decode(encode(plain))
    assert len(c) == 7 and list(c) == plain and c == plain and c != plain[:-1]
    assert c != [0, 0, 0, 1, 25, 25, 1] and c == decode(encode(plain))
    # every index, in order, out of order (the run hint) and from the end
    assert [c[i] for i in range(7)] == plain
    assert [c[i] for i in (6, 0, 4, 3, 5, 1)] == [plain[i] for i in (6, 0, 4, 3, 5, 1)]
    assert [c[-i] for i in range(1, 8)] == [plain[-i] for i in range(1, 8)]
    assert c[2:5] == plain[2:5] and c[::-2] == plain[::-2]
    for bad in (7, -8):
        with pytest.raises(IndexError):
            c[bad]
    assert decode("pt1:a3bz2a").runs == [(0, 3), (1, 1), (25, 2), (0, 1)]
    assert decode("pt1:a2a3").runs == [(0, 5)]  # adjacent runs of one task merge
    assert encode_runs([(0, 3), (1, 1)]) == "pt1:a3b" and repr(Choices([(2, 2)])) == "Choices('pt1:c2')"
    assert (c == object()) is False


def test_schedule_caps_are_exact():
    assert len(decode(f"pt1:a{MAX_SCHEDULE_STEPS}")) == MAX_SCHEDULE_STEPS
    for text in (f"pt1:a{MAX_SCHEDULE_STEPS + 1}", f"pt1:a{MAX_SCHEDULE_STEPS}b",
                 "pt1:a" + "0" * 10 + "1"):
        with pytest.raises(ScheduleError):
            decode(text)


def test_the_step_cap_is_two_to_the_32():
    assert len(decode("pt1:a4294967296")) == 4294967296
    for text in ("pt1:a4294967297", "pt1:a4294967295b2"):
        with pytest.raises(ScheduleError, match="cap"):
            decode(text)


def test_a_single_run_schedule_reads_back_at_every_index():
    c = decode("pt1:b3")
    assert [c[0], c[1], c[2], c[-1]] == [1, 1, 1, 1] and c[0:3] == [1, 1, 1]
    with pytest.raises(IndexError):
        c[3]


@pytest.mark.parametrize("text, switches", [("pt1:", 0), ("pt1:a5", 0), ("pt1:a2b2a", 2),
                                            ("pt1:abzab", 4)])
def test_context_switches_count_task_changes_for_lists_and_decoded_schedules(text, switches):
    from emu.sched.schedule import context_switches
    c = decode(text)
    assert context_switches(c) == switches
    assert context_switches(list(c)) == switches


def test_pct_refuses_a_depth_below_one_with_its_own_message():
    from emu.sched.pct import PCTStrategy
    with pytest.raises(ValueError, match="PCT depth must be at least 1, got 0"):
        PCTStrategy(1, depth=0)
    assert PCTStrategy(1, depth=1).change_at == {}  # depth 1: no change point


def test_repeated_letters_merge_into_one_run():
    c = decode("pt1:ab2b3")
    assert list(c) == [0, 1, 1, 1, 1, 1] and c == decode("pt1:ab5") and c.runs == [(0, 1), (1, 5)]


def test_random_choices_are_drawn_only_where_there_is_a_choice():
    """A step with one runnable task draws nothing: the seed's choices at the
    real choice points do not depend on how many forced steps lie between."""
    from emu.sched import RandomStrategy
    a, b = RandomStrategy(11), RandomStrategy(11)
    plain = [a.choose([0, 1, 2], i) for i in range(20)]
    mixed = []
    for i in range(20):
        assert b.choose([2], 2 * i) == 2
        mixed.append(b.choose([0, 1, 2], 2 * i + 1))
    assert plain == mixed


def test_a_replay_past_its_end_goes_on_round_robin_unless_strict():
    r = Replay([1])
    assert [r.choose([0, 1], i) for i in range(4)] == [1, 0, 1, 0]
    strict = Replay([1], strict_end=True)
    assert strict.choose([0, 1], 0) == 1
    with pytest.raises(ReplayDivergence, match="ended after 1 steps"):
        strict.choose([0, 1], 1)


def test_pct_by_default_changes_priority_once_within_the_first_thousand_steps():
    from emu.sched.pct import PCTStrategy
    points = [PCTStrategy(seed).change_at for seed in range(5000)]
    assert all(len(p) == 1 and list(p.values()) == [1] for p in points)  # depth 2
    steps = [next(iter(p)) for p in points]
    assert min(steps) == 0 and max(steps) == 999  # k = 1000: every step 0..999 can be drawn
