"""`throttlectl`: see and tune a stage's limits safely, see what they are doing, redrive dead letters, plan capacity.

    throttlectl --stage dev show
    throttlectl --stage dev set downstreams/crm rate_per_sec=5 --pin --reason "CRM asked for 5 req/s (OPS-42)"
    throttlectl --stage dev status
    throttlectl --stage dev redrive LegacyConsumerDeadLetterQueue --dry-run
    throttlectl plan --limit-rps 10 --latency-ms 200 --concurrency 5
    throttlectl --stage dev preflight --assembly cdk.out
    throttlectl --stage dev empty-buckets --yes

Exit codes: 0 done; 2 usage error or refusal (the value would be clamped or refused by the
Lambdas, unknown field, no --reason; also `plan --concurrency N` when N calls in flight would
overrun the limit, and `preflight` when the account cannot take the stage); 3 not found (stage
not deployed, unknown tunable or queue); 4 AWS said no (permission denied, throttled,
unreachable) or a redrive left messages behind; 1 a bug (traceback).

`set` requires --reason for a write (not for --dry-run): in an incident review the value history
says what changed and SSM says who, but only the writer knows why, and only at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from throttling.core import planning
from throttling.core.names import STAGE_NAME_PATTERN
from throttling.core.tunables import DEFAULT_DISCOVERY_SEED_FRACTION, InvalidTunables, discovery_fields
from throttlectl import cleanup, preflight
from throttlectl.discovery import Deployment, discover
from throttlectl.exceptions import EXIT_OK, AwsFailure, CliError, NotFound, Refused
from throttlectl.parameters import (
    Audit,
    StoredTunable,
    history,
    key_of,
    principal_of,
    read_tunable,
    read_tunables,
    who_changed,
    write_tunable,
)
from throttlectl.redrive import RedriveResult, plan_redrive, redrive_copy, redrive_move_task
from throttlectl.schema import DOWNSTREAM_LIMITS, document_of, diff, kind_of, parse_assignments
from throttlectl.status import DEFAULT_TOP_TENANTS, collect_status, queue_rows

__all__ = ["build_parser", "main", "package_version"]

# The distribution pyproject.toml names: `--version` reports what is installed, not a copy of the number.
DISTRIBUTION = "throttling-reference"
STAGE_ENV = "THROTTLING_STAGE"
ENDPOINT_ENV = "AWS_ENDPOINT_URL"
AUDIT_LOG_ENV = "THROTTLECTL_AUDIT_LOG"
# Where the region comes from after --region, first match wins: AWS_REGION as the AWS SDKs' shared
# settings (and Lambda, CodeBuild, CloudShell) name it, then the AWS CLI's AWS_DEFAULT_REGION, the only
# one boto3 reads itself; with neither, the profile's region.
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
_ACCESS_DENIED = {
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
    "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
}
_NOT_FOUND = {
    "ParameterNotFound", "ResourceNotFoundException", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
}

ClientFactory = Callable[[str], Any]


class Aws:
    """Lazily built, cached boto3 clients for one account/region/endpoint; `client_factory` replaces them in tests."""

    def __init__(self, *, region: str | None, profile: str | None, endpoint_url: str | None,
                 client_factory: ClientFactory | None = None) -> None:
        self._region = region
        self._profile = profile
        self._endpoint_url = endpoint_url
        self._factory = client_factory
        self._clients: dict[str, Any] = {}
        self._session: Any = None

    @property
    def endpoint_url(self) -> str | None:
        return self._endpoint_url

    def in_region(self, region: str | None) -> Aws:
        """The same account and endpoint in `region` (this one if None)."""
        if region is None or region == self._region:
            return self
        return Aws(region=region, profile=self._profile, endpoint_url=self._endpoint_url, client_factory=self._factory)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._factory(service) if self._factory else self._build(service)
        return self._clients[service]

    def _build(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        if self._session is None:  # one session: each one loads botocore's endpoint data anew
            self._session = boto3.Session(profile_name=self._profile, region_name=self._region)
        config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
        return self._session.client(service, endpoint_url=self._endpoint_url, config=config)


# -- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="throttlectl",
        description="See and tune the throttling limits of a stage (SSM tunables, limit tables, queues).",
        epilog="exit codes: 0 ok, 2 usage error or refusal, 3 not found, 4 AWS error (permission, network)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    _connection_options(parser, argparse.SUPPRESS, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _connection_options(sub, argparse.SUPPRESS, top=False)
        return sub

    show = command("show", "every tunable of the stage: value, seed, bounds, who changed it last, pinned")
    show.add_argument("name", nargs="?", help="only this tunable (e.g. downstreams/crm)")

    set_ = command("set", "change fields of one tunable, validated by the Lambdas' own parsers")
    set_.add_argument("name", help="the tunable, e.g. downstreams/crm or /throttling/dev/breakers/crm")
    set_.add_argument("assignments", nargs="*", metavar="FIELD=VALUE",
                      help="fields to change; VALUE is JSON (5, 0.5) or a plain word (manual)")
    pin = set_.add_mutually_exclusive_group()
    pin.add_argument("--pin", action="store_true", help='set "mode": "manual": the controller leaves the values alone')
    pin.add_argument("--unpin", action="store_true", help='set "mode": "auto": the controller may tune again')
    set_.add_argument("--reset", action="store_true", help="start from the seeded default instead of the stored value")
    set_.add_argument("--reason", help="why (required to write; recorded with who and when in the audit trail)")
    set_.add_argument("--dry-run", action="store_true", help="validate and print the change; write nothing")
    set_.add_argument("--audit-log",
                      help=f"also append the audit line (with old and new values) to this file (env {AUDIT_LOG_ENV})")

    hist = command("history", "every stored version of one tunable, with who changed it and why")
    hist.add_argument("name")

    status = command("status", "breakers, limiter levels, tenants' shares and backlogs, semaphore leases, queue backlogs"
                     " and DLQs, Map concurrency")
    status.add_argument("--top-tenants", type=_positive_int, default=DEFAULT_TOP_TENANTS, metavar="N",
                        help=f"list the N tenants most backed up per downstream (default {DEFAULT_TOP_TENANTS})")

    redrive = command("redrive", "move a dead-letter queue's messages back to their source queue")
    redrive.add_argument("queue", help="the dead-letter queue or the queue it serves (label, name, URL or ARN; see status)")
    redrive.add_argument("--to", help="the queue to move them to (default: the one queue dead-lettering into QUEUE)")
    redrive.add_argument("--dry-run", action="store_true", help="count only; move nothing")
    redrive.add_argument("--max", type=int, dest="max_messages", help="move at most this many (copy method)")
    redrive.add_argument("--method", choices=("auto", "move-task", "copy"), default="auto",
                         help="move-task: SQS StartMessageMoveTask; copy: receive/send/delete in batches; "
                              "auto: copy with --endpoint-url (emulators lack move tasks), else move-task")
    redrive.add_argument("--no-wait", action="store_true", help="move-task: start it and return its handle")

    before_deploy = command("preflight",
                            "before a deploy: can this account take the stage as synthesized? (what to do if not)")
    before_deploy.add_argument("--assembly", default="cdk.out", help="the synthesized cloud assembly (default cdk.out)")
    before_deploy.add_argument("--apply", action="store_true",
                               help="turn on the account settings the stage asks for (Parameter Store's higher"
                                    " throughput, which is billed); without it a missing one is refused")

    empty = command("empty-buckets", "before cdk destroy: delete every object version of the stage's buckets"
                                      " (a stage whose removal policy is destroy only)")
    empty.add_argument("--yes", action="store_true", help="do not ask (scripts); without it, type the stage to confirm")

    plan = command("plan", "Little's-law capacity plan for one downstream (no AWS calls)")
    rate = plan.add_mutually_exclusive_group(required=True)
    rate.add_argument("--limit-rps", type=float, help="the downstream's contractual limit, req/s")
    rate.add_argument("--ceiling-rps", type=float,
                      help="for a downstream whose limit is unknown: a rate never to pass, req/s; planned from as a"
                           " limit would be, and the limiter's inner loop discovers the real limit below it")
    plan.add_argument("--seed-fraction", type=float,
                      help=f"with --ceiling-rps: where an unused bucket starts, a share of the planned rate"
                           f" (default {DEFAULT_DISCOVERY_SEED_FRACTION})")
    plan.add_argument("--floor-fraction", type=float, help="with --ceiling-rps: the lowest a 429 may cut the rate to,"
                                                            " a share of the planned rate (default half the seed)")
    plan.add_argument("--latency-ms", type=float, required=True, help="expected latency of one call, ms")
    plan.add_argument("--burst", type=int, help="the downstream's burst allowance (default: one second's worth)")
    plan.add_argument("--headroom", type=float, default=planning.DEFAULT_HEADROOM,
                      help=f"fraction of the limit left unused (default {planning.DEFAULT_HEADROOM}; our burst is half the downstream's)")
    plan.add_argument("--concurrency", type=int, help="check what this many calls in flight would offer")
    plan.add_argument("--ride-out-sec", type=float, default=60.0, help="outage retries should ride out (default 60)")
    plan.add_argument("--max-retry-delay-sec", type=int, default=30, help="cap of one retry wait (default 30)")
    return parser


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's `version`, as pip recorded it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return f"unknown ({DISTRIBUTION} is not installed: run `pip install -e .` in the repository)"


def _connection_options(parser: argparse.ArgumentParser, default: Any, *, top: bool) -> None:
    # Accepted before and after the command; the sub-parsers' SUPPRESS default keeps a value given
    # before the command from being reset by the sub-parser.
    group = parser.add_argument_group("connection") if top else parser.add_argument_group("connection (also before COMMAND)")
    group.add_argument("--stage", default=default,
                       help=f"the stage, as cdk.json's stages.<name> calls it (or env {STAGE_ENV}); required except for plan")
    group.add_argument("--region", default=default,
                       help=f"AWS region (default: env {' or '.join(REGION_ENVS)}, in that order, else the profile's)")
    group.add_argument("--profile", default=default, help="AWS named profile for a real account")
    group.add_argument("--endpoint-url", default=default, help=f"the local emulator's URL (or env {ENDPOINT_ENV})")
    group.add_argument("--json", action="store_true", default=default, help="machine-readable output on stdout")


# -- entry point ---------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    client_factory: ClientFactory | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.time,
    environ: dict[str, str] | None = None,
) -> int:
    """Run one command; returns the exit code (see the module docstring) instead of exiting."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    env = os.environ if environ is None else environ
    parser = build_parser()
    try:
        with _redirect(out, err):
            args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    ctx = _Context(args, out, err, clock, env, client_factory)
    try:
        return _COMMANDS[args.command](ctx)
    except CliError as error:
        out.flush()  # what was printed comes before the error, also when stdout is a pipe
        print(f"throttlectl: {error}", file=err)
        return error.exit_code
    except BrokenPipeError:
        # `throttlectl show | head`: the reader had enough. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again (the recipe in Python's signal docs).
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as error:  # noqa: BLE001 - AWS errors become exit 4 (or 3); anything else is a bug
        translated = _translate_aws_error(error)
        if translated is None:
            raise
        print(f"throttlectl: {translated}", file=err)
        return translated.exit_code


