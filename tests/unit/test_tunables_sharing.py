"""Tenants' shares and the classes' reserves as tunables: flat fields a document may leave out, refused when wrong, the
last good value kept by the reader, and admitted by the parameters' AllowedPattern."""

from __future__ import annotations

import json
import re

import pytest

from stacks.patterns.tunable_parameters import FLAT_JSON_OBJECT_PATTERN
from throttling.adapters.ssm_tunables import TunablesReader
from throttling.core import names
from throttling.core.hierarchical_rate import TenantShares
from throttling.core.tunables import DownstreamTunables, InvalidTunables, parse_tunables

BASE = {"rate_per_sec": 10, "burst": 10, "max_concurrency": 2}


def test_a_document_without_sharing_fields_shares_as_the_defaults_say_and_writes_none_of_them():
    # GIVEN a document of today
    tunables = parse_tunables(BASE).tunables
    # THEN the shares are the core's defaults, and the document written back is today's
    assert tunables.shares == TenantShares()
    assert json.loads(tunables.to_document()) == {**BASE, "mode": "auto"}


def test_shares_and_reserves_are_read_from_flat_fields_and_written_back_the_same():
    # GIVEN a document naming two tenants' shares, the default share, the borrowing depth and both reserves
    document = {**BASE, "share_acme": 0.5, "share_globex_2": 0.25, "default_tenant_share": 0.05, "borrow_depth": 0.3,
                "reserve_standard": 0.1, "reserve_batch": 0.6}
    tunables = parse_tunables(json.dumps(document)).tunables
    # THEN the shares say so
    shares = tunables.shares
    assert dict(shares.shares) == {"acme": 0.5, "globex_2": 0.25}
    assert (shares.default_share, shares.borrow_depth) == (0.05, 0.3)
    assert [shares.reserve_of(name) for name in names.PRIORITY_CLASSES] == [0.0, 0.1, 0.6]
    # AND the document round-trips, and Parameter Store's pattern admits it
    assert json.loads(tunables.to_document()) == {**document, "mode": "auto"}
    assert re.search(FLAT_JSON_OBJECT_PATTERN, tunables.to_document())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"share_acme": 0}, r"the share of tenant 'acme' must be in \(0, 1\], got 0"),
        ({"share_acme": "half"}, "share_acme must be a finite number, got 'half'"),
        ({"share_": 0.1}, "'share_' names no tenant"),
        ({"default_tenant_share": 2}, r"default_share must be in \(0, 1\], got 2"),
        ({"borrow_depth": -0.1}, r"borrow_depth must be in \[0, 1\], got -0.1"),
        ({"reserve_standard": 0.5, "reserve_batch": 0.2}, r"reserve of class 'batch' \(0.2\) is below"),
        ({"reserve_batch": 1}, r"must be in \[0, 1\), got 1"),
    ],
)
def test_a_wrong_share_or_reserve_refuses_the_document_with_the_reason(fields, message):
    with pytest.raises(InvalidTunables, match=message):
        parse_tunables({**BASE, **fields})


def test_the_reader_keeps_the_last_good_shares_when_a_document_turns_bad():
    # GIVEN a reader that read a good document with a tenant's share
    values = iter([json.dumps({**BASE, "share_acme": 0.5}), json.dumps({**BASE, "share_acme": 5})])
    reader = TunablesReader("/throttling/dev/downstreams/crm", defaults=DownstreamTunables(1, 1, 1),
                            fetch=lambda name: next(values))
    assert dict(reader.get().shares.shares) == {"acme": 0.5}
    # WHEN the document is changed to a share out of range
    # THEN the share in force stays the last good one
    assert dict(reader.get().shares.shares) == {"acme": 0.5}
