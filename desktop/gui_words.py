"""The engine's command-line advice, said in the app's words.

Engine errors are written for the CLI and name its options ("lower the learning rate
(e.g. --lr 0.0002)", "a smaller --size"). The desktop shows the same errors (one message,
one source of truth), so each option named there is replaced by the control that sets it
in the app. :func:`in_gui_words` is applied where an error reaches the user: the error
dialog (:meth:`AppContext.report_error`), the Train and Data pages' status lines.
"""

from __future__ import annotations

import re

_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    (r"\(e\.g\. --lr ([0-9.eE+-]+)\)", r"(e.g. \1 in the Learning rate field)"),
    (r"--lr ([0-9.eE+-]+)", r"a learning rate of \1"),
    (r"\(--bs (\d+)\)", r"(Batch size \1)"),
    (r"a smaller --bs or --size", "a smaller Batch size or Image size"),
    (r"a smaller --size or a smaller --arch", "a smaller Image size or architecture"),
    (r"a smaller --size", "a smaller Image size"),
    (r"a smaller --arch", "a smaller architecture"),
    (r"try another --label rule \([^)]*\)", "choose another rule under “How images are "
     "labelled” on the Data tab"),
    (r"use --split group:REGEX", "split “By group (regex)” on the Data tab"),
    (r"continue with --resume \S+", "resume it from the Models tab"),
    (r"with --resume \S+", "with Resume on the Models tab"),
    (r" ?\(the same command without --resume\)", ""),
    (r"\(make one with --test-fraction, e\.g\. 0\.1\)",
     "(set a Test set fraction on the Data tab, e.g. 0.1)"),
    (r"`loupe weights import FILE --arch \S+` / `loupe weights download \S+`",
     "the Import… and Download… buttons"),
)


def in_gui_words(text: str) -> str:
    """``text`` with each command-line option it names replaced by the app's control."""
    for pattern, replacement in _REPLACEMENTS:
        text = re.sub(pattern, replacement, text)
    return text
