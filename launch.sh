#!/usr/bin/env bash
# Every way to run the batch-inference job. `./launch.sh help` lists the verbs.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
PYTHON="$VENV/bin/python"
BUNDLE=${BUNDLE:-build/bundles/penguins}
EXAMPLE=models/examples/penguins/example/penguins.csv
DIGITS_BUNDLE=${DIGITS_BUNDLE:-build/bundles/digits}
DIGITS_FILES=${DIGITS_FILES:-build/digits}

usage() {
  cat <<USAGE
Usage: ./launch.sh VERB [ARGS...]

  demo          Create the virtualenv if missing, train the example model if its bundle
                is missing, and predict the bundled example data on the DirectRunner.
  demo-images   The same for images: write scikit-learn's digit scans as PNG files, train a small
                PyTorch CNN on them and import it (once, under build/), and predict the
                held-out files.
  test [ARGS]   Install if needed, with every model framework (pip install -e ".[all]"), and
                run the whole test suite (ARGS go to pytest). The cloud tests start local
                GCS and BigQuery emulators themselves (installed once under
                build/emulators/) and stop them at the end.
  bench [ARGS]  Benchmark the job against the raw model and the alternatives
                (python -m benchmarks.run ARGS; --rows 1000000 is the documented run).
                With --images first: the image job on JPEGs through ResNet-18 and -50
                against a PyTorch DataLoader loop, Beam's recipe and Ray Data
                (python -m benchmarks.images ARGS; --small 50000 --large 2000 at scale).
                With --text first: the text job embedding texts of mixed and uniform lengths
                through a BERT encoder against a plain PyTorch loop, sentence-transformers
                and Ray Data (python -m benchmarks.text ARGS; --rows 100000 at scale).
  train [ARGS]  Train the example penguin model (python -m models.examples.penguins.train).
  run [ARGS]    Run the job: python -m pipelines.run ARGS (see ./launch.sh run --help).
                With --watch it keeps running and predicts each new input file once.
  status RUN_ID --output=OUTPUT
                How a run went, from what it left in OUTPUT (or, for a bq:// output, in
                --summary_location, default gs://\$BUCKET/tmp/runs): its summary, or that it
                failed, or that it has not published yet (python -m pipelines.record.status).
  import [ARGS] Bring your own model (TensorFlow, ONNX, PyTorch, XGBoost, scikit-learn): make a
                checked bundle of it, proven with --expected on rows your own code predicted
                (python -m models.importer, see ./launch.sh import --help).
  help          This text.

 On Google Cloud (settings below; VERB --help for each):
  dataflow      Submit the job to Dataflow with DataflowRunner from this machine.
  image         Build the container image with Cloud Build and push it to \$IMAGE.
  template      Build the Flex Template spec (gs://) from \$IMAGE and the metadata file.
  run-template  Launch a Dataflow job from the Flex Template; flags pass through.
  schedule      Create a Cloud Scheduler job that launches the template on a cron.
  k8s           Print a Kubernetes Job or CronJob that runs the image on GKE.

 Settings come from the environment or a .env file (NAME=VALUE lines; the environment wins),
 with their choices and defaults:
$(python3 deploy/settings.py describe | sed 's/^/  /')
  Credentials: Application Default Credentials only (gcloud auth application-default login); no
  keys in flags, files or the image. DRY_RUN=1 prints each cloud command instead of running it.
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

# The model formats' frameworks (setup.py extras), so the tests run every framework, none skipped.
install_extras() {
  local stamp="$VENV/.installed-extras"
  local want
  want=$(cat setup.py | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$PYTHON" -m pip install --quiet -e ".[all]"
    echo "$want" > "$stamp"
  fi
}

# Real parts the tests start themselves, from Debian's packages: headless Chromium renders a run report,
# a PostgreSQL server (initdb, pg_ctl) takes the database output. Installed when missing and we are
# root; otherwise those tests skip and say why.
# Usage: ensure_debian_package PACKAGE PURPOSE PRESENT_CHECK
ensure_debian_package() {
  local package=$1 purpose=$2 present=$3
  if eval "$present" >/dev/null 2>&1; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $package for $purpose" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package"; } \
      >/dev/null || echo "could not install $package: $purpose will skip" >&2
  else
    echo "$package not found and not root: $purpose will skip" >&2
  fi
}

quiet_tf() {
  export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
}

# Trains the example model once. TensorFlow's start-up lines go to a log file (shown if training
# fails), as the job's do (pipelines/launcher/logs.py), unless ARGS ask for --verbose.
# Usage: ensure_bundle [ARGS...]
ensure_bundle() {
  if [ -f "$BUNDLE/metadata.json" ]; then
    return
  fi
  case " $* " in
    *" --verbose "* | *" --verbose=true "*) "$PYTHON" -m models.examples.penguins.train --output "$BUNDLE"; return ;;
  esac
  local log="$BUNDLE.train.log"
  mkdir -p "$(dirname "$BUNDLE")"
  echo "training the example model once (log: $log)" >&2
  "$PYTHON" -m models.examples.penguins.train --output "$BUNDLE" 2>"$log" || { cat "$log" >&2; return 1; }
}

# Trains the example image model once, as ensure_bundle does the penguins'.
ensure_digits_bundle() {
  if [ -f "$DIGITS_BUNDLE/metadata.json" ]; then
    return
  fi
  local log="$DIGITS_BUNDLE.train.log"
  mkdir -p "$(dirname "$DIGITS_BUNDLE")"
  echo "training the example image model once (log: $log)" >&2
  "$PYTHON" -m models.examples.digits.train --output "$DIGITS_BUNDLE" --files "$DIGITS_FILES" 2>"$log" \
    || { cat "$log" >&2; return 1; }
}

# ---- Google Cloud ------------------------------------------------------------------------------
# The settings, their defaults and checks, and their spellings for each launch path live in
# deploy/settings.py (standard library only, so the cloud verbs need no virtualenv).

# Exports every setting, checked: the environment, then .env, then the defaults. Every later
# python3 deploy/settings.py call (require, the flags, the parameters) reads the environment alone.
load_settings() {
  local resolved line
  resolved=$(python3 deploy/settings.py resolve) || exit $?
  while IFS= read -r line; do export "${line%%=*}=${line#*=}"; done <<< "$resolved"
}

# Fails, with the reason, unless NAME... are set (--dataflow: what a Dataflow launch needs).
require() { python3 deploy/settings.py require "$@"; }

# Runs a command, or prints it (shell-quoted, one line) when DRY_RUN=1.
cloud() {
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

# A cloud verb's --help: its own block of the text below.
verb_usage() {
  awk -v verb="$1" '/^Usage: / { show = ($3 == verb) } show' <<'USAGE'
Usage: ./launch.sh dataflow --input=gs://... --model=gs://... --output=gs://... [FLAGS...]
Submits the job to Dataflow from this machine (python -m pipelines.run --runner=DataflowRunner),
with the settings' project, region, bucket, image, device and workers, and waits for the summary
(add --wait_for_job=false to return once it is submitted). Needs PROJECT and BUCKET; IMAGE for
DEVICE=gpu. Check a job without submitting it:
  python -m deploy.dataflow_job FLAGS... --dataflow_job_file=job.json
Usage: ./launch.sh image
Builds the Dockerfile with Cloud Build and pushes it to IMAGE (an Artifact Registry path such as
REGION-docker.pkg.dev/PROJECT/REPOSITORY/batch-inference:TAG). Needs PROJECT and IMAGE.
Usage: ./launch.sh template
Writes the Flex Template spec to TEMPLATE (default gs://BUCKET/templates/batch-inference.json):
the image IMAGE plus the parameters in deploy/flex-template/metadata.json. Needs PROJECT, BUCKET, IMAGE.
Usage: ./launch.sh run-template --input=gs://... --model=gs://... --output=gs://... [--name=value...]
Launches a Dataflow job from TEMPLATE with the settings' workers and device; every --name=value
becomes a template parameter (our flags, or Beam options such as --max_batch_rows=8192).
Usage: ./launch.sh schedule [--cron='0 2 * * *'] [--name=NAME] --input=gs://... --model=gs://... --output=gs://...
Creates a Cloud Scheduler job (default name batch-inference) that launches the Flex Template on
the cron (SCHEDULE, TIME_ZONE) as SERVICE_ACCOUNT, with the parameters given here. Each run gets
a new run id. Change it later with gcloud scheduler jobs update http, or delete and re-create.
Needs PROJECT, BUCKET, IMAGE, SERVICE_ACCOUNT.
Usage: ./launch.sh k8s job|cronjob --input=gs://... --model=gs://... --output=gs://... [FLAGS...]
Prints deploy/k8s/job.yaml or cronjob.yaml with IMAGE, SERVICE_ACCOUNT, GPU_TYPE (and SCHEDULE,
TIME_ZONE) filled in and the flags appended; apply it with: | kubectl apply -f -
The pod runs the pipeline itself on one GPU node; Workload Identity gives it SERVICE_ACCOUNT.
USAGE
}

verb=${1:-help}
shift || true
case "$verb" in dataflow | image | template | run-template | schedule | k8s)
  if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
    verb_usage "$verb"
    exit 0
  fi
  load_settings
  ;;
esac
case "$verb" in
  demo)
    install
    quiet_tf
    ensure_bundle "$@"
    "$PYTHON" -m pipelines.run --input "$EXAMPLE" --model "$BUNDLE" --output build/demo \
      --passthrough_columns species,year "$@"
    ;;
  demo-images)
    install
    quiet_tf
    ensure_digits_bundle
    "$PYTHON" -m pipelines.run --input "$DIGITS_FILES/holdout/*.png" --model "$DIGITS_BUNDLE" \
      --output build/demo-images "$@"
    ;;
  test)
    install
    install_extras
    ensure_debian_package chromium 'the report rendering test' \
      'command -v chromium || command -v chromium-browser'
    ensure_debian_package postgresql 'the database output tests' \
      'command -v initdb || ls /usr/lib/postgresql/*/bin/initdb'
    quiet_tf
    "$PYTHON" -m pytest "$@"
    ;;
  bench)
    install
    quiet_tf
    if [ "${1:-}" = --images ]; then
      shift
      install_extras
      "$PYTHON" -m benchmarks.side_venvs ray
      "$PYTHON" -m benchmarks.images "$@"
    elif [ "${1:-}" = --text ]; then
      shift
      install_extras
      "$PYTHON" -m benchmarks.side_venvs st ray
      "$PYTHON" -m benchmarks.text "$@"
    else
      ensure_bundle
      "$PYTHON" -m benchmarks.side_venvs ray tft
      "$PYTHON" -m benchmarks.run "$@"
    fi
    ;;
  train)
    install
    quiet_tf
    "$PYTHON" -m models.examples.penguins.train "$@"
    ;;
  run)
    install
    quiet_tf
    "$PYTHON" -m pipelines.run "$@"
    ;;
  import)
    install
    quiet_tf
    "$PYTHON" -m models.importer "$@"
    ;;
  status)
    if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
      echo "usage: ./launch.sh status RUN_ID --output=OUTPUT [--summary_location=...]" >&2
      exit 2
    fi
    run_id=$1
    shift
    install
    load_settings
    where=()
    if [ -n "${BUCKET:-}" ]; then where+=("--temp_location=gs://$BUCKET/tmp"); fi  # as launches set it
    "$PYTHON" -m pipelines.record.status "--run_id=$run_id" "${where[@]}" "$@"
    ;;
  dataflow)
    require --dataflow
    lines=$(python3 deploy/settings.py beam-flags)
    mapfile -t flags <<< "$lines"
    if [ "${DRY_RUN:-0}" != 1 ]; then install; quiet_tf; fi
    cloud "$PYTHON" -m pipelines.run --runner=DataflowRunner "--project=$PROJECT" "--region=$REGION" \
      "${flags[@]}" "$@"
    ;;
  image)
    require PROJECT IMAGE
    # A TensorFlow GPU image is large; a bigger build machine and a longer timeout than the defaults.
    cloud gcloud builds submit --project="$PROJECT" --region="$REGION" --tag="$IMAGE" \
      --machine-type=e2-highcpu-8 --timeout=3600s .
    ;;
  template)
    require PROJECT BUCKET IMAGE
    cloud gcloud dataflow flex-template build "$TEMPLATE" --project="$PROJECT" --image="$IMAGE" \
      --sdk-language=PYTHON --metadata-file=deploy/flex-template/metadata.json
    ;;
  run-template)
    require --dataflow IMAGE
    lines=$(python3 deploy/settings.py launch-environment gcloud)
    mapfile -t environment <<< "$lines"
    parameters=$(python3 deploy/settings.py gcloud-parameters "$@")
    cloud gcloud dataflow flex-template run "$(python3 deploy/settings.py job-name)" --project="$PROJECT" \
      --region="$REGION" --template-file-gcs-location="$TEMPLATE" "${environment[@]}" "$parameters"
    ;;
  schedule)
    require --dataflow IMAGE SERVICE_ACCOUNT
    name=batch-inference
    passthrough=()
    for arg in "$@"; do
      case "$arg" in
        --cron=*) SCHEDULE=${arg#--cron=} ;;
        --name=*) name=${arg#--name=} ;;
        *) passthrough+=("$arg") ;;
      esac
    done
    body=build/scheduler/$name.json
    mkdir -p build/scheduler
    python3 deploy/settings.py launch-request "$name" "${passthrough[@]+"${passthrough[@]}"}" > "$body"
    echo "launch request: $body" >&2
    cloud gcloud scheduler jobs create http "$name" --project="$PROJECT" --location="$REGION" \
      --schedule="$SCHEDULE" --time-zone="$TIME_ZONE" --http-method=POST \
      --uri="https://dataflow.googleapis.com/v1b3/projects/$PROJECT/locations/$REGION/flexTemplates:launch" \
      --oauth-service-account-email="$SERVICE_ACCOUNT" --headers=Content-Type=application/json \
      --message-body-from-file="$body"
    ;;
  k8s)
    kind=${1:-}
    shift || true
    case "$kind" in
      job | cronjob) ;;
      *) verb_usage k8s >&2; exit 2 ;;
    esac
    require IMAGE SERVICE_ACCOUNT
    python3 deploy/render.py manifest "deploy/k8s/$kind.yaml" "--set=IMAGE=$IMAGE" \
      "--set=SERVICE_ACCOUNT=$SERVICE_ACCOUNT" "--set=GPU_TYPE=$GPU_TYPE" \
      "--set=JOB_NAME=$(python3 deploy/settings.py job-name)" "--set=SCHEDULE=$SCHEDULE" \
      "--set=TIME_ZONE=$TIME_ZONE" "${@/#/--arg=}"
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