class _Context:
    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO, clock: Callable[[], float],
                 env: Any, client_factory: ClientFactory | None) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.clock = clock
        self.env = env
        self.json = bool(getattr(args, "json", False))
        self.stage: str | None = getattr(args, "stage", None) or env.get(STAGE_ENV) or None
        self.aws = Aws(
            region=getattr(args, "region", None) or next((env[name] for name in REGION_ENVS if env.get(name)), None),
            profile=getattr(args, "profile", None),
            endpoint_url=getattr(args, "endpoint_url", None) or env.get(ENDPOINT_ENV) or None,
            client_factory=client_factory,
        )
        self._deployment: Deployment | None = None

    def required_stage(self) -> str:
        """The stage the command acts on; any name cdk.json's stages may hold (whether it is deployed is AWS's to say)."""
        if self.stage is None:
            raise Refused(f"--stage is required (a stage of cdk.json, e.g. dev), or set {STAGE_ENV}")
        if not re.fullmatch(STAGE_NAME_PATTERN, self.stage):
            source = "--stage" if getattr(self.args, "stage", None) else STAGE_ENV
            raise Refused(f"stage names are lower-case letters and digits, starting with a letter, at most 20 (as"
                          f" cdk.json's stages), got {self.stage!r} (from {source})")
        return self.stage

    def deployment(self) -> Deployment:
        if self._deployment is None:
            stage = self.required_stage()  # before any client: a bad stage is refused even without a region
            self._deployment = discover(self.aws.client("cloudformation"), stage)
        return self._deployment

    def emit(self, result: Any, text: str) -> None:
        print(json.dumps(result, indent=2, default=str) if self.json else text, file=self.out)

    def note(self, message: str) -> None:
        print(message, file=self.err)


