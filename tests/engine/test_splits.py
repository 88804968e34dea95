"""Splits and their warnings (engine/data/splits.py)."""

from __future__ import annotations

import json

import pytest

from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.data.labels import LabelRule, apply_label_rule
from loupe.engine.data.splits import (
    SplitRule,
    date_from_name,
    find_leaks,
    make_split,
    parse_split_rule,
)
from tests.engine.test_labels import make_scan


def _labelled(tmp_path, files, rule="parent", **kw):
    scan = make_scan(tmp_path, files, **kw)
    return apply_label_rule(scan, LabelRule(rule))


def _where(plan) -> dict[str, str]:
    return {li.item.rel: name for name, items in plan.sets().items() for li in items}


def _many(n: int, classes=("a", "b"), start: int = 0) -> list[str]:
    return [f"{c}/{c}{i:04d}.png" for c in classes for i in range(start, start + n)]


def test_random_split_is_deterministic_and_seeded(tmp_path):
    labelling = _labelled(tmp_path, _many(100))
    first = make_split(labelling, SplitRule("random", 0.2, seed=1))
    again = make_split(labelling, SplitRule("random", 0.2, seed=1))
    other = make_split(labelling, SplitRule("random", 0.2, seed=2))
    assert _where(first) == _where(again)
    assert _where(first) != _where(other)
    assert 20 <= len(first.valid) <= 60  # 200 files at 0.2, decided per file by hash
    assert len(first.train) + len(first.valid) == 200
    assert first.test == ()


def test_adding_files_never_moves_existing_ones(tmp_path):
    rule = SplitRule("random", 0.2, test_fraction=0.1, seed=7)
    before = _where(make_split(_labelled(tmp_path / "r", _many(60)), rule))
    grown = _many(60) + _many(60, start=500) + _many(10, classes=("c",))
    after = _where(make_split(_labelled(tmp_path / "r", grown), rule))
    assert len(after) == len(before) + 130
    assert {rel: after[rel] for rel in before} == before


def test_test_set_is_locked_under_seed_changes(tmp_path):
    labelling = _labelled(tmp_path, _many(100))
    plans = [make_split(labelling, SplitRule("random", 0.2, test_fraction=0.15, seed=s))
             for s in (0, 1, 99)]
    tests = [{li.item.rel for li in p.test} for p in plans]
    assert tests[0] and tests[0] == tests[1] == tests[2]
    valids = [{li.item.rel for li in p.valid} for p in plans]
    assert valids[0] != valids[1]
    assert all(not (t & v) for t, v in zip(tests, valids, strict=True))


def test_folders_split_grandparent_names_and_left_out(tmp_path):
    files = ["train/cat/1.png", "train/dog/2.png", "Validation/cat/3.png", "val/dog/4.png",
             "data/valid/dog/5.png", "test/cat/6.png", "extra/cat/7.png", "extra/dog/8.png"]
    plan = make_split(_labelled(tmp_path, files), parse_split_rule("folders"))
    assert _where(plan) == {
        "train/cat/1.png": "train",
        "train/dog/2.png": "train",
        "Validation/cat/3.png": "valid",
        "val/dog/4.png": "valid",
        "data/valid/dog/5.png": "valid",
        "test/cat/6.png": "test",
    }
    assert {li.item.rel for li in plan.left_out} == {"extra/cat/7.png", "extra/dog/8.png"}
    assert any(w.startswith("2 file(s) left out") for w in plan.warnings)
    assert plan.counts["cat"] == {"train": 1, "valid": 1, "test": 1}


def test_folders_split_without_valid_folder_names_the_empty_set(tmp_path):
    labelling = _labelled(tmp_path, ["train/cat/1.png", "train/dog/2.png"])
    with pytest.raises(DatasetError, match="the valid set is empty: no labelled file is under"):
        make_split(labelling, SplitRule("folders"))


def test_random_split_that_leaves_valid_empty_is_an_error(tmp_path):
    labelling = _labelled(tmp_path, ["a/1.png", "b/2.png", "a/3.png"])
    seed = next(s for s in range(100) if _valid_empty(labelling, SplitRule("random", 0.05, seed=s)))
    expected = r"the valid set is empty: random:0.05 \(seed \d+\) placed none of the 3"
    with pytest.raises(DatasetError, match=expected):
        make_split(labelling, SplitRule("random", 0.05, seed=seed))


def _valid_empty(labelling, rule) -> bool:
    try:
        make_split(labelling, rule)
    except DatasetError:
        return True
    return False


