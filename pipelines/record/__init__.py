"""The run's record: the summary, the report, and reading back how a run went (`status`)."""