# -- commands ------------------------------------------------------------------------------------


def _show(ctx: _Context) -> int:
    deployment = ctx.deployment()
    tunables = read_tunables(ctx.aws.client("ssm"), deployment)
    missing = sorted(key_of(deployment, name) for name in deployment.seeds if key_of(deployment, name) not in tunables
                     and name.startswith(deployment.prefix + "/"))
    if ctx.args.name:
        key = key_of(deployment, ctx.args.name)
        if key not in tunables:
            raise NotFound(f"no tunable {key!r} in stage {deployment.stage!r}; known: {', '.join(sorted(tunables))}")
        tunables = {key: tunables[key]}
        missing = []
    entries = [_describe_tunable(deployment, stored) for stored in tunables.values()]
    result = {"stage": deployment.stage, "prefix": deployment.prefix, "tunables": entries, "missing": missing}
    blocks = [f"{deployment.prefix}/  (stage {deployment.stage}, {len(entries)} tunable{'s' if len(entries) != 1 else ''};"
              f" (x) = absent, the Lambdas use x)"]
    for entry in entries:
        blocks.append(_show_block(entry))
    for key in missing:
        blocks.append(f"{key}: seeded by the stack but missing from Parameter Store")
    ctx.emit(result, "\n\n".join(blocks))
    return EXIT_OK


