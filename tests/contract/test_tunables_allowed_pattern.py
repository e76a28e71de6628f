"""Parameter Store refuses a tunables value no reader could use: every one is a flat JSON object.

The workflows parse the downstream documents with `States.StringToJson`, whose failure
(`States.Runtime`) no Catch can take; so the parameters' AllowedPattern admits only flat JSON
objects, and these tests hold the three sides together: what the pattern admits is JSON, what every
writer writes is admitted, and the deployed parameters carry the pattern.
"""

from __future__ import annotations

import json
import math
import re

from aws_cdk.assertions import Template
from hypothesis import given, settings
from hypothesis import strategies as st

from stacks.patterns.tunable_parameters import (
    ALLOWED_PATTERN_MAX_LENGTH,
    FLAT_JSON_OBJECT_PATTERN,
)
from throttling.core.names import TUNABLES_MODES
from throttling.core.tunables import DownstreamTunables, parse_tunables

PATTERN = re.compile(FLAT_JSON_OBJECT_PATTERN)


@settings(max_examples=100, deadline=None)
@given(st.from_regex(FLAT_JSON_OBJECT_PATTERN, fullmatch=True))
def test_every_value_the_pattern_admits_is_a_json_object_of_scalars(text):
    document = json.loads(text)
    assert isinstance(document, dict)
    assert all(value is None or isinstance(value, (bool, int, float, str)) for value in document.values())
    assert all(not isinstance(value, float) or math.isfinite(value) for value in document.values())


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(min_value=0.01, max_value=10_000, allow_nan=False),
       burst=st.integers(1, 5_000), concurrency=st.integers(1, 1_000), mode=st.sampled_from(TUNABLES_MODES),
       factor=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False))
def test_every_document_the_lambdas_controller_and_throttlectl_write_is_admitted(rate, burst, concurrency, mode, factor):
    # Every writer serializes with json.dumps (the controller after arithmetic on the rate, hence any float)
    document = DownstreamTunables(rate_per_sec=rate, burst=burst, max_concurrency=concurrency, mode=mode).to_document()
    assert PATTERN.search(document), document
    assert PATTERN.search(json.dumps({**json.loads(document), "rate_per_sec": rate * factor}, sort_keys=True))


def test_what_no_reader_can_use_is_refused():
    for text in ("not json", "", '{"rate_per_sec": NaN}', '{"rate_per_sec": Infinity}', '{"burst": 01}',
                 '{"limits": {"burst": 1}}', '{"burst": [1]}', '{"burst": 1,}', "[1, 2]", '"text"',
                 '{"burst": "1\\n2"}', '{"burst": 1} trailing', '{Burst: 1}'):
        assert not PATTERN.search(text), text
    assert PATTERN.search('{"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 2, "mode": "manual"}')
    assert PATTERN.search('\n{ "burst" : 5 }\n')


def test_every_tunable_parameter_is_deployed_with_the_pattern_and_its_seed_matches(dev_assembly):
    stacks, _ = dev_assembly
    parameters = Template.from_stack(stacks["shared_limits"]).find_resources("AWS::SSM::Parameter")
    tunables = {p["Properties"]["Name"]: p["Properties"] for p in parameters.values()
                if p["Properties"]["Name"].startswith("/throttling/dev/")}
    assert {name.split("/")[3] for name in tunables} == {"downstreams", "breakers"}
    for name, properties in tunables.items():
        assert properties["AllowedPattern"] == FLAT_JSON_OBJECT_PATTERN, name
        assert PATTERN.search(properties["Value"]), name
        if "/downstreams/" in name:
            parse_tunables(properties["Value"])
    assert len(FLAT_JSON_OBJECT_PATTERN) <= ALLOWED_PATTERN_MAX_LENGTH


def test_a_seed_the_pattern_would_refuse_fails_synth():
    import pytest
    from aws_cdk import App, Stack

    from stacks.patterns.tunable_parameters import TunableParameters

    with pytest.raises(ValueError, match=r"documents\['downstreams/crm'\] must be a flat JSON object"):
        TunableParameters(Stack(App(), "Probe"), "Tunables", prefix="/throttling/probe",
                          documents={"downstreams/crm": '{"limits": {"burst": 1}}'})
