"""moto's CloudFormation: resource types it skips, and a stack that fails, as on AWS, when a service refuses a resource."""

from __future__ import annotations

from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all


# Resource types the emulator adds to moto's CloudFormation: type -> class with moto's CloudFormationModel shape.
_RESOURCE_TYPES: dict[str, Any] = {}
_lookup_undo: list[Undo] = []  # the one lookup in front of moto's, while any fix has types in it


def add_resource_types(classes: dict[str, Any]) -> Undo:
    """Teach moto's CloudFormation `classes` (several fixes do); the answer forgets them again."""
    import moto.cloudformation.parsing as parsing

    if not _lookup_undo:
        original = parsing.resource_class_from_type

        def resource_class_from_type(resource_type: str) -> Any:
            return _RESOURCE_TYPES.get(resource_type) or original(resource_type)

        _lookup_undo.append(replace(parsing, resource_class_from_type=resource_class_from_type))
    _RESOURCE_TYPES.update(classes)

    def undo() -> None:
        for resource_type in classes:
            _RESOURCE_TYPES.pop(resource_type, None)
        if not _RESOURCE_TYPES and _lookup_undo:
            _lookup_undo.pop()()

    return undo


@patch("cloudformation")
def cloudformation_resource_failures() -> Undo:
    """Fail the stack, as CloudFormation does, when a resource's service refuses it.

    moto limitation: a service's refusal while CloudFormation creates or updates a resource (a
    Lambda limit, a bad property) escapes from the `CreateStack`/`UpdateStack` call itself, in that
    service's error format (JSON for Lambda), which botocore cannot even parse as CloudFormation's
    XML. CloudFormation accepts the call, marks the resource `CREATE_FAILED` (or `UPDATE_FAILED`)
    with the service's message and rolls the stack back; here the stack ends `ROLLBACK_COMPLETE`
    (`UPDATE_ROLLBACK_COMPLETE`) with that event, and the resources created before it stay (moto
    does not roll back).
    """
    import moto.cloudformation.parsing as parsing
    from moto.cloudformation.models import Stack as FakeStack

    original_parse = parsing.parse_and_create_resource
    original_create = FakeStack.create_resources
    original_update = FakeStack.update

    def parse_and_create_resource(logical_id: str, resource_json: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return original_parse(logical_id, resource_json, *args, **kwargs)
        except SERVICE_ERRORS as error:
            error._localcloud_resource = (logical_id, resource_json.get("Type", ""))  # type: ignore[attr-defined]
            raise

    def create_resources(self: Any) -> None:
        try:
            original_create(self)
        except SERVICE_ERRORS as error:
            _fail_stack(self, error, "CREATE_FAILED", "ROLLBACK_COMPLETE")

    def update(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            original_update(self, *args, **kwargs)
        except SERVICE_ERRORS as error:
            _fail_stack(self, error, "UPDATE_FAILED", "UPDATE_ROLLBACK_COMPLETE")

    return undo_all(
        replace(parsing, parse_and_create_resource=parse_and_create_resource),
        replace(FakeStack, create_resources=create_resources, update=update),
    )


def _service_errors() -> tuple[type[BaseException], ...]:
    from moto.core import exceptions

    return tuple(getattr(exceptions, name) for name in ("_RESTError", "ServiceException") if hasattr(exceptions, name))


SERVICE_ERRORS = _service_errors()  # what a service raises to refuse a call


def _fail_stack(stack: Any, error: BaseException, resource_status: str, stack_status: str) -> None:
    from moto.cloudformation.models import Event
    from moto.cloudformation.parsing import OutputMap

    # moto creates resources lazily on first use: keep only those it created, and no outputs (a rolled-back
    # stack has none), so describing or listing the stack does not try the refused resource again.
    resource_map = stack.resource_map
    resource_map._resource_json_map = {logical_id: resource for logical_id, resource in
                                       resource_map._resource_json_map.items()
                                       if logical_id in resource_map._parsed_resources}
    stack.output_map = OutputMap(resource_map, {**stack.template_dict, "Outputs": {}}, stack.stack_id)
    from moto.cloudformation.models import cloudformation_backends

    exports = cloudformation_backends[stack.account_id][stack.region_name].exports
    for name in [name for name, export in exports.items() if export.exporting_stack_id == stack.stack_id]:
        del exports[name]

    logical_id, resource_type = getattr(error, "_localcloud_resource", (stack.name, "AWS::CloudFormation::Stack"))
    code = getattr(error, "error_type", None) or getattr(error, "code", None) or type(error).__name__
    message = getattr(error, "message", None) or str(error)
    stack.events.append(Event(
        stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id, physical_resource_id="",
        resource_type=resource_type, resource_status=resource_status,
        resource_status_reason=f"{message} (Error Code: {code})", resource_properties=None,
    ))
    stack.status = stack_status
    stack._add_stack_event(stack_status)
