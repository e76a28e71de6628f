"""The registry of moto's fixes: applying every fix and undoing it leaves moto exactly as it was."""

from __future__ import annotations

import pytest

from localcloud.emulator import patches
from localcloud.emulator.patches import registry
from localcloud.emulator.public_layers import PublicLayers


@pytest.fixture
def resources():
    yield {"layers": PublicLayers("us-east-1"), "account_id": "123456789012",
           "lambda_account": patches.LambdaAccount(10)}
    # public_lambda_layers publishes parameters into moto's process-wide backends: forget them.
    from moto.core.base_backend import BackendDict

    BackendDict.reset()


def _targets() -> dict[tuple[int, str], object]:
    return {(id(owner), attribute): owner for owner, attribute in registry.replaced()}


def test_undoing_every_fix_puts_back_exactly_what_moto_had(resources):
    # GIVEN what the fixes replace, and what moto has there before any of them
    undo = patches.apply_all(**resources)
    targets = _targets()
    undo()
    before = {key: vars(owner).get(key[1], "missing") for key, owner in targets.items()}
    # WHEN every fix is applied, then undone
    undo = patches.apply_all(**resources)
    during = {key: vars(owner).get(key[1], "missing") for key, owner in targets.items()}
    undo()
    # THEN each attribute was replaced while the fixes were in force, and is moto's own again afterwards
    assert targets, "the fixes replaced nothing"
    assert all(during[key] is not before[key] for key in targets)
    assert {key: vars(owner).get(key[1], "missing") for key, owner in targets.items()} == before
    assert not any(patches.is_applied(name) for name in patches.PATCHES)


def test_a_removed_fix_comes_back_with_the_resources_apply_all_was_given(resources):
    # GIVEN every fix in force
    undo = patches.apply_all(**resources)
    try:
        # WHEN one that needs resources is removed and applied again by name alone
        patches.remove("lambda_account_concurrency")
        assert not patches.is_applied("lambda_account_concurrency")
        patches.apply("lambda_account_concurrency")
        # THEN it is in force again
        assert patches.is_applied("lambda_account_concurrency")
    finally:
        undo()


def test_two_fixes_may_not_replace_the_same_attribute():
    # GIVEN an attribute one fix replaced
    class Target:
        def call(self) -> str:
            return "moto"

    undo = registry.replace(Target, call=lambda self: "first fix")
    try:
        # WHEN another replaces it too, THEN it is refused: undoing one would silently drop the other
        with pytest.raises(RuntimeError, match="replaced already"):
            registry.replace(Target, call=lambda self: "second fix")
    finally:
        undo()
    assert Target().call() == "moto"


def test_an_unknown_fix_is_named_with_the_registered_ones():
    with pytest.raises(KeyError, match="atomic_dynamodb"):
        patches.remove("atomic_dynamo")
