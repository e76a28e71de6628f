# The two commands a fresh machine needs: `make demo` and `make test`. Set-up is idempotent: it
# re-runs only when requirements*.txt or package*.json change.
SHELL := /bin/bash
.DEFAULT_GOAL := help
STAGE ?= dev
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
STAMPS := .stamps

# Offline and quiet: no version check, telemetry or notices; jsii's end-of-life banner for Node 20 silenced.
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup setup-deploy demo emulator test synth nag deploy destroy diff clean bench plan

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Two stages in one .venv: what synth and deploy need (requirements.txt), then the tests, emulator and lab on top.
$(STAMPS)/deploy: requirements.txt pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || { echo "setup: creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "setup: installing what synth and deploy need (requirements.txt: the CDK, cdk-nag, boto3, throttlectl) ..."
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(STAMPS)/venv: $(STAMPS)/deploy requirements-lambda.txt requirements-dev.txt
	@echo "setup: installing the Lambda libraries, the emulator, the lab and the tests (requirements-dev.txt:"
	@echo "       about 1 GB and a few minutes the first time; quiet while pip works) ..."
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

$(STAMPS)/npm: package.json package-lock.json
	@mkdir -p $(STAMPS)
	@echo "setup: installing the pinned CDK CLI (npm ci) ..."
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(STAMPS)/venv $(STAMPS)/npm ## create .venv and node_modules (idempotent)

setup-deploy: $(STAMPS)/deploy $(STAMPS)/npm ## only what synth and deploy need: no emulator, lab or test libraries

demo: setup ## synthesize, deploy into the embedded emulator, and drive a smoke scenario through it
	$(PY) -m localcloud.demo

emulator: setup ## the app in an emulator that stays up for throttlectl, the AWS CLI, boto3 (PORT=5000); Ctrl-C stops it
	$(PY) -m localcloud.serve --stage $(STAGE)$(if $(PORT), --port $(PORT))

test: setup ## the whole test suite
	$(PY) -m pytest

synth: setup-deploy ## synthesize every stack of STAGE offline into cdk.out
	$(CDK) synth --quiet -c stage=$(STAGE)

nag: setup-deploy ## synthesize with the cdk-nag AwsSolutions checks
	$(CDK) synth --quiet -c stage=$(STAGE) -c nag=true

deploy: setup-deploy ## cdk deploy STAGE into your AWS account, after a pre-flight of the account (credentials, cdk bootstrap)
	$(CDK) synth --quiet -c stage=$(STAGE) -c nag=true
	$(PY) -m throttlectl --stage $(STAGE) preflight --assembly cdk.out --apply
	$(CDK) deploy --app cdk.out --all --require-approval broadening

destroy: setup-deploy ## empty STAGE's buckets (a destroy stage only; asks first unless YES=1), then cdk destroy its stacks
	$(PY) -m throttlectl --stage $(STAGE) empty-buckets$(if $(YES), --yes)
	$(CDK) destroy --all -c stage=$(STAGE) --force

diff: setup-deploy ## cdk diff STAGE against your AWS account
	$(CDK) diff --all -c stage=$(STAGE)

bench: setup ## the strategy, batching and tenants benchmarks in virtual time, and each stage's fixed cost: bench/results
	$(PY) -m bench.strategies
	$(PY) -m bench.batching
	$(PY) -m bench.tenants
	$(PY) -m bench.fixed_costs
	$(PY) -m bench.workflow_costs

# Not echoed: throttlectl's refusal (a bound, or a concurrency over the limit) is then its output's last line.
plan: $(STAMPS)/deploy ## Little's-law settings: make plan LIMIT_RPS=10 (or CEILING_RPS=50, a limit unknown) LATENCY_MS=200 [CONCURRENCY=5] [BURST=10] [HEADROOM=0.01]
	$(if $(and $(or $(LIMIT_RPS),$(CEILING_RPS)),$(LATENCY_MS)),,$(error give the limit (or a ceiling) and the latency: make plan LIMIT_RPS=10 LATENCY_MS=200))
	@$(PY) -m throttlectl plan $(if $(CEILING_RPS),--ceiling-rps $(CEILING_RPS),--limit-rps $(LIMIT_RPS)) --latency-ms $(LATENCY_MS)$(if $(CONCURRENCY), --concurrency $(CONCURRENCY))$(if $(BURST), --burst $(BURST))$(if $(HEADROOM), --headroom $(HEADROOM))

clean: ## remove what set-up and synth made
	rm -rf $(VENV) node_modules cdk.out $(STAMPS) .pytest_cache .hypothesis .demo .emulator *.egg-info
