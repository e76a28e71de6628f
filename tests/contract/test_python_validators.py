"""The project's Python validators match whole values: no `$` that lets a trailing newline through.

In a Python regular expression `$` also matches just before a final newline, and `match` anchors only
the start, so `re.match(r"^[A-Z]{3}$", "EUR\\n")` accepts the newline; `\\d` takes any Unicode digit
("١٢٣"). Every pattern the code validates with is therefore written without anchors and used with
`fullmatch` (or ends with `\\Z`), with `[0-9]` for digits. This test reads the source of every package
that validates input and fails on a pattern or a call that breaks the rule, naming the file and line.

JSON-schema patterns in the stacks are not Python patterns: API Gateway evaluates them with
ECMA-262 semantics, where `$` is the very end, so they are not scanned here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("lambdas", "throttlectl", "stacks", "localcloud")
# Rewritten in parallel to evaluate JSON-schema patterns as API Gateway does; scanned once that lands.
NOT_YET_SCANNED: set[str] = set()
_PATTERN_FUNCTIONS = {"compile", "match", "search", "fullmatch", "sub", "subn", "split", "findall", "finditer"}


def regex_findings(source: str, filename: str = "<source>") -> list[str]:
    """Every half-anchored pattern, `match` call and Unicode `\\d` in `source`, as `file:line: why`."""
    tree = ast.parse(source, filename)
    compiled = _compiled_pattern_names(tree)
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner, method = node.func.value, node.func.attr
        from_re = isinstance(owner, ast.Name) and owner.id == "re"
        where = f"{filename}:{node.lineno}"
        if method == "match" and (from_re or (isinstance(owner, ast.Name) and owner.id in compiled)):
            findings.append(f"{where}: .match() anchors only the start; use fullmatch")
        if not from_re or method not in _PATTERN_FUNCTIONS or not node.args:
            continue
        pattern = node.args[0]
        if not isinstance(pattern, ast.Constant) or not isinstance(pattern.value, str):
            continue
        if _ends_with_dollar(pattern.value):
            findings.append(f"{where}: pattern {pattern.value!r} ends with $, which also matches before a final "
                            "newline; drop it and use fullmatch, or end with \\Z")
        if "\\d" in pattern.value and not _ascii_flag(node):
            findings.append(f"{where}: pattern {pattern.value!r} uses \\d, which takes any Unicode digit; use [0-9]")
    return findings


def _compiled_pattern_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr == "compile" and getattr(func.value, "id", None) == "re":
                names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    return names


def _ends_with_dollar(pattern: str) -> bool:
    if not pattern.endswith("$"):
        return False
    backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
    return backslashes % 2 == 0  # `\$` is a literal dollar sign


def _ascii_flag(call: ast.Call) -> bool:
    flags = [*call.args[1:], *(k.value for k in call.keywords if k.arg == "flags")]
    return any("ASCII" in ast.unparse(flag) or ast.unparse(flag).endswith(".A") for flag in flags)


def _python_files() -> list[Path]:
    files = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative not in NOT_YET_SCANNED and "node_modules" not in relative:
                files.append(path)
    return files


def test_no_validator_lets_a_trailing_newline_or_a_foreign_digit_through():
    findings = [f for path in _python_files()
                for f in regex_findings(path.read_text(), path.relative_to(ROOT).as_posix())]
    assert findings == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('import re\nre.match(r"^[A-Z]{3}$", value)', [".match() anchors only the start", "ends with $"]),
        ('import re\nCURRENCY = re.compile(r"[A-Z]{3}")\nCURRENCY.match(value)', [".match() anchors only the start"]),
        ('import re\nID = re.compile(r"^[a-z]+$")', ["ends with $"]),
        ('import re\nACCOUNT = re.compile(r"[0-9]{12}|\\d{12}")', ["uses \\d"]),
    ],
    ids=["re.match-with-dollar", "compiled-match", "dollar-anchor", "unicode-digit"],
)
def test_the_guard_catches_each_way_of_letting_a_trailing_newline_through(source, expected):
    # GIVEN source that validates with a half-anchored pattern / WHEN scanned THEN each mistake is named
    findings = regex_findings(source)
    assert len(findings) == len(expected)
    for finding, why in zip(findings, expected, strict=True):
        assert why in finding


@pytest.mark.parametrize(
    "source",
    [
        'import re\nCURRENCY = re.compile(r"[A-Z]{3}")\nCURRENCY.fullmatch(value)',
        'import re\nre.compile(r"[0-9]{8}\\Z").sub("", name)',
        'import re\nre.compile(r"\\d{3}", re.ASCII)',
        'import re\nre.search(r"price: \\$", text)',
    ],
    ids=["fullmatch", "backslash-Z", "ascii-digits", "literal-dollar"],
)
def test_the_guard_accepts_whole_matches(source):
    assert regex_findings(source) == []
