"""Running a traced pipeline: settings, planning, environments (as specs), the cache and code
fingerprints, run state, the step runner, retries, hooks and results. Adapters (runners, the
database, Prefect) plug in through the runner contract, hooks and host-step implementations."""
