"""Names and messages made safe to hash, write and print.

File names are not always text: on Linux a name with bytes that are not UTF-8 reaches
Python as a str with "surrogate escapes" (``os.fsdecode(b"caf\\xe9.png") == "caf\\udce9.png"``),
which strict UTF-8 encoding (hashing, a CSV, JSON on stdout) refuses. And a class name
from a model, or a file name, may hold terminal control characters (ESC, CR, BEL...)
that a terminal would obey. Three spellings, one for each use:

- :func:`text_bytes`: the name's bytes, for hashes and files: exactly ``os.fsencode`` on a
  UTF-8 file system (a valid name gives its UTF-8 bytes, so existing hashes do not move;
  an escaped byte gives the original byte back).
- :func:`display_name`: for JSON output: valid text is kept as is, each byte that is not
  UTF-8 is written ``\\xNN`` (a literal backslash, so ``caf\\udce9.png`` is shown as
  ``caf\\xe9.png``, which JSON spells ``"caf\\\\xe9.png"``).
- :func:`printable`: for human (terminal) output: as :func:`display_name`, and every
  control character (C0, DEL, C1) is written as an escape (``\\r``, ``\\n``, ``\\t``,
  ``\\x1b``...), so nothing printed can move the cursor, retitle or clear the terminal.
"""

from __future__ import annotations

import re
from typing import Any

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# C0 controls, DEL, C1 controls, and lone surrogates (bytes that were not UTF-8).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSAFE_KEEP_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def text_bytes(text: str) -> bytes:
    """The bytes of a name: ``os.fsencode`` on a UTF-8 file system, on every OS.

    A surrogate escape (U+DC80..U+DCFF) gives back its original byte; any other lone
    surrogate (possible in a Windows file name) is kept as its UTF-8-style 3 bytes.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a file-name byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if code > 0xFF:
        return f"\\u{code:04x}"
    return f"\\x{code:02x}"


def display_name(text: str) -> str:
    """``text`` with each byte that is not UTF-8 spelled ``\\xNN``: always encodable."""
    return re.sub(r"[\ud800-\udfff]", lambda m: _escape(m.group()), text)


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``str(text)`` safe for a terminal: controls and undecodable bytes as escapes.

    ``keep_newlines`` keeps ``\\n`` (not ``\\r``) for messages Loupe itself composes over
    several lines; a name printed on its own line should leave it False.
    """
    pattern = _UNSAFE_KEEP_NEWLINE if keep_newlines else _UNSAFE
    return pattern.sub(lambda m: _escape(m.group()), str(text))


def json_safe(obj: Any) -> Any:
    """``obj`` with every string (keys too) passed through :func:`display_name`, for
    JSON printed or written as UTF-8 (``ensure_ascii=False``); other values unchanged."""
    if isinstance(obj, str):
        return display_name(obj)
    if isinstance(obj, dict):
        return {json_safe(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
