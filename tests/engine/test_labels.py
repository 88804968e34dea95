"""Labelling rules, the CSV rule and per-file overrides (engine/data/labels.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.data.labels import LabelRule, Overrides, apply_label_rule, parse_label_rule


def make_scan(root: Path, files, *, mtimes: dict[str, int] | None = None):
    """A ScanResult over real files under ``root``; ``files`` maps rel -> bytes (or is a
    list of rels, each given distinct bytes). Labels/splits only need the item facts."""
    from loupe.engine.data.scan import ImageItem, ScanResult

    if not isinstance(files, dict):
        files = {rel: f"content of {rel}".encode() for rel in files}
    items = []
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mtimes and rel in mtimes:
            os.utime(path, ns=(mtimes[rel], mtimes[rel]))
        stat = path.stat()
        items.append(ImageItem(path, rel, stat.st_size, stat.st_mtime_ns, 16, 16))
    items.sort(key=lambda i: i.rel)
    return ScanResult(root, tuple(items), ())


def labels_of(labelling) -> dict[str, tuple[str, ...]]:
    return {li.item.rel: li.labels for li in labelling.labelled}


def reasons_of(labelling) -> dict[str, str]:
    return {u.item.rel: u.reason for u in labelling.unmatched}


def test_parent_rule_labels_by_folder_and_reports_root_files(tmp_path):
    scan = make_scan(tmp_path, ["cats/a.png", "dogs/b.png", "pets/dogs/c.png", "loose.png"])
    result = apply_label_rule(scan, parse_label_rule("parent"))
    assert labels_of(result) == {
        "cats/a.png": ("cats",),
        "dogs/b.png": ("dogs",),
        "pets/dogs/c.png": ("dogs",),
    }
    assert "folder root" in reasons_of(result)["loose.png"]
    assert result.classes == ("cats", "dogs")
    assert not result.multi_label


def test_top_rule_uses_first_folder_under_root(tmp_path):
    scan = make_scan(tmp_path, ["animals/birds/x.png", "food/y.png", "z.png"])
    result = apply_label_rule(scan, parse_label_rule("top"))
    assert labels_of(result) == {"animals/birds/x.png": ("animals",), "food/y.png": ("food",)}
    assert "folder root" in reasons_of(result)["z.png"]


def test_regex_rule_pets_breed_pattern_on_file_name(tmp_path):
    scan = make_scan(
        tmp_path,
        ["images/Abyssinian_1.jpg", "images/great_pyrenees_12.jpg", "images/readme_x.jpg"],
    )
    result = apply_label_rule(scan, parse_label_rule(r"regex:^(.+)_\d+\.\w+$"))
    assert labels_of(result) == {
        "images/Abyssinian_1.jpg": ("Abyssinian",),
        "images/great_pyrenees_12.jpg": ("great_pyrenees",),
    }
    assert "does not match regex" in reasons_of(result)["images/readme_x.jpg"]


def test_regex_rule_named_label_group_among_several(tmp_path):
    scan = make_scan(tmp_path, ["2021_cat_3.png"])
    rule = parse_label_rule(r"regex:^(\d+)_(?P<label>[a-z]+)_")
    assert labels_of(apply_label_rule(scan, rule)) == {"2021_cat_3.png": ("cat",)}


def test_invalid_regex_says_where():
    expected = r"invalid regex '\^\(\.\+_\\d' at position 1: missing \)"
    with pytest.raises(ConfigError, match=expected):
        parse_label_rule(r"regex:^(.+_\d")


@pytest.mark.parametrize("pattern", [r"^.+_\d+$", r"^(\w+)_(\d+)"])
def test_regex_without_exactly_one_group_is_rejected(pattern):
    with pytest.raises(ConfigError, match="capture group"):
        parse_label_rule(f"regex:{pattern}")


def test_upper_rule_default_and_custom_names(tmp_path):
    scan = make_scan(tmp_path, ["Cat_1.png", "dog_2.png", "9lives.png", "sub/Owl.png"])
    default = apply_label_rule(scan, parse_label_rule("upper"))
    assert labels_of(default) == {
        "Cat_1.png": ("upper",),
        "dog_2.png": ("lower",),
        "sub/Owl.png": ("upper",),
    }
    assert "not a letter" in reasons_of(default)["9lives.png"]
    custom = apply_label_rule(scan, parse_label_rule("upper:animal,food"))
    assert labels_of(custom)["Cat_1.png"] == ("animal",)
    assert labels_of(custom)["dog_2.png"] == ("food",)
    assert custom.classes == ("animal", "food")


@pytest.mark.parametrize("spec", ["upper:a", "upper:a,a", "upper:a,"])
def test_upper_rule_bad_names(spec):
    with pytest.raises(ConfigError):
        parse_label_rule(spec)


def test_unknown_rule_lists_the_options():
    with pytest.raises(ConfigError, match="parent .* top .* upper.*regex:PATTERN.*csv:FILE"):
        parse_label_rule("folder")


@pytest.mark.parametrize(
    "spec",
    ["parent", "top", "upper", "upper:animal,food", r"regex:^(.+)_\d+", "csv:/x/labels.csv",
     "csv+multi:/x/labels.csv"],
)
def test_rule_spec_and_json_round_trip(spec):
    rule = parse_label_rule(spec)
    assert rule.spec == spec
    assert LabelRule.from_json(rule.to_json()) == rule


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "outside" / "labels.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rule_with_header_rel_paths_and_bare_names(tmp_path):
    root = tmp_path / "imgs"
    scan = make_scan(root, ["a/one.png", "b/two.png", "three.png", "unlisted.png"])
    csv_path = _csv(tmp_path, "filename,label\na/one.png,cat\ntwo.png,dog\nthree,cat\n")
    result = apply_label_rule(scan, LabelRule("csv", csv_path=csv_path))
    assert labels_of(result) == {
        "a/one.png": ("cat",),
        "b/two.png": ("dog",),
        "three.png": ("cat",),
    }
    assert "not listed in labels.csv" in reasons_of(result)["unlisted.png"]
    assert not result.multi_label


def test_csv_rule_without_header_multi_label_and_missing_rows(tmp_path):
    scan = make_scan(tmp_path / "imgs", ["x.png", "y.png"])
    csv_path = _csv(tmp_path, "x.png,cloudy water\ny.png,cloudy;road\nghost.png,road\n")
    result = apply_label_rule(scan, parse_label_rule(f"csv:{csv_path}"))
    assert labels_of(result) == {"x.png": ("cloudy", "water"), "y.png": ("cloudy", "road")}
    assert result.multi_label
    assert result.classes == ("cloudy", "road", "water")
    assert any("ghost.png" in w and "not found" in w for w in result.warnings)


def test_csv_multi_spelling_forces_multi_label(tmp_path):
    scan = make_scan(tmp_path / "imgs", ["x.png"])
    csv_path = _csv(tmp_path, "x.png,cat\n")
    assert not apply_label_rule(scan, parse_label_rule(f"csv:{csv_path}")).multi_label
    assert apply_label_rule(scan, parse_label_rule(f"csv+multi:{csv_path}")).multi_label


def test_csv_ambiguous_bare_name_names_the_files(tmp_path):
    scan = make_scan(tmp_path / "imgs", ["a/same.png", "b/same.png"])
    csv_path = _csv(tmp_path, "same.png,cat\n")
    with pytest.raises(DatasetError, match="ambiguous.*a/same.png, b/same.png"):
        apply_label_rule(scan, LabelRule("csv", csv_path=csv_path))
    ok = _csv(tmp_path, "a/same.png,cat\nb/same.png,dog\n")
    assert labels_of(apply_label_rule(scan, LabelRule("csv", csv_path=ok))) == {
        "a/same.png": ("cat",),
        "b/same.png": ("dog",),
    }


def test_csv_missing_file_is_a_config_error(tmp_path):
    scan = make_scan(tmp_path / "imgs", ["x.png"])
    with pytest.raises(ConfigError, match="label CSV not found"):
        apply_label_rule(scan, LabelRule("csv", csv_path=tmp_path / "nope.csv"))


def test_overrides_win_over_rule_and_exclude(tmp_path):
    scan = make_scan(tmp_path, ["cats/a.png", "cats/b.png", "dogs/c.png", "root.png"])
    overrides = Overrides(
        relabel={"cats/b.png": ("dogs",), "root.png": ("cats",), "gone.png": ("x",)},
        exclude={"dogs/c.png"},
    )
    result = apply_label_rule(scan, LabelRule("parent"), overrides)
    assert labels_of(result) == {
        "cats/a.png": ("cats",),
        "cats/b.png": ("dogs",),
        "root.png": ("cats",),
    }
    assert [i.rel for i in result.excluded] == ["dogs/c.png"]
    assert result.unmatched == ()
    assert any("gone.png" in w for w in result.warnings)


def test_exclude_wins_over_relabel_and_overrides_round_trip(tmp_path):
    scan = make_scan(tmp_path, ["cats/a.png", "cats/b.png"])
    overrides = Overrides(relabel={"cats/a.png": ("dogs", "toys")}, exclude={"cats/a.png"})
    result = apply_label_rule(scan, LabelRule("parent"), overrides)
    assert labels_of(result) == {"cats/b.png": ("cats",)}
    assert Overrides.from_json(overrides.to_json()) == overrides


def test_overrides_from_bad_json():
    with pytest.raises(ConfigError):
        Overrides.from_json({"relabel": {"a.png": []}})
    with pytest.raises(ConfigError):
        Overrides.from_json({"relabel": [], "exclude": []})


def png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_catastrophic_regex_is_a_config_error_not_a_hang(tmp_path):
    # On 40 a's followed by ".png" both patterns backtrack for hours under Python's re.
    # The regex engine sees through (a+)+$ (no match, at once); (a|aa)+$ still explodes
    # there, so it hits the per-name timeout and is reported with the file name.
    name = "a" * 40 + ".png"
    scan = make_scan(tmp_path, {name: png_bytes()})
    result = apply_label_rule(scan, parse_label_rule("regex:(a+)+$"))
    assert "does not match" in reasons_of(result)[name]
    with pytest.raises(ConfigError, match=r"regex:\(a\|aa\)\+\$ took over .* s on '" + name):
        apply_label_rule(scan, parse_label_rule("regex:(a|aa)+$"))
