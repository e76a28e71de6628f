"""The emulated API Gateway's pure parts against what AWS does: `$util.escapeJavaScript` and the validator's regexes."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from localcloud.emulator.api_gateway import UnsupportedRegex, ecma_regex, escape_javascript, model_validator


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


# (pattern, text, ECMA-262 matches?) where Python's `re` reads the same pattern differently.
DIALECT_DIFFERENCES = [
    ("^[A-Z]{3}$", "EUR\n", False),
    ("^[A-Za-z0-9_-]{1,74}$", "abc\n", False),
    ("^\\d+$", "\u0663", False),  # ARABIC-INDIC DIGIT THREE: a digit to Python, not to ECMA-262
    ("^\\w+$", "\u00e9", False),
    ("\\S", "\x1c", True),  # INFORMATION SEPARATOR FOUR: whitespace to Python only
    ("^\\s$", "\ufeff", True),
    ("^.$", "\r", False),
    ("^(?<year>\\d{4})$", "2026", True),
]


@pytest.mark.parametrize(("pattern", "text", "ecma_matches"), DIALECT_DIFFERENCES,
                         ids=[repr(t) for _, t, _ in DIALECT_DIFFERENCES])
def test_patterns_match_as_ecma_262_says_where_python_s_re_would_not(pattern, text, ecma_matches):
    # GIVEN a pattern whose meaning differs between ECMA-262 (API Gateway's validator) and Python's re
    try:
        python_matches = re.search(pattern, text) is not None
    except re.error:
        python_matches = None  # syntax Python does not know at all
    # THEN the emulator's translation matches as ECMA-262 does, which is not what re alone does
    assert (ecma_regex(pattern).search(text) is not None) == ecma_matches
    assert python_matches != ecma_matches


@pytest.mark.parametrize("pattern", ["[]", "x[^]", "[\\S]", "trailing\\"])
def test_ecma_syntax_without_a_python_equivalent_is_refused_not_guessed(pattern):
    with pytest.raises(UnsupportedRegex, match="pattern"):
        ecma_regex(pattern)


def test_the_model_validator_refuses_a_trailing_newline_that_jsonschema_alone_lets_through():
    # GIVEN a model whose order id is anchored at both ends
    schema = {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^[a-z]{1,8}$"}}}
    document = {"order_id": "abc\n"}
    # WHEN the id ends with a newline
    # THEN jsonschema's own draft-4 validator (Python's re.search) accepts it, and API Gateway's does not
    assert jsonschema.Draft4Validator(schema).is_valid(document)
    (error,) = model_validator(schema).iter_errors(document)
    assert error.message == "'abc\\n' does not match '^[a-z]{1,8}$'"
