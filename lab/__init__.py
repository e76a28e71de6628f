"""The throttling lab: the project's pure cores run against models of AWS and of a downstream, in virtual time.

See what a setting will do before deploying it. The lab drives the same code the Lambdas run (the
GCRA limiter, the circuit breaker, the jittered backoff, the controller, the planning arithmetic) through a
discrete-event simulation, so results are exact, reproducible from a seed, and an hour of traffic
takes a second or two. `python -m bench.strategies` (`make bench`) compares the strategies of
`lab.strategies` on the scenarios of `lab.scenarios`; `lab.costs` prices the architectures.

Modules: `engine` (clock and events), `workload` (producers), `downstream` (the third party),
`mechanisms` (Map, event-source mapping, Step Functions retries, the caller, the control loop),
`controllers` (ours and the published baselines), `ledger` (what happened), `run` (one run and its
figures), `costs` (AWS list prices per million calls, from `prices.json`).
"""
