"""What API Gateway does with a request to an AWS-integration route, done on the emulator.

moto stores a REST API but executes neither its validation nor its mapping templates nor its AWS
service integrations. `LocalRestApi` does those steps in the order API Gateway does, with the
API's own deployed definition (templates, integration responses, roles, as CloudFormation resolved
them), its models and its gateway responses:

1. the route is matched; where the method requires an API key, the `x-api-key` header must be the value
   of an enabled key in a usage plan of this API (403 `INVALID_API_KEY` otherwise), and its id is
   `$context.identity.apiKeyId`, as API Gateway gives it to mapping templates and access logs;
2. the body must be JSON of the request model's content type (415), and valid against the model's
   JSON schema (400 `BAD_REQUEST_BODY`, with the validator's message), checked with a draft-4
   validator reading numbers as decimals and `pattern` as the ECMA-262 regex it is, as API
   Gateway's own does (`model_validator`);
3. the request template is rendered by a Velocity engine (airspeed) with `$input`, `$util` and
   `$context` as API Gateway defines them (path parameters percent-decoded once, as UTF-8, `+` kept;
   `$util.escapeJavaScript` character for character as AWS's Commons Lang 2 writes it), and sent,
   signed, to the emulator's service endpoint: exactly the bytes the template produced;
4. the integration response is chosen by matching the service's status code against each
   selection pattern, and its template rendered with the service's answer; `responseOverride`
   status and headers are applied.

Not modelled: throttling, quotas and WAF (moto has no token buckets; the limits are checked in the
synthesized template, and the README says what a client meets), which stage a key's usage plan
names (moto's CloudFormation skips `AWS::ApiGateway::Stage`, so a plan's stage is not its name here:
a plan of this API admits its keys on any stage), authorizers, caching and binary payloads.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import airspeed
import jsonschema
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# The JSON-protocol services an `action/<Action>` integration URI is sent to, and how they name it.
_JSON_TARGET_PREFIX = {"states": "AWSStepFunctions", "dynamodb": "DynamoDB_20120810"}
_AWS_URI = re.compile(r"arn:aws:apigateway:(?P<region>[^:]+):(?P<service>[^:]+):(?P<kind>action|path)/(?P<rest>.+)")


@dataclass
class ApiResponse:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class IntegrationCall:
    """What the route sent to the AWS service, and what the service answered."""

    url: str
    headers: dict[str, str]
    body: str
    status: int
    answer: str


class LocalRestApi:
    """One deployed REST API of the emulator, answering requests as API Gateway would (see module doc)."""

    def __init__(self, cloud: Any, rest_api_id: str, *, stage: str = "dev") -> None:
        self._cloud = cloud
        self._client = cloud.client("apigateway")
        self.rest_api_id = rest_api_id
        self.stage = stage
        self.calls: list[IntegrationCall] = []

    def request(self, verb: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None) -> ApiResponse:
        """Send one request; `body` is a str sent as it is, or anything else sent as JSON."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        raw_body = body if isinstance(body, str) or body is None else json.dumps(body)
        if raw_body is not None:
            headers.setdefault("content-type", "application/json")
        request_id = str(uuid.uuid4())
        context: dict[str, Any] = {
            "requestId": request_id, "httpMethod": verb, "stage": self.stage, "path": f"/{self.stage}{path}",
            "xrayTraceId": f"1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
            "identity": {"sourceIp": "198.51.100.7", "apiKey": headers.get("x-api-key", ""),
                         "userAgent": headers.get("user-agent", "localcloud")},
            "error": {}, "responseOverride": {"header": {}}, "requestOverride": {"header": {}},
        }
        found = self._route(verb, path)
        if found is None:
            return self._gateway_response("MISSING_AUTHENTICATION_TOKEN", 403, context, "Missing Authentication Token")
        resource, method, path_params = found
        context["resourcePath"] = resource["path"]
        if method.get("apiKeyRequired"):
            key_id = self._api_key_id(headers.get("x-api-key", ""))
            if key_id is None:
                return self._gateway_response("INVALID_API_KEY", 403, context, "Forbidden")
            context["identity"]["apiKeyId"] = key_id
        integration = method["methodIntegration"]
        content_type = headers.get("content-type", "application/json").split(";")[0].strip()
        templates = integration.get("requestTemplates") or {}
        if integration.get("passthroughBehavior") == "NEVER" and content_type not in templates:
            return self._gateway_response("UNSUPPORTED_MEDIA_TYPE", 415, context, "Unsupported Media Type")
        refusal = self._validate(method, content_type, raw_body, context)
        if refusal is not None:
            return refusal
        params = {"path": path_params, "querystring": {}, "header": headers}
        rendered = render_template(templates[content_type], body=raw_body or "{}", params=params, context=context)
        call = self._send(integration, rendered, context)
        self.calls.append(call)
        return self._integration_response(integration, call, params, context)

    def _api_key_id(self, value: str) -> str | None:
        """The id of the enabled key with this value in a usage plan of this API; None for anything else."""
        if not value:
            return None
        keys = self._client.get_api_keys(includeValues=True)["items"]
        key = next((k for k in keys if k.get("value") == value and k.get("enabled")), None)
        if key is None:
            return None
        plans = self._client.get_usage_plans(keyId=key["id"])["items"]
        in_plan = any(stage.get("apiId") == self.rest_api_id for plan in plans for stage in plan.get("apiStages", []))
        return key["id"] if in_plan else None

    def _route(self, verb: str, path: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]] | None:
        for resource in self._client.get_resources(restApiId=self.rest_api_id)["items"]:
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(resource["path"]))
            match = re.fullmatch(pattern, path)
            if match and verb in resource.get("resourceMethods", {}):
                method = self._client.get_method(restApiId=self.rest_api_id, resourceId=resource["id"], httpMethod=verb)
                return resource, method, {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
        return None

    def _validate(self, method: dict[str, Any], content_type: str, raw_body: str | None,
                  context: dict[str, Any]) -> ApiResponse | None:
        model_name = (method.get("requestModels") or {}).get(content_type)
        validator_id = method.get("requestValidatorId")
        if model_name is None or model_name == "Empty" or validator_id is None:
            return None
        validator = self._client.get_request_validator(restApiId=self.rest_api_id, requestValidatorId=validator_id)
        if not validator.get("validateRequestBody"):
            return None
        model = self._client.get_model(restApiId=self.rest_api_id, modelName=model_name)
        # Read with decimals, so `multipleOf: 0.01` is exact, as in API Gateway's validator.
        schema = json.loads(model["schema"], parse_float=Decimal)
        try:
            document = json.loads(raw_body or "", parse_float=Decimal)
        except ValueError:
            return self._gateway_response("BAD_REQUEST_BODY", 400, context, "Invalid request body",
                                          validation="Invalid request body: not JSON")
        errors = sorted(model_validator(schema).iter_errors(document), key=str)
        if errors:
            described = "[" + ", ".join(_describe(e) for e in errors) + "]"
            return self._gateway_response("BAD_REQUEST_BODY", 400, context, "Invalid request body",
                                          validation=described)
        return None

    def _send(self, integration: dict[str, Any], rendered: str, context: dict[str, Any]) -> IntegrationCall:
        match = _AWS_URI.fullmatch(integration["uri"])
        if integration["type"] != "AWS" or match is None:
            raise NotImplementedError(f"only AWS service integrations are executed here, got {integration['uri']!r}")
        service, kind, rest = match["service"], match["kind"], match["rest"]
        headers = {"X-Amzn-Trace-Id": f"Root={context['xrayTraceId']}"}
        for name, value in (integration.get("requestParameters") or {}).items():
            if name.startswith("integration.request.header.") and value.startswith("'"):
                headers[name.removeprefix("integration.request.header.")] = value.strip("'")
        if kind == "action":
            url = f"{self._cloud.endpoint_url}/"
            headers["X-Amz-Target"] = f"{_JSON_TARGET_PREFIX[service]}.{rest}"
            headers["Content-Type"] = "application/x-amz-json-1.0"
        else:
            url = f"{self._cloud.endpoint_url}/{rest}"
        request = AWSRequest(method=integration["httpMethod"], url=url, data=rendered.encode(), headers=headers)
        SigV4Auth(Credentials("testing", "testing"), service, match["region"]).add_auth(request)
        prepared = request.prepare()
        http_request = urllib.request.Request(prepared.url, data=prepared.body, method=prepared.method,
                                              headers=dict(prepared.headers))
        try:
            with urllib.request.urlopen(http_request, timeout=30) as answer:
                status, text = answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            status, text = refused.code, refused.read().decode()
        return IntegrationCall(url=url, headers=headers, body=rendered, status=status, answer=text)

    def _integration_response(self, integration: dict[str, Any], call: IntegrationCall, params: dict[str, Any],
                              context: dict[str, Any]) -> ApiResponse:
        responses = integration.get("integrationResponses") or {}
        chosen = next((r for r in responses.values() if r.get("selectionPattern")
                       and re.fullmatch(r["selectionPattern"], str(call.status))), None)
        if chosen is None:
            chosen = next(r for r in responses.values() if not r.get("selectionPattern"))
        headers = {"Content-Type": "application/json"}
        for name, value in (chosen.get("responseParameters") or {}).items():
            headers[name.removeprefix("method.response.header.")] = value.strip("'")
        template = (chosen.get("responseTemplates") or {}).get("application/json")
        body = call.answer if template is None else render_template(template, body=call.answer or "{}",
                                                                    params=params, context=context)
        override = context["responseOverride"]
        headers.update({k: str(v) for k, v in override["header"].items()})
        return ApiResponse(status=int(override.get("status") or chosen["statusCode"]), body=body, headers=headers)

    def _gateway_response(self, response_type: str, default_status: int, context: dict[str, Any], message: str,
                          *, validation: str = "") -> ApiResponse:
        """API Gateway's own refusal: the gateway response of its type if the API has one, else DEFAULT_4XX."""
        # API Gateway places the validation message inside the template's quotes with its quotes escaped
        # ("[object has missing required properties ([\"amount\"])]"), so the body stays JSON.
        context["error"] = {"responseType": response_type, "message": message,
                            "messageString": json.dumps(message), "validationErrorString": json.dumps(validation)[1:-1]}
        responses = {r["responseType"]: r for r in
                     self._client.get_gateway_responses(restApiId=self.rest_api_id).get("items", [])}
        spec = responses.get(response_type) or responses.get("DEFAULT_4XX") or {}
        status = int(spec.get("statusCode") or default_status)
        headers = {k.removeprefix("gatewayresponse.header."): v.strip("'")
                   for k, v in (spec.get("responseParameters") or {}).items()}
        template = (spec.get("responseTemplates") or {}).get("application/json", json.dumps({"message": message}))
        return ApiResponse(status=status, body=_substitute(template, context), headers=headers)


def model_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator of a request model as API Gateway's: JSON Schema draft 4, `pattern` in ECMA-262 semantics.

    Read the schema and the body with `parse_float=Decimal`, as `_validate` does, so `multipleOf`
    and bounds compare exact decimals.
    """
    return _EcmaDraft4Validator(schema)


class UnsupportedRegex(ValueError):
    """A model's `pattern` uses ECMA-262 syntax this translation does not carry into Python's `re`."""


# ECMA-262's \s: its WhiteSpace and LineTerminator characters (Python's \s adds U+001C-U+001F and U+0085).
_ECMA_SPACE = "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_ECMA_CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_", "s": _ECMA_SPACE}


@functools.lru_cache(maxsize=256)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 regex (without flags) into a Python regex that matches the same strings.

    Where the two dialects differ in meaning: `$` matches only at the very end (Python's also
    before a final newline, so `"abc\\n"` would pass `^[a-z]+$`); `\\d`, `\\w` and `\\b` are ASCII;
    `\\s` is ECMA's set of spaces; `.` stops at every line terminator; `(?<name>` names a group.
    Syntax with no Python equivalent here (`[]`, `[^]`, `\\D \\W \\S` inside a class) is refused.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 == len(pattern):
                raise UnsupportedRegex(f"pattern {pattern!r} ends with a lone backslash")
            escaped = pattern[i + 1]
            if escaped.lower() in _ECMA_CLASS_ESCAPES:
                members = _ECMA_CLASS_ESCAPES[escaped.lower()]
                if in_class and escaped.isupper():
                    raise UnsupportedRegex(
                        f"pattern {pattern!r}: \\{escaped} inside a character class; spell the set out")
                out.append(members if in_class else f"[{'^' if escaped.isupper() else ''}{members}]")
            else:
                out.append(char + escaped)
            i += 2
            continue
        if in_class:
            in_class = char != "]"
            out.append(char)
        elif char == "[":
            if pattern.startswith(("[]", "[^]"), i):
                raise UnsupportedRegex(
                    f"pattern {pattern!r}: ECMA's empty class [] and any-character [^] differ in Python")
            in_class = True
            out.append(char + ("^" if pattern.startswith("[^", i) else ""))
            i += 1 if pattern.startswith("[^", i) else 0
        elif char == "$":
            out.append("\\Z")
        elif char == ".":
            out.append("[^\\n\\r\\u2028\\u2029]")
        elif pattern.startswith("(?<", i) and pattern[i + 3:i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 2
        else:
            out.append(char)
        i += 1
    return re.compile("".join(out), re.ASCII)


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_EcmaDraft4Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _ecma_pattern})


def render_template(template: str, *, body: str, params: dict[str, Any], context: dict[str, Any]) -> str:
    """Render an API Gateway mapping template with its `$input`, `$util` and `$context` variables."""
    return airspeed.Template(template).merge({"input": _Input(body, params), "util": _Util(), "context": context})


class _Input:
    """`$input`: the body (`body`, `json(path)`, `path(path)`) and the request's parameters (`params`)."""

    def __init__(self, body: str, params: dict[str, Any]) -> None:
        self.body = body
        self._params = params

    def _document(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def path(self, expression: str) -> Any:
        """The value at a `$.a.b` JSONPath; what matches nothing is an empty string, as API Gateway renders it."""
        value = self._document()
        for part in [p for p in expression.removeprefix("$").split(".") if p]:
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return ""
        return value

    def json(self, expression: str) -> str:
        value = self.path(expression)
        return json.dumps(value, separators=(",", ":"))

    def params(self, name: str | None = None) -> Any:
        if name is None:
            return self._params
        for where in ("path", "querystring", "header"):
            if name in self._params[where]:
                return self._params[where][name]
        return ""


class _Util:
    """`$util` as API Gateway documents it."""

    def escapeJavaScript(self, value: Any) -> str:  # noqa: N802 (API Gateway's name)
        return escape_javascript(str(value))

    def urlEncode(self, value: Any) -> str:  # noqa: N802
        return urllib.parse.quote_plus(str(value), safe="*-._")

    def urlDecode(self, value: Any) -> str:  # noqa: N802
        return urllib.parse.unquote_plus(str(value))

    def base64Encode(self, value: Any) -> str:  # noqa: N802
        return base64.b64encode(str(value).encode()).decode()

    def base64Decode(self, value: Any) -> str:  # noqa: N802
        return base64.b64decode(str(value)).decode()

    def parseJson(self, value: str) -> Any:  # noqa: N802
        return json.loads(value)


# What Commons Lang 2's `StringEscapeUtils.escapeJavaScript` writes for the characters it escapes by name;
# API Gateway's `$util.escapeJavaScript` is that method.
_JAVASCRIPT_ESCAPES = {"'": "\\'", '"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f",
                       "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_javascript(text: str) -> str:
    """`$util.escapeJavaScript`, character for character as Commons Lang 2 writes it on AWS.

    Java strings are UTF-16, and the method walks their code units: every unit above 0x7F becomes
    `\\uXXXX` in upper-case hex, so a character outside the Basic Multilingual Plane (an emoji)
    becomes its surrogate pair (`\\uD83D\\uDE00`), which any JSON parser reads back as the character.
    Other units below 0x20 are `\\u00XX`; DEL (0x7F) and the rest of ASCII pass as they are. Note
    `'` becomes `\\'`, which is not a JSON escape: templates undo it (`.replaceAll("\\\\'", "'")`).
    """
    out = []
    for char in text:
        if char in _JAVASCRIPT_ESCAPES:
            out.append(_JAVASCRIPT_ESCAPES[char])
        elif 0x20 <= ord(char) <= 0x7F:
            out.append(char)
        else:
            encoded = char.encode("utf-16-be", "surrogatepass")
            out.extend(f"\\u{int.from_bytes(encoded[i:i + 2], 'big'):04X}" for i in range(0, len(encoded), 2))
    return "".join(out)


def _substitute(template: str, context: dict[str, Any]) -> str:
    """Gateway response templates: `$context.a.b` substituted as it is, no VTL."""
    def value(match: re.Match[str]) -> str:
        current: Any = context
        for part in match[1].split("."):
            current = current.get(part, "") if isinstance(current, dict) else ""
        return str(current)

    return re.sub(r"\$context\.([A-Za-z.]+[A-Za-z])", value, template)


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(body)"
    return f"{where}: {error.message}"
