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
  bench [ARGS]  Benchmark the job against the raw model and the alternatives
                (python -m benchmarks.run ARGS; --rows 1000000 is the documented run).
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

# A benchmark-only virtualenv that sees the project's pinned stack and adds one tool on top
# (Ray, tf.Transform), so the tool never changes the stack. If it cannot be installed here,
# the reason is kept in VENV/UNAVAILABLE and the benchmark reports it instead of a number.
side_venv() {
  local dir=$1 requirements=$2 stamp want
  stamp="$dir/.installed"
  want=$(cat "$requirements" requirements.txt | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$PYTHON" -m venv "$dir"
  "$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
    > "$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_project_stack.pth"
  if "$dir/bin/python" -m pip install --quiet -r "$requirements" > "$dir/install.log" 2>&1; then
    echo "$want" > "$stamp"
  else
    local why
    why=$(grep -E '^ERROR' "$dir/install.log" | tail -1 | cut -c1-200)
    rm -rf "${dir:?}/bin"
    echo "pip could not install $(grep -v '^#' "$requirements" | tr '\n' ' ')here: ${why:-see $dir/install.log}" \
      > "$dir/UNAVAILABLE"
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
  bench)
    install
    quiet_tf
    ensure_bundle
    side_venv build/bench/ray-venv benchmarks/requirements-ray.txt
    side_venv build/bench/tft-venv benchmarks/requirements-tft.txt
    "$PYTHON" -m benchmarks.run "$@"
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
