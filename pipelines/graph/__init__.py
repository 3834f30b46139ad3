"""The job itself: its plan, the graph `build_pipeline` builds from it, and the final steps that
count, gate and publish inside the job. Nothing here runs the job or imports the launcher."""
