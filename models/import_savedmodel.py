"""The import command's original name, for SavedModels: see `models.import_model`, which takes every format
and proves any bundle with `--expected`."""

import sys

from models.import_model import describe, fitted_on_data, import_savedmodel, main, prove, smoke_test  # noqa: F401

if __name__ == '__main__':
  sys.exit(main())
