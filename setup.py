"""Installs the batch-inference packages, so Dataflow workers get them (`--setup_file`)."""

import setuptools

with open('requirements.txt', encoding='utf-8') as f:
  REQUIREMENTS = [line.strip() for line in f if line.strip() and not line.startswith('#')]

setuptools.setup(
    name='beam-batch-inference',
    version='0.1.0',
    description='Batch inference on Apache Beam: files or BigQuery in, predictions and dead letters out.',
    packages=setuptools.find_packages(include=['pipelines*', 'transforms*', 'models*']),
    package_data={'models.penguins': ['example/*.csv']},
    python_requires='>=3.10',
    install_requires=REQUIREMENTS,
)
