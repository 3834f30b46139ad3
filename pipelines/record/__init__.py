"""The run's record: where an attempt's files live and the pointer that publishes one, the summary,
the report, and reading back how a run went."""