def test_group_split_keeps_each_group_in_one_set(tmp_path):
    files = [f"{c}/driver_{d}_img{i}.png" for c in "ab" for d in range(20) for i in range(3)]
    files.append("a/no_driver.png")
    rule = parse_split_rule(r"group:driver_(\d+)_", test_fraction=0.1)
    plan = make_split(_labelled(tmp_path, files), rule)
    sets_of_group: dict[str, set[str]] = {}
    for rel, name in _where(plan).items():
        sets_of_group.setdefault(rel.split("_")[1], set()).add(name)
    assert len(sets_of_group) == 20
    assert all(len(names) == 1 for names in sets_of_group.values())
    assert {"train", "valid"} <= set().union(*sets_of_group.values())
    assert [li.item.rel for li in plan.left_out] == ["a/no_driver.png"]
    assert any("does not match group regex" in w for w in plan.warnings)


def test_group_split_errors(tmp_path):
    with pytest.raises(ConfigError, match="no capture group"):
        parse_split_rule(r"group:driver_\d+")
    with pytest.raises(ConfigError, match="invalid group regex .* at position"):
        parse_split_rule(r"group:driver_(\d+")
    labelling = _labelled(tmp_path, ["a/x.png", "b/y.png"])
    with pytest.raises(DatasetError, match="matched none of the 2 file paths"):
        make_split(labelling, parse_split_rule(r"group:boat(\d+)"))


def test_time_split_takes_newest_by_name_then_mtime(tmp_path):
    files = ["a/shot_2020-01-05.png", "a/shot_20200301.png", "b/shot_2020_02_01.png",
             "b/shot_2019-12-31.png", "a/2021-06-01/x.png", "b/old_2018-01-01.png"]
    plan = make_split(_labelled(tmp_path, files), parse_split_rule("time:0.34"))
    assert {li.item.rel for li in plan.valid} == {"a/2021-06-01/x.png", "a/shot_20200301.png"}
    assert len(plan.train) == 4
    base = 1_600_000_000 * 10**9
    mtimes = {f"{c}/n{i}.png": base + i * 10**9 for c in "ab" for i in range(5)}
    by_mtime = make_split(_labelled(tmp_path / "m", list(mtimes), mtimes=mtimes),
                          SplitRule("time", 0.2))
    assert {li.item.rel for li in by_mtime.valid} == {"a/n4.png", "b/n4.png"}


def test_time_split_test_set_is_the_newest(tmp_path):
    files = [f"a/{2000 + i}-01-01.png" for i in range(10)] + ["b/1999-01-01.png"]
    plan = make_split(_labelled(tmp_path, files), SplitRule("time", 0.2, test_fraction=0.1))
    assert [li.item.rel for li in plan.test] == ["a/2009-01-01.png"]
    assert {li.item.rel for li in plan.valid} == {"a/2008-01-01.png", "a/2007-01-01.png"}


def test_date_from_name_patterns():
    assert str(date_from_name("x/IMG_20210304_1200.jpg")) == "2021-03-04"
    assert str(date_from_name("2019_12_31/a.png")) == "2019-12-31"
    assert date_from_name("a/2021-02-30.png") is None
    assert date_from_name("a/123456789.png") is None