def _describe_tunable(deployment: Deployment, stored: StoredTunable) -> dict[str, Any]:
    ceiling, ceiling_burst = deployment.ceiling_for(stored.key), deployment.burst_ceiling_for(stored.key)
    current = document_of(stored.value)
    seed = document_of(deployment.seeds.get(stored.name))
    entry: dict[str, Any] = {
        "key": stored.key,
        "name": stored.name,
        "version": stored.version,
        "value": current if current is not None else stored.value,
        "seed": seed,
        "bounds": {},
        "defaults": {},
        "changed_by": who_changed(stored, deployment),
        "changed_at": _iso(stored.last_modified),
        "reason": stored.audit.reason if stored.audit else None,
        "pinned": bool(current and current.get("mode") == "manual"),
        "lambdas_see": "as stored",
    }
    try:
        kind = kind_of(stored.key)
    except Refused:
        entry["lambdas_see"] = "no schema (not a throttling tunable)"
        return entry
    entry["bounds"] = kind.bounds(ceiling, ceiling_burst)
    entry["defaults"] = kind.defaults
    try:
        _, clamped = kind.in_force(stored.value, ceiling, ceiling_burst)
    except InvalidTunables as error:
        entry["lambdas_see"] = f"refused ({error}); they keep their last good value"
    else:
        if clamped:
            entry["lambdas_see"] = f"clamped: {', '.join(clamped)}"
    return entry


def _show_block(entry: dict[str, Any]) -> str:
    head = [f"{entry['key']}  v{entry['version']}"]
    if entry["pinned"]:
        head.append("pinned (manual)")
    changed = f"changed {entry['changed_at']} by {entry['changed_by']}"
    if entry["reason"]:
        changed += f': "{entry["reason"]}"'
    head.append(changed)
    lines = [" | ".join(head)]
    if entry["lambdas_see"] != "as stored":
        lines.append(f"  ! the Lambdas see this value as: {entry['lambdas_see']}")
    value, seed = entry["value"], entry["seed"] or {}
    if not isinstance(value, dict):
        lines.append(f"  stored value is not a JSON object: {value!r}")
        value = {}
    fields = list(entry["bounds"]) or sorted(set(value) | set(seed))
    fields += sorted(set(value) - set(fields))
    defaults = entry["defaults"]

    def shown(document: dict[str, Any], name: str) -> str:
        if name not in document and name in defaults:
            return f"({_v(defaults[name])})"  # absent: the Lambdas use the default
        return _v(document.get(name))

    rows = [(name, shown(value, name), shown(seed, name), entry["bounds"].get(name, "")) for name in fields]
    lines.append(_indent(_table(("field", "value", "seed", "bounds"), rows)))
    return "\n".join(lines)


