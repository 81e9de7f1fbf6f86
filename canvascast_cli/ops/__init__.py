"""The operators' half: deploying the Modal app, its warm pools, and the status report.

Beside ``dispatch`` (it reads the same state file, breakers and ledger), never below it:

    overrides   warm-pool overrides and the operators' event log, in the state file
    fleet       Modal's live side of the pools through the SDK, every call bounded
    windows     [[warm.windows]] -> the min_containers each function should have now
                (pure: the reconciler on Modal and ``canvascast warm schedule`` share it)
    plan        modal.toml -> what a deploy will create, and what its warm pools cost
    deploy      ``app.deploy(...)`` in a child process with a deadline
    report      the status report: breakers, pools, the ledger's metrics, Prometheus

Nothing here imports ``modal`` at module import: the SDK is loaded (or a fake passed)
where a command needs it.
"""
