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
  test [ARGS]   Install if needed and run the whole test suite (ARGS go to pytest).
  train [ARGS]  Train the example penguin model (python -m models.penguins.train).
  run [ARGS]    Run the job: python -m pipelines.run ARGS (see ./launch.sh run --help).
                With --watch it keeps running and predicts each new input file once.
  import [ARGS] Bring your own SavedModel: make a checked bundle of it
                (python -m models.import_savedmodel, see ./launch.sh import --help).
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

# The report test renders a run report in headless Chromium (Debian package `chromium`).
# Installed when missing and we are root; otherwise that test skips and says why.
ensure_browser() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the report rendering test" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      >/dev/null || echo "could not install chromium: the report rendering test will skip" >&2
  else
    echo "chromium not found and not root: the report rendering test will skip" >&2
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
    ensure_browser
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
  import)
    install
    quiet_tf
    "$PYTHON" -m models.import_savedmodel "$@"
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
