"""`make emulator`: the app deployed into a long-running emulator you can point tools at, until interrupted.

    python -m localcloud.serve [--port 5000] [--stage dev] [--assembly cdk.out]

Starts a local simulator per downstream, synthesizes the app against them (or deploys an assembly
already synthesized, whose downstream URLs are used as they are), deploys it into the emulator, and
prints the endpoint, the variables to export, and each stack's outputs. `throttlectl`, the AWS CLI
and boto3 then work against it as against an account: every deployed handler runs on each invoke,
event-source mappings poll their queues, and state machines execute. Ctrl-C (or SIGTERM) stops it
all; its state is gone with it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from localcloud import app_assembly
from localcloud.emulator.cloud import FAKE_CREDENTIALS, LocalCloud
from localcloud.referee.downstream_simulator import PROFILES, DownstreamSimulator

ROOT = app_assembly.ROOT
DEFAULT_PORT = 5000  # moto's own default
READY = "emulator ready"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    work_dir = ROOT / ".emulator"
    with ExitStack() as running:
        if args.assembly is None:
            simulators = {name: running.enter_context(DownstreamSimulator(profile))
                          for name, profile in PROFILES.items()}
            _say(f"synthesizing the {args.stage} stage against {len(simulators)} downstream simulators ...")
            assembly = app_assembly.synthesize({name: sim.base_url for name, sim in simulators.items()},
                                               work_dir / "cdk.out", stage=args.stage)
        else:
            simulators, assembly = {}, args.assembly
        cloud = running.enter_context(LocalCloud(work_dir=work_dir / "localcloud", port=args.port))
        _say(f"deploying {assembly} ...")
        stacks = cloud.deploy(assembly)
        print(f"{READY} at {cloud.endpoint_url} ({len(stacks)} stacks); in another shell:", flush=True)
        print(f"  export AWS_ENDPOINT_URL={cloud.endpoint_url} AWS_DEFAULT_REGION={cloud.region}"
              f" AWS_REGION={cloud.region} THROTTLING_STAGE={args.stage}", flush=True)
        print("  export " + " ".join(f"{name}={value}" for name, value in FAKE_CREDENTIALS.items()), flush=True)
        print("  .venv/bin/throttlectl status    # or: aws stepfunctions list-state-machines", flush=True)
        for name, simulator in simulators.items():
            print(f"  downstream {name}: {simulator.base_url}", flush=True)
        for stack in stacks.values():
            for key, value in sorted(stack.outputs.items()):
                if key.startswith("ExportsOutput"):  # the CDK's cross-stack plumbing, not for people
                    continue
                print(f"  {stack.name}.{key} = {value}", flush=True)
        print(f"  function logs: {cloud.work_dir / 'logs'}; Ctrl-C stops the emulator", flush=True)
        stopped.wait()
        _say("stopping ...")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m localcloud.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the loopback port to serve AWS's APIs on (default {DEFAULT_PORT}; 0: any free one)")
    parser.add_argument("--stage", default="dev", help="the stage to synthesize and deploy (default dev)")
    parser.add_argument("--assembly", type=Path, default=None,
                        help="deploy this synthesized cloud assembly instead of synthesizing one (no simulators are"
                             " started: its downstream URLs are used as they are)")
    return parser


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
