"""lmscale: predictable scaling of language models on JAX.

Stages, one subpackage each, imported lazily so `import lmscale` stays light:
`models` (Flax decoder, shape families), `data` (seqio tasks), `train` (sharded
trainer), `eval` (PassUntil sampler, likelihood scorer, sandbox), `fit` (scaling laws,
numpy + scipy only), `report` (markdown, PNG, JSON) and `main` (absl binaries).
"""

__version__ = "0.1.0"