def _set(ctx: _Context) -> int:
    args = ctx.args
    deployment = ctx.deployment()
    ssm = ctx.aws.client("ssm")
    key = key_of(deployment, args.name)
    stored = read_tunable(ssm, deployment, key)
    kind = kind_of(key)
    assignments = parse_assignments(args.assignments)
    if (args.pin or args.unpin) and not kind.has_mode:
        raise Refused(f"{key} has no mode to pin: only downstream limits are tuned by the controller")
    if args.pin:
        assignments["mode"] = "manual"
    if args.unpin:
        assignments["mode"] = "auto"
    if not assignments and not args.reset:
        raise Refused(f"nothing to change: give FIELD=VALUE, --pin, --unpin or --reset (fields: {', '.join(kind.fields)})")

    current = document_of(stored.value)
    hint = ""
    if args.reset:
        base = document_of(deployment.seeds.get(stored.name))
        if base is None:
            raise NotFound(f"{key} has no seed in the {deployment.stage} stacks' templates to reset to")
    elif current is None:
        base = {}
        hint = f" (the stored value {stored.value[:80]!r} is not a JSON object: give every field, or --reset)"
    else:
        base = current
    try:
        new = kind.validate(key, {**base, **assignments}, deployment.ceiling_for(key), deployment.burst_ceiling_for(key))
    except Refused as refusal:
        raise Refused(f"refused: {refusal}{hint}") from None
    changes = diff(current, new)
    old_value = current if current is not None else stored.value
    result: dict[str, Any] = {
        "key": key, "name": stored.name, "from_version": stored.version, "old": old_value, "new": new,
        "changes": [asdict(c) for c in changes], "dry_run": bool(args.dry_run), "written": False,
    }
    diff_text = _table(("field", "old", "new"), [(c.field, _v(c.old), _v(c.new)) for c in changes])
    if not changes:
        ctx.emit(result, f"{key}: no change (version {stored.version} already holds these values); nothing written")
        return EXIT_OK
    if args.dry_run:
        ctx.emit(result, f"{key}: dry run, version {stored.version} would become:\n{_indent(diff_text)}\nnothing written")
        return EXIT_OK
    if not args.reason or not args.reason.strip():
        raise Refused(
            "--reason is required to write: it goes into the audit trail with who and when "
            "(e.g. --reason \"CRM asked for 5 req/s, OPS-123\"); --dry-run needs none"
        )

    caller = ctx.aws.client("sts").get_caller_identity()["Arn"]
    audit = Audit(by=principal_of(caller), at=_iso(datetime.fromtimestamp(ctx.clock(), tz=timezone.utc)) or "",
                  reason=args.reason.strip(), from_version=stored.version)
    version = write_tunable(ssm, deployment, key, json.dumps(new, sort_keys=True), audit)
    result.update(written=True, to_version=version, caller=caller, audit=asdict(audit))
    warnings = []
    if version != stored.version + 1:
        warnings.append(
            f"someone else wrote {key} meanwhile (version {stored.version} -> {version}); "
            f"check `throttlectl history {key}`"
        )
    if kind.has_mode and new.get("mode") == "auto" and set(assignments) - {"mode"}:
        warnings.append("mode is auto: the controller may tune these values again; add --pin to keep them")
    result["warnings"] = warnings
    audit_log = args.audit_log or ctx.env.get(AUDIT_LOG_ENV)
    if audit_log:
        line = {"stage": deployment.stage, **result}
        with open(audit_log, "a", encoding="utf-8") as log:
            log.write(json.dumps(line, sort_keys=True, default=str) + "\n")
    text = (f"{key}: version {stored.version} -> {version}\n{_indent(diff_text)}\n"
            f"audit: {audit.at} by {caller}: \"{audit.reason}\"")
    ctx.emit(result, "\n".join([text, *(f"warning: {w}" for w in warnings)]))
    return EXIT_OK


def _history(ctx: _Context) -> int:
    deployment = ctx.deployment()
    key = key_of(deployment, ctx.args.name)
    versions = history(ctx.aws.client("ssm"), deployment, key)
    entries = [{
        "version": v.version, "at": _iso(v.last_modified), "by": who_changed(v, deployment),
        "reason": v.audit.reason if v.audit else None, "value": document_of(v.value) or v.value,
    } for v in versions]
    rows = [(str(e["version"]), e["at"] or "", e["by"], e["reason"] or "", json.dumps(e["value"], sort_keys=True)
             if isinstance(e["value"], dict) else e["value"]) for e in entries]
    ctx.emit({"key": key, "versions": entries}, f"{key}\n" + _table(("version", "at", "by", "reason", "value"), rows))
    return EXIT_OK


