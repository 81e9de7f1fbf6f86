"""Running a job: remote first (Modal SDK or the HTTP job API), retries, circuit breaker,
fallback to local, the invocation ledger and cost.

Submodules are imported where they are used; this package imports nothing, so that
``import canvascast_cli.dispatch.state`` stays cheap for commands that only read state.
"""
