"""One snapshot per stack: a change detector for review (`pytest --snapshot-update` after an intended change).

Asset hashes are masked, so editing a handler does not churn the snapshots.
"""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk.assertions import Template
from syrupy.extensions.json import JSONSnapshotExtension

ASSET_HASH = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack_key", ["shared_limits", "workflows", "buffers", "ingress", "control_loop"])
def test_stack_snapshot(dev_assembly, snapshot_json, stack_key):
    stacks, _ = dev_assembly
    template = Template.from_stack(stacks[stack_key]).to_json()
    masked = json.loads(ASSET_HASH.sub("<asset-hash>", json.dumps(template)))
    assert masked == snapshot_json