def _status(ctx: _Context) -> int:
    deployment = ctx.deployment()
    tunables = read_tunables(ctx.aws.client("ssm"), deployment)
    status = collect_status(ctx.aws.client("dynamodb"), ctx.aws.client("sqs"), deployment, tunables, ctx.clock(),
                            top_tenants=ctx.args.top_tenants)
    sections = [f"stage {status.stage} at {status.at_utc}"]
    sections.append("circuit breakers\n" + _indent(_table(
        ("breaker", "status", "open until", "window calls/failures/slow", "probe", "reason"),
        [(b.name, b.status, b.open_until_utc or "", f"{b.calls}/{b.failures}/{b.slow_calls}", b.probe_owner or "",
          b.reason) for b in status.breakers])))
    sections.append("rate limiters (tokens available now)\n" + _indent(_table(
        ("bucket", "tokens", "of burst", "rate/s", "shards", "full in"),
        [(r.bucket, _v(r.tokens_available) if r.tokens_available is not None else "?", _v(r.burst), _v(r.rate_per_sec),
          str(r.shards), f"{r.full_in_sec:g} s") for r in status.limiters])))
    sections.append("tenants' shares in force (tunables: share_<tenant>, default_tenant_share, borrow_depth, reserve_*)\n"
                    + _indent(_table(
                        ("downstream", "named shares", "default", "borrow depth", "reserves", "tenants active"),
                        [(t.downstream, ", ".join(f"{k} {v:g}" for k, v in sorted(t.shares.items())) or "-",
                          f"{t.default_share:g}", f"{t.borrow_depth:g}",
                          ", ".join(f"{k} {v:g}" for k, v in t.reserves.items() if v),
                          str(t.tenants_seen) + (f" ({t.tenants_left_out} not listed)" if t.tenants_left_out else ""))
                         for t in status.tenant_shares])))
    sections.append(f"tenants now (the {ctx.args.top_tenants} most backed up per downstream; a tenant the limiter"
                    " holds no state for is idle)\n" + _indent(_table(
                        ("downstream", "tenant", "share", "backed up by", "state"),
                        [(t.downstream, t.tenant, f"{t.share:g}", f"{t.backlog_sec:g} s", t.state)
                         for t in status.tenants]) or "(no tenant has taken a token lately)"))
    sections.append("semaphores\n" + _indent(_table(
        ("semaphore", "leases held", "live", "expired (not yet reclaimed)"),
        [(s.name, str(s.lease_count), str(s.live), str(s.expired)) for s in status.semaphores]) or "(no leases)"))
    sections.append("queues\n" + _indent(_table(
        ("queue", "kind", "visible", "in flight", "delayed", "dead letters go to / come from"),
        [(q.label, q.role, str(q.visible), str(q.in_flight), str(q.delayed),
          q.dead_letter_queue or ", ".join(q.sources)) for q in status.queues])))
    sections.append("Map concurrency in force (max_concurrency)\n" + _indent(_table(
        ("downstream", "max_concurrency", "note"),
        [(c.downstream, _v(c.max_concurrency), c.note) for c in status.concurrency])))
    ctx.emit(status.to_dict(), "\n\n".join(sections))
    return EXIT_OK


def _redrive(ctx: _Context) -> int:
    args = ctx.args
    deployment = ctx.deployment()
    sqs = ctx.aws.client("sqs")
    plan = plan_redrive(queue_rows(sqs, deployment.queues), args.queue, args.to)
    if args.max_messages is not None and args.max_messages < 1:
        raise Refused(f"--max must be >= 1, got {args.max_messages}")
    summary = {"dead_letter_queue": plan.dead_letter_queue.name, "target": plan.target.name,
               "approximate_count": plan.approximate_count, "in_flight": plan.dead_letter_queue.in_flight}
    if args.dry_run:
        extra = f" (+{plan.dead_letter_queue.in_flight} in flight)" if plan.dead_letter_queue.in_flight else ""
        ctx.emit({**summary, "dry_run": True},
                 f"dry run: {plan.approximate_count} messages{extra} would move from {plan.dead_letter_queue.label} "
                 f"to {plan.target.label}; nothing moved")
        return EXIT_OK
    method = args.method
    if method == "auto":
        method = "copy" if ctx.aws.endpoint_url else "move-task"

    def progress(moved: int, failed: int, total: int) -> None:
        ctx.note(f"redrive: {moved}/{total} moved" + (f", {failed} failed" if failed else ""))

    result: RedriveResult
    if method == "copy":
        result = redrive_copy(sqs, plan, max_messages=args.max_messages, progress=progress)
    else:
        result = redrive_move_task(sqs, plan, progress=progress, wait=not args.no_wait)
    output = {**summary, "dry_run": False, **asdict(result)}
    if result.task_handle and args.no_wait:
        text = f"started message move task {result.task_handle} from {plan.dead_letter_queue.label} to {plan.target.label}"
    else:
        text = f"moved {result.moved} messages from {plan.dead_letter_queue.label} to {plan.target.label} ({result.method})"
    ctx.emit(output, text)
    if result.failed:
        raise AwsFailure(f"{result.failed} messages could not be sent to {plan.target.label}; they stay in "
                         f"{plan.dead_letter_queue.label}: run redrive again")
    return EXIT_OK


