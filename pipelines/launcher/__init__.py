"""What runs on the launcher before and around a run: resolving and checking it once, the live
progress line, `--watch`, `--replay` and `--estimate`."""
