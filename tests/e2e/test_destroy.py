"""`make destroy`'s first step against the emulator: a destroy stage's buckets emptied, a retain stage's refused.

The emulator fails a stack's deletion while a bucket of it holds anything, as CloudFormation does
(moto alone deletes the stack and leaves the bucket), so the dev stage that ran is not destroyed
until `throttlectl empty-buckets` has deleted every version and delete marker.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from localcloud.emulator import patches
from localcloud.emulator.deployer import Deployer
from throttlectl.cli import main

pytestmark = pytest.mark.emulator

# cdk destroy's order: each stack after the stacks that import from it.
DESTROY_ORDER = ("ControlLoop", "Ingress", "Buffers", "Workflows", "SharedLimits")


def empty_buckets(cloud, stage: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--stage", stage, "empty-buckets", "--yes"], client_factory=cloud.client, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def versions(cloud, bucket: str) -> tuple[int, int]:
    page = cloud.client("s3").list_object_versions(Bucket=bucket)
    return len(page.get("Versions", [])), len(page.get("DeleteMarkers", []))


def status(cloud, stack: str) -> str:
    (found,) = [s for s in cloud.client("cloudformation").list_stacks()["StackSummaries"] if s["StackName"] == stack]
    return found["StackStatus"]


def test_the_dev_stage_is_destroyed_once_its_buckets_are_emptied(cloud, deployed):
    s3 = cloud.client("s3")
    workflows = deployed["Throttling-dev-Workflows"].outputs
    uploads, segments = workflows["UploadsBucketName"], workflows["SegmentsBucketName"]
    # GIVEN a stage that ran: two versions of an upload and a delete marker, another upload, a segment export
    s3.put_object(Bucket=uploads, Key="photo.jpg", Body=b"1")
    s3.put_object(Bucket=uploads, Key="photo.jpg", Body=b"2")
    s3.delete_object(Bucket=uploads, Key="photo.jpg")
    s3.put_object(Bucket=uploads, Key="other.jpg", Body=b"3")
    s3.put_object(Bucket=segments, Key="segments/weekly.csv", Body=b"user_id\nu1\n")
    assert versions(cloud, uploads) == (3, 1)
    cfn = cloud.client("cloudformation")
    for name in DESTROY_ORDER[:3]:
        cfn.delete_stack(StackName=f"Throttling-dev-{name}")
    # WHEN its workflows stack is deleted as it is THEN the deletion fails on the uploads bucket, as on AWS
    cfn.delete_stack(StackName="Throttling-dev-Workflows")
    assert status(cloud, "Throttling-dev-Workflows") == "DELETE_FAILED"
    failed = [e for e in cfn.describe_stack_events(StackName="Throttling-dev-Workflows")["StackEvents"]
              if e["ResourceStatus"] == "DELETE_FAILED" and e["ResourceType"] == "AWS::S3::Bucket"]
    assert failed and "You must delete all versions in the bucket" in failed[0]["ResourceStatusReason"]
    # WHEN the stage's buckets are emptied
    code, out, _ = empty_buckets(cloud, "dev")
    # THEN every version and delete marker is gone, and it says how many
    assert code == 0
    assert f"{uploads}: 3 object versions, 1 delete markers" in out
    assert f"{segments}: 1 object versions, 0 delete markers" in out
    assert versions(cloud, uploads) == versions(cloud, segments) == (0, 0)
    # AND the stage's stacks are deleted, buckets and all
    for name in DESTROY_ORDER[3:]:
        cfn.delete_stack(StackName=f"Throttling-dev-{name}")
    assert {status(cloud, f"Throttling-dev-{name}") for name in DESTROY_ORDER} == {"DELETE_COMPLETE"}
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert uploads not in buckets and segments not in buckets


def test_a_stage_that_retains_its_data_is_refused_and_nothing_is_deleted(cloud, tmp_path):
    # GIVEN a stage whose bucket is retained (prod's removal policy), holding an object
    template = {"Resources": {"Uploads": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain",
                                          "UpdateReplacePolicy": "Retain"}},
                "Outputs": {"Name": {"Value": {"Ref": "Uploads"}}}}
    (tmp_path / "Throttling-prod-Workflows.template.json").write_text(json.dumps(template))
    (tmp_path / "manifest.json").write_text(json.dumps({"version": "40.0.0", "artifacts": {
        "Throttling-prod-Workflows": {"type": "aws:cloudformation:stack",
                                      "properties": {"templateFile": "Throttling-prod-Workflows.template.json"}}}}))
    deployer = Deployer(cloudformation=cloud.client("cloudformation"), s3=cloud.client("s3"), ssm=cloud.client("ssm"),
                        account=cloud.account_id, region=cloud.region)
    bucket = deployer.deploy(Path(tmp_path))["Throttling-prod-Workflows"].outputs["Name"]
    cloud.client("s3").put_object(Bucket=bucket, Key="keep.jpg", Body=b"kept")
    # WHEN its buckets are to be emptied THEN it refuses, saying why, and the object stays
    code, _, error = empty_buckets(cloud, "prod")
    assert code == 2 and "keeps its data" in error and "Nothing was deleted" in error
    assert versions(cloud, bucket) == (1, 0)


def test_without_the_patch_moto_deletes_the_stack_and_silently_keeps_the_full_bucket(cloud, tmp_path):
    template = {"Resources": {"Data": {"Type": "AWS::S3::Bucket"}}, "Outputs": {"Name": {"Value": {"Ref": "Data"}}}}
    (tmp_path / "Probe.template.json").write_text(json.dumps(template))
    (tmp_path / "manifest.json").write_text(json.dumps({"version": "40.0.0", "artifacts": {
        "Probe": {"type": "aws:cloudformation:stack", "properties": {"templateFile": "Probe.template.json"}}}}))
    deployer = Deployer(cloudformation=cloud.client("cloudformation"), s3=cloud.client("s3"), ssm=cloud.client("ssm"),
                        account=cloud.account_id, region=cloud.region)
    bucket = deployer.deploy(Path(tmp_path))["Probe"].outputs["Name"]
    cloud.client("s3").put_object(Bucket=bucket, Key="left.jpg", Body=b"x")
    patches.remove("cloudformation_bucket_deletion")
    try:
        cloud.client("cloudformation").delete_stack(StackName="Probe")
    finally:
        patches.apply("cloudformation_bucket_deletion")
    assert status(cloud, "Probe") == "DELETE_COMPLETE"
    assert bucket in {b["Name"] for b in cloud.client("s3").list_buckets()["Buckets"]}


@pytest.mark.parametrize("patched", [True, False])
def test_a_bucket_cloudformation_creates_versioned_keeps_every_version_only_with_the_patch(cloud, tmp_path, patched):
    template = {"Resources": {"Data": {"Type": "AWS::S3::Bucket",
                                       "Properties": {"VersioningConfiguration": {"Status": "Enabled"}}}},
                "Outputs": {"Name": {"Value": {"Ref": "Data"}}}}
    name = f"Versioned{'Patched' if patched else 'Plain'}"
    (tmp_path / f"{name}.template.json").write_text(json.dumps(template))
    (tmp_path / "manifest.json").write_text(json.dumps({"version": "40.0.0", "artifacts": {
        name: {"type": "aws:cloudformation:stack", "properties": {"templateFile": f"{name}.template.json"}}}}))
    deployer = Deployer(cloudformation=cloud.client("cloudformation"), s3=cloud.client("s3"), ssm=cloud.client("ssm"),
                        account=cloud.account_id, region=cloud.region)
    if not patched:
        patches.remove("s3_versioning_from_cloudformation")
    try:
        bucket = deployer.deploy(Path(tmp_path))[name].outputs["Name"]
    finally:
        patches.apply("s3_versioning_from_cloudformation")
    cloud.client("s3").put_object(Bucket=bucket, Key="k", Body=b"1")
    cloud.client("s3").put_object(Bucket=bucket, Key="k", Body=b"2")
    assert versions(cloud, bucket) == ((2, 0) if patched else (1, 0))
