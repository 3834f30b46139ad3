#!/usr/bin/env bash
# Every way to run the batch-inference job. `./launch.sh help` lists the verbs.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PYTHON="$VENV/bin/python"
BUNDLE=${BUNDLE:-build/bundles/penguins}
EXAMPLE=models/penguins/example/penguins.csv

usage() {
  cat <<USAGE
Usage: ./launch.sh VERB [ARGS...]

  demo          Create the virtualenv if missing, train the example model if its bundle
                is missing, and predict the bundled example data on the DirectRunner.
  test [ARGS]   Install if needed and run the whole test suite (ARGS go to pytest). The cloud
                tests start local GCS and BigQuery emulators themselves (installed once
                under build/emulators/) and stop them at the end.
  train [ARGS]  Train the example penguin model (python -m models.penguins.train).
  run [ARGS]    Run the job: python -m pipelines.run ARGS (see ./launch.sh run --help).
  help          This text.
USAGE
}

# Creates the virtualenv and installs the pinned stack, once per change of the requirement files.
install() {
  if [ ! -x "$PYTHON" ]; then
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.installed"
  local want
  want=$(cat requirements.txt requirements-dev.txt setup.py | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$PYTHON" -m pip install --quiet --upgrade pip
    "$PYTHON" -m pip install --quiet -r requirements.txt -r requirements-dev.txt
    "$PYTHON" -m pip install --quiet --no-deps -e .
    echo "$want" > "$stamp"
  fi
}

quiet_tf() {
  export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
}

ensure_bundle() {
  if [ ! -f "$BUNDLE/metadata.json" ]; then
    "$PYTHON" -m models.penguins.train --output "$BUNDLE"
  fi
}

verb=${1:-help}
shift || true
case "$verb" in
  demo)
    install
    quiet_tf
    ensure_bundle
    "$PYTHON" -m pipelines.run --input "$EXAMPLE" --model "$BUNDLE" --output build/demo \
      --passthrough_columns species,year "$@"
    ;;
  test)
    install
    quiet_tf
    "$PYTHON" -m pytest "$@"
    ;;
  train)
    install
    quiet_tf
    "$PYTHON" -m models.penguins.train "$@"
    ;;
  run)
    install
    quiet_tf
    "$PYTHON" -m pipelines.run "$@"
    ;;
  help|-h|--help)
    usage
    ;;
  *)
    echo "unknown verb: $verb" >&2
    usage >&2
    exit 2
    ;;
esac
