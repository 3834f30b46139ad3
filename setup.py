"""Installs the batch-inference packages, so Dataflow workers get them (`--setup_file`)."""

import setuptools

with open('requirements.txt', encoding='utf-8') as f:
  REQUIREMENTS = [line.strip() for line in f if line.strip() and not line.startswith('#')]

# Model formats beside TensorFlow's, each an optional extra (models/handlers/): pip install ".[onnx]".
# `onnx-gpu` is onnxruntime with its CUDA provider (instead of, not beside, `onnx`); PyTorch's wheel
# on PyPI for Linux is its CUDA build, and XGBoost's wheel runs on CUDA as it is.
EXTRAS = {
    'onnx': ['onnxruntime==1.32.0'],
    'onnx-gpu': ['onnxruntime-gpu==1.32.0'],
    'torch': ['torch==2.13.0'],
    'xgboost': ['xgboost==3.2.0'],
    'sklearn': ['scikit-learn==1.9.1', 'skops==0.16.0'],
    # Image models (transforms/images/): JPEG through simplejpeg (libjpeg-turbo), PNG and the rest
    # through Pillow, DICOM through pydicom (its JPEG and JPEG 2000 pixels through Pillow too).
    'images': ['simplejpeg==1.9.0', 'pillow==12.3.0', 'pydicom==3.0.2'],
    # Text models (transforms/text/): the bundle's tokenizer.json through Hugging Face `tokenizers`
    # (Rust, a batch encoded outside the GIL); document files' PDFs through pypdf (pure Python); the
    # embeddings' vector store (pipelines/search/) through Lance (pylance: Arrow files, an ANN index, versions).
    'text': ['tokenizers==0.23.3', 'pypdf==7.1.1', 'pylance==14.0.3'],
}
EXTRAS['all'] = EXTRAS['onnx'] + EXTRAS['torch'] + EXTRAS['xgboost'] + EXTRAS['sklearn'] + EXTRAS['images'] + EXTRAS['text']

setuptools.setup(
    name='beam-batch-inference',
    version='0.1.0',
    description='Batch inference on Apache Beam: files or BigQuery in, predictions and dead letters out.',
    packages=setuptools.find_packages(include=['pipelines*', 'transforms*', 'models*']),
    package_data={'models.examples.penguins': ['example/*.csv']},
    python_requires='>=3.10',
    install_requires=REQUIREMENTS,
    extras_require=EXTRAS,
)
