# One image, two roles: the Flex Template launcher that builds and submits the job, and the
# Dataflow worker (SDK container) that runs it, so both see the same code and libraries.
#
#   ./launch.sh image          builds it with Cloud Build and pushes it to $IMAGE
#
# GPU: TensorFlow's `and-cuda` extra brings the CUDA runtime and cuDNN as pip wheels matched
# to this TensorFlow, so a slim Python base is CUDA-capable without a second CUDA copy from
# an nvidia/cuda base. The driver comes from the host: Dataflow installs it with the
# `install-nvidia-driver` part of worker_accelerator, GKE with its GPU node driver installer.
# The same image runs on CPU-only workers; TensorFlow then uses the CPU.

# Python and Beam must match the SDK image the worker boot comes from; a test checks
# BEAM_VERSION and TENSORFLOW_VERSION against requirements.txt.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
# Google publishes the launcher under moving tags; pin a digest here for reproducible builds.
ARG TEMPLATE_LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk
FROM ${TEMPLATE_LAUNCHER_IMAGE} AS template_launcher

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG TENSORFLOW_VERSION=2.21.0

# The worker boot (Beam's SDK harness entry point) and the Flex Template launcher.
COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam
COPY --from=template_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

WORKDIR /template
COPY requirements.txt setup.py ./
RUN pip install --no-cache-dir -r requirements.txt "tensorflow[and-cuda]==${TENSORFLOW_VERSION}"
COPY pipelines ./pipelines
COPY transforms ./transforms
COPY models ./models
# Our package without dependencies (they are installed and pinned above), then a
# consistency check so a conflicting pin fails the build, not the job.
# The model formats' frameworks, GPU builds where they differ: onnxruntime-gpu (its CUDA provider),
# PyTorch's Linux wheel (a CUDA build), XGBoost (CUDA-capable as it is), scikit-learn (CPU only).
# (the pins equal setup.py's extras `onnx-gpu`, `torch`, `xgboost`, `sklearn`, `images` and `text`; a test checks).
RUN pip install --no-cache-dir --no-deps . \
    && pip install --no-cache-dir onnxruntime-gpu==1.32.0 torch==2.13.0 xgboost==3.2.0 scikit-learn==1.9.1 skops==0.16.0 \
       simplejpeg==1.9.0 pillow==12.3.0 pydicom==3.0.2 tokenizers==0.23.3 pypdf==7.1.1 pylance==14.0.3 \
    && pip check

# The launcher runs this file; the package is installed, so no setup or requirements
# file is staged at launch and workers start without installing anything. Workers run
# the SDK in this global environment instead of a fresh venv per start.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/pipelines/run.py \
    RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# Workers start through Beam's boot; the Flex Template service starts the launcher itself.
ENTRYPOINT ["/opt/apache/beam/boot"]
