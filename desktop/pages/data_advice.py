"""What the Data and Train pages say when the data cannot be trained on, in the app's words.

The engine's errors are precise ("random:0.2 (seed 42) placed none …"), but a person
opening an empty folder or one holding a single class needs to hear what to do about it.
:func:`data_problem` turns a :class:`~loupe.desktop.context.DataState` into one sentence
for each case the issue lists (empty folder, only other files, nothing readable, one
class), falling back to the engine's message. :func:`valid_share_note` explains why a
validation share differs from the fraction asked for.
"""

from __future__ import annotations

from typing import Any

from loupe.desktop.gui_words import in_gui_words
from loupe.engine.core.formats import IMAGE_SUFFIXES


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def data_problem(state: Any) -> str:
    """Why ``state`` (scan, labelling, split, error) cannot be trained on; "" when it can
    (or when there is no scan yet)."""
    scan = state.scan
    if scan is None:
        return ""
    if not scan.items:
        if scan.rejected:
            return (f"None of the {len(scan.rejected)} image file(s) here can be read: the "
                    "Rejected tab says why for each. Replace them, or open another folder.")
        if state.other_files:
            kinds = " ".join(IMAGE_SUFFIXES)
            return (f"No images here: the folder holds {state.other_files} file(s), none of "
                    f"them an image Loupe reads ({kinds}). Put your images in it, one "
                    "sub-folder per class, or open another folder.")
        return ("The folder is empty. Put your images in it, one sub-folder per class "
                "(e.g. cats/… and dogs/…), or open another folder.")
    labelling = state.labelling
    if labelling is not None and labelling.labelled and not labelling.multi_label \
            and len(labelling.classes) < 2:
        count = len(labelling.labelled)
        return (f"A classifier needs at least two classes; found {len(labelling.classes)}: "
                f"{_few(list(labelling.classes))} ({count} image{'s' if count != 1 else ''}). "
                "Add a sub-folder of images for each other class, or change how images "
                "are labelled.")
    if labelling is not None and not labelling.labelled:
        if labelling.excluded and not labelling.unmatched:
            return ("Every image here is excluded by your corrections: clear some (Data or "
                    "Results tab) to train again.")
        reasons = sorted({u.reason for u in labelling.unmatched})
        example = f" ({reasons[0]})" if reasons else ""
        return (f"The labelling rule labelled none of the {len(labelling.unmatched)} images"
                f"{example}. Choose another rule under “How images are labelled”.")
    if state.error and labelling is not None and state.plan is None:
        return (f"These {len(labelling.labelled)} images cannot be split into training and "
                f"validation images: {_sentence(str(state.error))} Add images, or change "
                "“How images are split”.")
    if state.error:
        return _sentence(str(state.error))
    return ""


def _sentence(text: str) -> str:
    text = in_gui_words(text)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def valid_share_note(plan: Any) -> str:
    """'valid 190 (31.8%; asked 30%: …)' — the share of validation images, and why it is
    not exactly the fraction asked for when it is not."""
    total = len(plan.train) + len(plan.valid) + len(plan.test)
    if not total:
        return ""
    share = len(plan.valid) / total
    rule = plan.rule
    text = f"{share:.1%} of {total} in validation"
    if rule.kind == "folders" or abs(share - rule.fraction) < 0.005:
        return text
    asked = f"asked {rule.fraction:.0%}"
    if rule.kind == "group":
        why = f"grouped by '{rule.pattern}': each group goes whole to one set"
    elif rule.kind == "time":
        why = "rounded to whole images"
    else:
        why = ("each image is placed by a hash of its name, so the share varies a little "
               "around the fraction and never moves an image when files are added")
    return f"{text} ({asked}; {why})"


def training_problem(context: Any) -> str:
    """What the Train page says instead of "Ready" for the open project ("" when ready):
    no folder, the data's problem, or a scan still running."""
    project = context.project
    if project is None:
        return "Open a folder on the Data page (or try the sample), then start training."
    problem = data_problem(context.data)
    if problem:
        return f"{project.name}: {problem}"
    if context.prepared is None:
        if context.runner.is_running("scan", owner=context):
            return f"Reading {project.name}…"
        return f"{project.name} has no usable training data yet: see the Data page."
    return ""


def ready_summary(prepared: Any) -> str:
    plan = prepared.plan
    return (f"Ready: {len(plan.train)} training and {len(plan.valid)} validation images, "
            f"{len(plan.classes)} classes.")
