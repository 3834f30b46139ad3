"""`python -m pipelines.search`: see `pipelines.search.query`."""

import sys

from pipelines.search.query import main

sys.exit(main())
