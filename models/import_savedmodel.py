"""The import command's original name, for SavedModels: see `models.import_model`, which takes every format."""

import sys

from models.import_model import import_savedmodel, main, read_sample, smoke_test  # noqa: F401

if __name__ == '__main__':
  sys.exit(main())
