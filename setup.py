"""hh: a JAX/Flax reimplementation of Bai et al. 2022 (HH-RLHF).

Install for development with ``pip install -e '.[test]'``.
"""
import setuptools

setuptools.setup(
    name="hh",
    version="0.1.0",
    description="Helpful & harmless RLHF (Bai et al. 2022) in JAX/Flax",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["hh", "hh.*", "configs"]),
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "ml_collections>=1.0",
        "absl-py>=2.1",
        "sentencepiece>=0.2",
        "numpy>=1.26",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "tensorflow-datasets>=4.9.7",
        "array-record>=0.5",
        "grain>=0.2.10",
        "importlib_resources>=6",
        # Hugging Face interop (hh/convert.py, hh/tokenizer.py): tensors and tokenizer.json
        "safetensors>=0.4",
        "tokenizers>=0.19",
    ],
    extras_require={
        # torch and transformers (CPU) are the reference the checkpoint conversion is tested
        # against; pinned so that reference does not move under the tests. gcsfs and an
        # in-memory GCS emulator test gs:// workdirs (hh/io.py); selenium drives Debian's
        # chromium and chromedriver through the labelling page (hh/label.py)
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "portpicker>=1.6",
                 "torch==2.13.0", "transformers==5.23.0", "gcsfs>=2024.2",
                 "gcp-storage-emulator>=2024.8", "selenium>=4.20"],
        # gs:// workdirs, datasets and tokenizers (epath's filesystem for Cloud Storage)
        "gcs": ["gcsfs>=2024.2"],
        # accelerators: JAX's own builds for a Cloud TPU VM and for NVIDIA GPUs (CUDA 13); a
        # pod's workdir is usually a gs:// one
        "tpu": ["jax[tpu]>=0.7", "gcsfs>=2024.2"],
        "cuda": ["jax[cuda13]>=0.7"],
    },
)
