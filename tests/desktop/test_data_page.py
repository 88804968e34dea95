"""Data page editors and tables, without a scan where none is needed."""

from __future__ import annotations

from loupe.engine.data.labels import LabelRule


def test_each_label_kind_keeps_its_own_pattern(qtbot):
    from loupe.desktop.pages.data_editors import LabelRuleEditor

    editor = LabelRuleEditor()
    qtbot.addWidget(editor)
    editor.set_rule(LabelRule("upper", names=("animal", "food")))
    editor.kind.setCurrentIndex(editor.kind.findData("regex"))
    # Not "animal,food" carried over (an error about a missing capture group).
    assert editor.pattern.text() == ""
    editor.pattern.setText(r"^([a-z")
    editor.kind.setCurrentIndex(editor.kind.findData("upper"))
    assert editor.rule() == LabelRule("upper", names=("animal", "food"))
    editor.kind.setCurrentIndex(editor.kind.findData("regex"))
    assert editor.pattern.text() == r"^([a-z"
    editor.kind.setCurrentIndex(editor.kind.findData("parent"))
    assert editor.rule() == LabelRule("parent")


def test_rejected_file_names_are_shown_whole(qtbot, tmp_path):
    from loupe.desktop.context import AppContext
    from loupe.desktop.pages.data_page import DataPage
    from tests.desktop.views_fixtures import make_dataset

    root = make_dataset(tmp_path / "pets", per_class=3)
    name = "cat/a_rather_long_name_for_an_empty_file.jpg"
    (root / name).write_bytes(b"")
    context = AppContext()
    page = DataPage(context)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    with qtbot.waitSignal(context.dataChanged, timeout=30_000):
        context.open_folder(root)
    qtbot.waitUntil(lambda: context.data.scan is not None, timeout=30_000)
    page.views.setCurrentWidget(page.rejected_table)
    table = page.rejected_table
    assert page.rejected_model.rowCount() == 1
    assert table.columnWidth(0) >= table.fontMetrics().horizontalAdvance(name)
    assert context.runner.shutdown(20_000)