def _plan(ctx: _Context) -> int:
    args = ctx.args
    unknown = args.ceiling_rps is not None
    if not unknown and (args.seed_fraction is not None or args.floor_fraction is not None):
        raise Refused("--seed-fraction and --floor-fraction apply only with --ceiling-rps (a limit nobody told you):"
                      " a known limit's bucket starts at its rate; drop them, or give --ceiling-rps")
    try:
        result = planning.plan_capacity(
            args.ceiling_rps if unknown else args.limit_rps, args.latency_ms, burst=args.burst, headroom=args.headroom,
            check_concurrency=args.concurrency, ride_out_sec=args.ride_out_sec,
            max_retry_delay_sec=args.max_retry_delay_sec,
        )
    except ValueError as error:
        raise Refused(str(error)) from None
    document, discovery = result.tunables_document(), []
    if unknown:
        # As a stage seeds it (`DownstreamConfig.discovery_tunables`), checked as `set` checks a document.
        document.update(discovery_fields(args.seed_fraction, args.floor_fraction))
        DOWNSTREAM_LIMITS.validate("the planned document", document, args.ceiling_rps)
        seed, floor = (document[name] * result.limiter_rate_per_sec for name in ("seed_fraction", "floor_fraction"))
        discovery = ["", f"the limit is unknown: planned from the {args.ceiling_rps:g} req/s ceiling as from a contract;"
                         f" the inner loop starts an unused bucket at {seed:.3g} req/s (seed_fraction"
                         f" {document['seed_fraction']:g}), climbs while calls are answered, cuts on each 429 (never"
                         f" below {floor:.3g} req/s, floor_fraction {document['floor_fraction']:g}) and never passes"
                         f" {_v(result.limiter_rate_per_sec)} req/s"]
    lines = ["arithmetic:", *(f"  {step}" for step in result.steps), *discovery, "", "settings:",
             _indent(_table(("setting", "value"), [
                 ("Map MaxConcurrency (max_concurrency)", str(result.map_concurrency)),
                 ("concurrency alone, no limiter", str(result.littles_law_concurrency)),
                 ("SQS consumer MaximumConcurrency", str(result.consumer_max_concurrency)),
                 ("limiter rate_per_sec", _v(result.limiter_rate_per_sec)),
                 ("limiter burst", str(result.limiter_burst)),
                 ("Retry", json.dumps(result.retry.as_asl())),
                 ("SSM document", json.dumps(document, sort_keys=True)),
             ]))]
    lines += [f"warning: {w}" for w in result.warnings]
    ctx.emit({**result.to_dict(), "limit_known": not unknown, "tunables_document": document}, "\n".join(lines))
    check = result.check
    # Exit 2 fails a script's check; the refusal comes last, where a reader of `make plan` looks. Not
    # for the plan's own concurrency: where even 1 call in flight offers too much, the plan's warning
    # says the shared limiter holds the rate, and no lower concurrency exists to suggest.
    if check is not None and check.exceeds_limit and check.concurrency > result.map_concurrency:
        raise Refused(
            f"refused: {check.concurrency} calls in flight of {args.latency_ms:g} ms offer {check.offered_rps:g} req/s,"
            f" {round(check.times_the_limit, 2):g}x the {check.limit_rps:g} req/s limit: use a max_concurrency of at"
            f" most {result.map_concurrency} (the plan above: as many as spend every token of the shared limiter)")
    return EXIT_OK


