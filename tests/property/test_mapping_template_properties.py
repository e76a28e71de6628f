"""Every mapping template, fed hostile strings in every value it reads, still answers valid JSON carrying them.

The guard for the class of mistake where a template places a value in JSON without escaping it, or
escapes it as `$util.escapeJavaScript` alone does (`'` -> `\\'`, which no JSON parser reads). Each
template in `stacks/mapping_templates` is rendered by the emulator's Velocity renderer, which escapes
as API Gateway does, with what the template reads (`$input.path`, `$input.params`, `$input.json`,
`$input.body`, `$context.*`) found in its own text: a template added or changed is covered as it is.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localcloud.emulator.api_gateway import render_template
from stacks.ingress_stack import MAPPING_TEMPLATES_DIR, mapping_template
from stacks.patterns.throttled_api import tenant_of_api_key_vtl

TEMPLATES = sorted(path.stem for path in MAPPING_TEMPLATES_DIR.glob("*.vtl"))
# The one template whose output is a form (SQS's query protocol), not JSON.
FORM_ENCODED = {"send_legacy_record.request"}
# Values written by the template, not read.
_WRITTEN_CONTEXT = ("responseOverride", "requestOverride")

HOSTILE_PIECES = ["'", '"', "\\", "\\'", "\\\\", "\n", "\r\n", "\t", "\x00", "\x1f", "\x7f", "/", "</script>",
                  '"}', '"},"injected":"', "${x}", "$context.requestId", "#if", "é", "\u2028", "\U0001F600",
                  "\ufeff", "{", "}", "[", "]", ","]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=4)), max_size=6).map("".join)


@dataclass
class Reads:
    """What a template reads, found in its text."""

    paths: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    literals: list[str] = field(default_factory=list)


def reads_of(text: str) -> Reads:
    context = sorted({m for m in re.findall(r"\$context\.([A-Za-z][A-Za-z.]*[A-Za-z])", text)
                      if not m.startswith(_WRITTEN_CONTEXT)})
    return Reads(
        paths=sorted(set(re.findall(r"\$input\.path\('([^']+)'\)", text))),
        params=sorted(set(re.findall(r"\$input\.params\('([^']+)'\)", text))),
        context=context,
        # What `.contains("...")` looks for: drawn into values now and then, so every branch is taken.
        literals=sorted(set(re.findall(r"\.contains\(\"([^\"]+)\"\)", text))),
    )


def filled(name: str) -> str:
    """The template as synth fills it: placeholders ending in Sec are numbers, the tenant's VTL as the API
    writes it, the rest names."""
    raw = (MAPPING_TEMPLATES_DIR / f"{name}.vtl").read_text()
    placeholders = set(re.findall(r"\$\{([A-Z]\w*)\}", raw))
    tenant_vtl = tenant_of_api_key_vtl({"sample-client": "SampleKeyId"})
    return mapping_template(name, **{p: 1 if p.endswith("Sec") else tenant_vtl if p == "TenantOfApiKey"
                                     else f"Sample{p}" for p in placeholders})


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    document: Any = value
    for part in reversed([p for p in dotted.split(".") if p]):
        document = {part: document}
    return document


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _string_leaves(value: Any) -> list[str]:
    """Every string in a JSON document, and inside strings that are JSON documents themselves."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in _string_leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in _string_leaves(v)]
    if isinstance(value, str):
        try:
            nested = json.loads(value)
        except ValueError:
            return [value]
        return [value, *(_string_leaves(nested) if isinstance(nested, (dict, list)) else [])]
    return []


