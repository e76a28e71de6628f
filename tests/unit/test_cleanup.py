"""`throttlectl empty-buckets`' emptying: in DeleteObjects' batches of 1,000, refusing what it cannot delete."""

from __future__ import annotations

from typing import Any

import pytest

from throttlectl.cleanup import StageBucket, empty_bucket, refuse_kept_data
from throttlectl.exceptions import AwsFailure, Refused


class FakeVersionedBucket:
    """S3's ListObjectVersions and DeleteObjects over an in-memory list of versions and delete markers."""

    def __init__(self, versions: int, markers: int, refuse: set[str] = frozenset()) -> None:
        self.entries = [(f"k{i}", f"v{i}", False) for i in range(versions)]
        self.entries += [(f"m{i}", f"d{i}", True) for i in range(markers)]
        self.refuse = refuse
        self.batches: list[int] = []

    def list_object_versions(self, Bucket: str, MaxKeys: int) -> dict[str, Any]:
        page = self.entries[:MaxKeys]
        return {"Versions": [{"Key": k, "VersionId": v} for k, v, marker in page if not marker],
                "DeleteMarkers": [{"Key": k, "VersionId": v} for k, v, marker in page if marker]}

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        objects = Delete["Objects"]
        assert len(objects) <= 1_000 and Delete["Quiet"] is True
        self.batches.append(len(objects))
        gone = {(o["Key"], o["VersionId"]) for o in objects if o["Key"] not in self.refuse}
        self.entries = [e for e in self.entries if (e[0], e[1]) not in gone]
        return {"Errors": [{"Key": o["Key"], "Code": "AccessDenied", "Message": "Access Denied"}
                           for o in objects if o["Key"] in self.refuse]}


def test_every_version_and_delete_marker_goes_in_batches_of_1000():
    bucket = FakeVersionedBucket(versions=1_700, markers=600)
    emptied = empty_bucket(bucket, "uploads")
    assert (emptied.versions, emptied.delete_markers) == (1_700, 600)
    assert bucket.entries == [] and bucket.batches == [1_000, 1_000, 300]


def test_a_version_it_cannot_delete_stops_it_with_the_cause():
    bucket = FakeVersionedBucket(versions=3, markers=0, refuse={"k1"})
    with pytest.raises(AwsFailure, match=r"could not delete 1 object versions of uploads: k1 \(AccessDenied"):
        empty_bucket(bucket, "uploads")


def test_a_retained_bucket_makes_the_stage_a_retain_stage():
    buckets = [StageBucket("Throttling-prod-Workflows", "Uploads", "uploads-1", "Retain"),
               StageBucket("Throttling-prod-Workflows", "Segments", "segments-1", "Delete")]
    with pytest.raises(Refused, match=r"stage prod keeps its data \(uploads-1 \(Retain\)\)"):
        refuse_kept_data("prod", buckets)
    refuse_kept_data("dev", buckets[1:])
