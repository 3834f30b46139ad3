"""`python -m models.importer`: bring your own model (see `models.importer.command`)."""

import sys

from models.importer.command import main

sys.exit(main())
