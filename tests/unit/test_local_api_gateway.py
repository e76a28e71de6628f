"""The emulated API Gateway's pure parts against what AWS does: `$util.escapeJavaScript` and the validator's regexes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localcloud.api_gateway import escape_javascript


# Outputs of Commons Lang 2's StringEscapeUtils.escapeJavaScript (its own test suite's cases, and the
# per-range rules of escapeJavaStyleString), which API Gateway's `$util.escapeJavaScript` runs.
@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("He didn't say, \"stop!\"", "He didn\\'t say, \\\"stop!\\\""),
        ('document.getElementById("test").value = \'<script>alert(\'aaa\');</script>\';',
         "document.getElementById(\\\"test\\\").value = \\'<script>alert(\\'aaa\\');<\\/script>\\';"),
        ("back\\slash", "back\\\\slash"),
        ("\b\f\n\r\t", "\\b\\f\\n\\r\\t"),
        ("\x00\x01\x0f\x10\x1f", "\\u0000\\u0001\\u000F\\u0010\\u001F"),
        ("\x7f", "\x7f"),
        ("\x80\u00ef\u0234\u1234\uabcd", "\\u0080\\u00EF\\u0234\\u1234\\uABCD"),
        ("\U0001F600", "\\uD83D\\uDE00"),
        ("\U0010FFFF", "\\uDBFF\\uDFFF"),
        ("plain ASCII ~ 0-9 {}[]", "plain ASCII ~ 0-9 {}[]"),
    ],
    ids=["quotes", "script", "backslash", "named-controls", "other-controls", "del", "bmp", "emoji", "last-code-point",
         "ascii"],
)
def test_escape_javascript_writes_what_commons_lang_2_writes(text, escaped):
    assert escape_javascript(text) == escaped


@given(st.text())
def test_escaped_text_with_its_apostrophes_unescaped_is_a_json_string_of_the_same_text(text):
    # GIVEN any text, astral characters and lone surrogates' neighbours included
    # WHEN it is escaped and `\'` turned back into `'`, as every mapping template does
    escaped = escape_javascript(text).replace("\\'", "'")
    # THEN a JSON parser reads the original text back, and the output is ASCII only
    assert json.loads(f'"{escaped}"') == text
    assert escaped.isascii()
