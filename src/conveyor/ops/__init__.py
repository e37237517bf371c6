"""What users do: `run`, `backfill`, schedules and discovery of the project's pipelines; wires
the engine to a runner, the database layer and a back end."""
