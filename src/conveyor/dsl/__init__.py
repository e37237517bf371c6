"""What users write: `@component`, `@pipeline` and its tracing, placeholders, host steps,
partitions and calendars, artifact references. Builds immutable specs; runs nothing."""