def _preflight(ctx: _Context) -> int:
    stage = ctx.required_stage()
    assembly = preflight.read_stage_assembly(Path(ctx.args.assembly), stage)
    asked = getattr(ctx.args, "region", None)
    if asked and assembly.region and asked != assembly.region:
        raise Refused(f"stage {stage} deploys to {assembly.region} (its assembly says so), not {asked}: checking"
                      f" {asked} would say nothing about it; drop --region or pass --region {assembly.region}")
    region = asked or assembly.region
    aws = ctx.aws.in_region(region)
    checks = [
        preflight.check_concurrency(assembly, lambda_client=aws.client("lambda"),
                                    cloudformation=aws.client("cloudformation"), region=region),
        preflight.check_powertools_parameters(assembly, ssm=aws.client("ssm"), region=region),
        preflight.check_parameter_store_throughput(assembly, ssm=aws.client("ssm"), apply=ctx.args.apply,
                                                   region=region),
    ]
    lines = [f"preflight of stage {stage} ({region or 'the default region'}, from {ctx.args.assembly})"]
    lines += [f"  {'ok' if check.ok else 'REFUSED':8} {check.name}: {check.summary}" for check in checks]
    ctx.emit({"stage": stage, "region": region, "checks": [c.to_dict() for c in checks]}, "\n".join(lines))
    failed = preflight.refusal(checks)
    if failed is not None:
        raise failed
    return EXIT_OK


def _empty_buckets(ctx: _Context) -> int:
    stage = ctx.required_stage()
    buckets = cleanup.stage_buckets(ctx.aws.client("cloudformation"), stage)
    cleanup.refuse_kept_data(stage, buckets)
    if not ctx.args.yes:
        names = ", ".join(bucket.name for bucket in buckets) or "none"
        if not sys.stdin.isatty():
            raise Refused(f"this deletes every object version in {names}: pass --yes to confirm without a terminal")
        print(f"this deletes every object version and delete marker in: {names}", file=ctx.err)
        if input(f"type the stage name ({stage}) to go on: ").strip() != stage:
            raise Refused("not confirmed; nothing was deleted")
    s3 = ctx.aws.client("s3")
    emptied = [cleanup.empty_bucket(s3, bucket.name) for bucket in buckets]
    lines = [f"emptied {len(emptied)} bucket{'s' if len(emptied) != 1 else ''} of stage {stage}:"]
    lines += [f"  {e.name}: {e.versions} object versions, {e.delete_markers} delete markers" for e in emptied]
    ctx.emit({"stage": stage, "emptied": [asdict(e) for e in emptied]}, "\n".join(lines))
    return EXIT_OK


_COMMANDS: dict[str, Callable[[_Context], int]] = {
    "show": _show, "set": _set, "history": _history, "status": _status, "redrive": _redrive, "plan": _plan,
    "preflight": _preflight, "empty-buckets": _empty_buckets,
}


# -- helpers -------------------------------------------------------------------------------------


def _translate_aws_error(error: Exception) -> CliError | None:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ProfileNotFound,
    )

    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        operation = getattr(error, "operation_name", "the request")
        message = error.response.get("Error", {}).get("Message", "")
        if code in _ACCESS_DENIED:
            return AwsFailure(
                f"permission denied: {operation} ({code}): {message}; the operator role needs read access to "
                f"CloudFormation, SSM /throttling/*, the limit tables and the queues, and ssm:PutParameter to set"
            )
        if code in _NOT_FOUND:
            return NotFound(f"{operation}: {code}: {message}")
        return AwsFailure(f"AWS error in {operation} ({code}): {message}")
    if isinstance(error, NoRegionError):
        return Refused("no AWS region: pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION), or use a profile"
                       " with a region")
    if isinstance(error, ProfileNotFound):
        return Refused(str(error))
    if isinstance(error, NoCredentialsError):
        return AwsFailure("no AWS credentials: pass --profile or export AWS_PROFILE (for the emulator, "
                          "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing)")
    if isinstance(error, EndpointConnectionError):
        return AwsFailure(f"cannot reach AWS: {error}")
    if isinstance(error, BotoCoreError):
        return AwsFailure(f"AWS client error: {error}")
    return None


class _redirect:
    """argparse prints usage and errors to sys.stdout/sys.stderr; send them to the given streams."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._streams = (out, err)

    def __enter__(self) -> None:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self._streams

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self._saved


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else line for line in text.splitlines())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _v(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) else f"{value:.1f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