def test_subset_keeps_fraction_per_class_deterministically(tmp_path):
    labelling = _labelled(tmp_path, _many(100, classes=("a",)) + _many(10, classes=("b",)))
    full = make_split(labelling, SplitRule("random", 0.2))
    small = make_split(labelling, SplitRule("random", 0.2, subset=0.25))
    again = make_split(labelling, SplitRule("random", 0.2, subset=0.25))
    assert _where(small) == _where(again)
    assert set(_where(small)) < set(_where(full))
    for name in ("train", "valid"):
        for cls in ("a", "b"):
            n = full.counts[cls][name]
            expected = max(1, -(-n // 4)) if n else 0
            assert small.counts[cls][name] == expected
    assert all(_where(full)[rel] == s for rel, s in _where(small).items())


def test_warnings_absent_class_and_few_images(tmp_path):
    files = ["train/cat/1.png", "train/cat/2.png", "train/dog/3.png", "valid/dog/4.png"]
    files += [f"train/dog/x{i}.png" for i in range(6)]
    plan = make_split(_labelled(tmp_path, files), SplitRule("folders"))
    assert any("'cat' is absent from validation (2 in train)" in w for w in plan.warnings)
    assert any("fewer than 5 training images: cat (2)" in w for w in plan.warnings)
    assert not any("dog (" in w for w in plan.warnings)


def test_leak_warning_for_identical_bytes_across_sets(tmp_path):
    same = b"\x89PNG same bytes"
    other = b"\x89PNG diff bytes"  # same size, different bytes: not a leak
    files = {"train/cat/a.png": same, "valid/cat/b.png": same, "test/cat/c.png": same,
             "train/dog/d.png": b"dog1", "valid/dog/e.png": other,
             "train/cat/f.png": other[:-1] + b"!"}
    plan = make_split(_labelled(tmp_path, files), SplitRule("folders"))
    leaks = [w for w in plan.warnings if w.startswith("leak:")]
    assert len(leaks) == 1
    assert "2 file(s) in test/valid" in leaks[0]
    assert "train/cat/a.png = test/cat/c.png" in leaks[0]
    assert "train/cat/a.png = valid/cat/b.png" in leaks[0]
    assert "e.png" not in leaks[0]
    assert find_leaks(plan.sets()) == [
        ("train/cat/a.png", "test", "test/cat/c.png"),
        ("train/cat/a.png", "valid", "valid/cat/b.png"),
    ]


def test_group_overlap_warning_on_non_group_split(tmp_path):
    files = ["train/cat/boat1_a.png", "valid/cat/boat1_b.png", "train/cat/boat2_a.png",
             "valid/cat/boat3_a.png"]
    rule = parse_split_rule("folders", group_check=r"boat(\d+)_")
    plan = make_split(_labelled(tmp_path, files), rule)
    overlap = [w for w in plan.warnings if w.startswith("group overlap")]
    assert len(overlap) == 1 and "1 (train, valid)" in overlap[0]
    clean = make_split(_labelled(tmp_path, files), SplitRule("folders"))
    assert not any(w.startswith("group overlap") for w in clean.warnings)


def test_manifest_is_json_with_rel_paths_per_set(tmp_path):
    plan = make_split(_labelled(tmp_path, _many(20)), SplitRule("random", 0.3))
    manifest = json.loads(json.dumps(plan.manifest()))
    assert manifest["train"] == [li.item.rel for li in plan.train]
    assert manifest["valid"] == [li.item.rel for li in plan.valid]
    assert manifest["labels"]["a/a0000.png"] == ["a"]
    assert SplitRule.from_json(manifest["rule"]) == plan.rule


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("random:0.2", SplitRule("random", 0.2)), ("random:25%", SplitRule("random", 0.25)),
     ("random", SplitRule("random", 0.2)), ("folders", SplitRule("folders")),
     ("time:0.1", SplitRule("time", 0.1)),
     ("group:(\\w+)/", SplitRule("group", pattern="(\\w+)/"))],
)
def test_parse_split_rule_and_spec(spec, expected):
    rule = parse_split_rule(spec)
    assert rule == expected
    assert parse_split_rule(rule.spec) == rule
    assert SplitRule.from_json(rule.to_json()) == rule


@pytest.mark.parametrize(
    ("spec", "kw", "match"),
    [("shuffle", {}, "use one of: random:FRACTION"), ("random:1.5", {}, "between 0 and 1"),
     ("random:abc", {}, "number like 0.2"), ("random:0.5", {"test_fraction": 0.5}, "sum"),
     ("folders", {"test_fraction": 0.1}, "folder named 'test'"),
     ("random", {"subset": 0}, "subset"), ("group", {}, "use one of")],
)
def test_parse_split_rule_errors(spec, kw, match):
    with pytest.raises(ConfigError, match=match):
        parse_split_rule(spec, **kw)


def test_catastrophic_group_regex_is_a_config_error_not_a_hang(tmp_path):
    from tests.engine.test_labels import png_bytes

    files = {f"cls{i}/" + "a" * 40 + ".png": png_bytes() for i in range(2)}
    labelling = _labelled(tmp_path, files)
    # (a+)+$ no longer hangs (the regex engine sees through it): it matches nothing.
    with pytest.raises(DatasetError, match="matched none"):
        make_split(labelling, parse_split_rule("group:(a+)+$"))
    with pytest.raises(ConfigError, match=r"group regex '\(a\|aa\)\+\$' took over"):
        make_split(labelling, parse_split_rule("group:(a|aa)+$"))
    with pytest.raises(ConfigError, match="backtracks catastrophically"):
        make_split(labelling, parse_split_rule("random", group_check="(a|aa)+$"))