@st.composite
def hostile_inputs(draw: Any, reads: Reads) -> tuple[dict[str, Any], dict[str, str], dict[str, Any], list[str]]:
    """(body document, path parameters, context, every value read) with a hostile string in each read."""
    values: list[str] = []

    def value() -> str:
        # Each value is fenced by its own markers, so a value cut or mangled in the output is told
        # apart from one the template only tested and never placed.
        index = len(values)
        literal = draw(st.sampled_from(["", *reads.literals]))
        text = f"«{index}»{draw(hostile_text)}{literal}{draw(hostile_text)}«/{index}»"
        values.append(text)
        return text

    document: dict[str, Any] = {"extra": value()}
    for path in reads.paths:
        if draw(st.booleans()):  # a path that matches nothing renders as "", which templates test for
            _merge(document, _nested(path.removeprefix("$"), value()))
    params = {name: value() for name in reads.params}
    context: dict[str, Any] = {"responseOverride": {"header": {}}, "requestOverride": {"header": {}}}
    for dotted in reads.context:
        _merge(context, _nested(dotted, value()))
    return document, params, context, values


def check_template(name: str, text: str, document: dict[str, Any], params: dict[str, str], context: dict[str, Any],
                   values: list[str]) -> None:
    """The template's output parses and carries every value it placed intact."""
    raw_body = json.dumps(document, ensure_ascii=False)
    rendered = render_template(text, body=raw_body, params={"path": params, "querystring": {}, "header": {}},
                               context=context)
    if name in FORM_ENCODED:
        form = urllib.parse.parse_qs(rendered.strip(), strict_parsing=True, keep_blank_values=True)
        leaves = [leaf for values_of_key in form.values() for v in values_of_key for leaf in _string_leaves(v)]
        assert form["MessageBody"] == [raw_body]
    else:
        try:
            leaves = _string_leaves(json.loads(rendered))
        except ValueError as error:
            raise AssertionError(f"{name}.vtl rendered invalid JSON ({error}):\n{rendered}") from None
    placed = 0
    for index, original in enumerate(values):
        if any(f"«{index}»" in leaf for leaf in leaves):
            placed += 1
            assert any(original in leaf for leaf in leaves), f"{name}.vtl placed {original!r} altered:\n{rendered}"
    assert placed, f"{name}.vtl placed none of the values it read:\n{rendered}"


@pytest.mark.parametrize("name", TEMPLATES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_template_answers_valid_json_carrying_hostile_values_intact(name, data):
    # GIVEN a template and hostile strings in every value it reads (some paths missing, to take every branch)
    text = filled(name)
    document, params, context, values = data.draw(hostile_inputs(reads_of(text)))
    # WHEN it is rendered as API Gateway renders it
    # THEN the output parses, and each value it placed is there as it was read
    check_template(name, text, document, params, context, values)


def test_the_templates_found_are_the_ones_the_api_uses():
    # A template nobody reads for its values would pass vacuously; each one reads at least one.
    assert len(TEMPLATES) >= 9
    for name in TEMPLATES:
        reads = reads_of(filled(name))
        assert reads.paths or reads.params or reads.context, f"{name}.vtl reads nothing the guard could vary"


@pytest.mark.parametrize(
    ("mistake", "value"),
    [
        ("\"$input.path('$.Item.status.S')\"", "it's \"paid\""),  # not escaped at all
        ("\"$util.escapeJavaScript($input.path('$.Item.status.S'))\"", "the card's issuer"),  # \' left in
    ],
    ids=["unescaped", "apostrophe-escaped"],
)
def test_the_guard_catches_a_template_that_places_a_value_badly(mistake, value):
    # GIVEN the GET answer's template with its status placed in one of the two wrong ways
    text = filled("get_payment.response")
    right = "\"$util.escapeJavaScript($input.path('$.Item.status.S')).replaceAll(\"\\\\'\", \"'\")\""
    assert right in text
    broken = text.replace(right, mistake)
    document = {"Item": {"pk": {"S": "o-1"}, "status": {"S": f"«0»{value}«/0»"}}}
    context = {"requestId": "r-1", "responseOverride": {"header": {}}}
    # WHEN the guard's check runs on it with a status holding an apostrophe or quotes
    # THEN it fails, as it passes for the template as it is
    check_template("get_payment.response", text, document, {"id": "o-1"}, context, [f"«0»{value}«/0»"])
    with pytest.raises(AssertionError, match="invalid JSON"):
        check_template("get_payment.response", broken, document, {"id": "o-1"}, context, [f"«0»{value}«/0»"])
