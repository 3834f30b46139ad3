"""The batch-inference job: `python -m pipelines.run` and what it is made of."""

import os

# The folder that holds our packages: the checkout, or where the project is installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
