"""What takes the job to Google Cloud: the Dataflow job described offline, the Flex Template
metadata, and the rendered Kubernetes and Cloud Scheduler files."""
