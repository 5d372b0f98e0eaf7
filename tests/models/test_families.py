"""Shape families against the papers' tables (and the Gadre et al. testbed counts)."""

import csv
import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmscale.models import (ConfigError, abstract_params, count_params, du2024, family_sizes,
                            gadre2024, get_family, hu2023, open_lm_reported_params, tiny)
from lmscale.models.families import DU2024_RUNS, open_lm_swiglu_hidden

pytestmark = pytest.mark.usefixtures("fast_compiles")

# Hu et al. Table 4: i -> (N non-embedding, billions; d_model; d_ff; heads; layers).
HU_TABLE4 = {3: (0.036, 512, 1280, 8, 12), 4: (0.109, 768, 1920, 12, 16),
             5: (0.241, 1024, 2560, 16, 20), 6: (0.499, 1344, 3360, 21, 24),
             7: (0.892, 1664, 4160, 26, 28), 8: (1.542, 2048, 5120, 32, 32),
             9: (2.45, 2432, 6080, 38, 36)}

# Gadre et al. testbed (mlfoundations/scaling): label -> (arch, params, params_no_embed).
GADRE_COUNTS = {"0.011B": ("d=96_l=8_h=4", 10569312, 5727840),
                "0.079B": ("d=512_l=8_h=4", 78914048, 53092864),
                "0.154B": ("d=576_l=24_h=8", 153677376, 124628544),
                "0.411B": ("d=1024_l=24_h=8", 411616256, 359973888),
                "1.4B": ("open_lm_1b", 1439795200, 1336510464),
                "6.9B": ("open_lm_7b", 6889410560, 6682841088)}


@pytest.mark.parametrize("i", sorted(HU_TABLE4))
def test_hu2023_matches_table4(i):
    n_billions, d_model, d_ff, heads, layers = HU_TABLE4[i]
    config = hu2023(i)
    assert (config.d_model, config.d_ff, config.n_heads, config.n_layers, config.head_dim) == (
        d_model, d_ff, heads, layers, 64)
    assert config.tie_embeddings and config.mlp == "gated" and config.activation == "gelu"
    assert count_params(config).non_embedding / 1e9 == pytest.approx(n_billions, rel=0.01)


def test_hu2023_table4_parsed_from_paper_text(shared_data):
    text = (shared_data.parent / "papers" / "hu2024-passuntil-predictable-scaling.txt").read_text()
    rows = re.findall(r"^[\d.]+B (\d) ([\d.]+) (\d+) (\d+) 64 (\d+) (\d+) ", text, re.M)
    assert len(rows) == 7
    for i, n, d_model, d_ff, heads, layers in rows:
        config = hu2023(int(i))
        assert (config.d_model, config.d_ff, config.n_heads, config.n_layers) == (
            int(d_model), int(d_ff), int(heads), int(layers))
        assert count_params(config).non_embedding / 1e9 == pytest.approx(float(n), rel=0.01)


def test_du2024_has_the_31_runs_of_tables_3_and_4():
    assert sum(r.table == 4 for r in DU2024_RUNS.values()) == 28
    assert sum(r.table == 3 for r in DU2024_RUNS.values()) == 3
    assert len(DU2024_RUNS) == 31


def test_du2024_tables_parsed_from_paper_text(shared_data):
    text = (shared_data.parent / "papers" /
            "du2024-emergent-abilities-loss-perspective.txt").read_text()
    row = re.compile(r"^([\d.]+[MB])\t([\d.]+[BT])\t(\d+)\t(\d+)\t(\d+)\t(\d+)\t(\d+)\t([\d.e-]+)$",
                     re.M)
    table3_end, table4_end = text.index("Table 3: Hyper"), text.index("Table 4: Hyper")
    seen = 0
    for m in row.finditer(text):
        size, tokens, d_model, d_hidden, heads, layers, batch, lr = m.groups()
        table = 3 if m.start() < table3_end else 4
        assert m.start() < table4_end
        run = DU2024_RUNS[f"{size}-{tokens}"]
        assert (run.table, run.batch_size, run.lr_peak) == (table, int(batch), float(lr))
        config = du2024(f"{size}-{tokens}")
        assert (config.d_model, config.d_ff, config.n_heads, config.n_layers) == (
            int(d_model), int(d_hidden), int(heads), int(layers))
        seen += 1
    assert seen == 31


@pytest.mark.parametrize("size, billions", [("300M", 0.3), ("540M", 0.54), ("1B", 1.0),
                                            ("1.5B", 1.5), ("3B", 3.0), ("6B", 6.0),
                                            ("32B", 32.0)])
def test_du2024_sizes_near_their_labels(size, billions):
    config = du2024(size)
    assert config.n_heads % config.n_kv_heads == 0 and config.n_kv_heads < config.n_heads
    assert config.rotary_dims == config.head_dim // 2 == 64
    # Labels are rounded and the vocabulary is our assumption: within 20% of the total.
    assert count_params(config).total / 1e9 == pytest.approx(billions, rel=0.2)
    # Every run of a size has that size's shape; only the name differs.
    for run_name, run in DU2024_RUNS.items():
        if run.shape == size:
            assert du2024(run_name).replace(name="") == config.replace(name="")


@pytest.mark.parametrize("label", sorted(GADRE_COUNTS))
def test_gadre2024_matches_open_lm_counts_exactly(label):
    arch, params, params_no_embed = GADRE_COUNTS[label]
    config = gadre2024(label)
    assert gadre2024(arch) == config
    assert open_lm_reported_params(config) == (params, params_no_embed)
    # The model itself also holds the qk-norm gains the published count leaves out.
    assert count_params(config).total == params + 2 * config.d_model * config.n_layers
    assert count_params(config.replace(qk_norm=False)).total == params


def test_gadre2024_counts_match_testbed_csv(shared_data):
    with open(shared_data / "gadre2024" / "testbed.csv", newline="") as f:
        rows = {(r["N_label"], r["arch"], int(r["N"]), int(r["N_no_embed"]))
                for r in csv.DictReader(f)}
    assert len(rows) == 6
    for label, arch, params, params_no_embed in rows:
        assert open_lm_reported_params(gadre2024(arch)) == (params, params_no_embed), label


def test_open_lm_swiglu_hidden_rule():
    assert [open_lm_swiglu_hidden(d) for d in (96, 512, 576, 1024, 2048, 4096)] == [
        256, 1536, 1536, 2816, 5632, 11008]


def test_tiny_ladder_changes_only_width():
    configs = [tiny(w) for w in family_sizes("tiny")]
    totals = [count_params(c).total for c in configs]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    assert 10_000 <= totals[0] and totals[-1] <= 5_000_000
    for c in configs:
        assert (c.n_layers, c.head_dim, c.vocab_size) == (4, 16, 259)
        assert c.d_ff * 2 == 5 * c.d_model and c.n_heads * c.head_dim == c.d_model
    assert tiny("d64") == tiny(64)


@pytest.mark.parametrize("build", [lambda: hu2023(3, vocab_size=259), lambda: tiny(48),
                                   lambda: gadre2024("0.011B", vocab_size=259),
                                   lambda: du2024("300M", vocab_size=259, n_layers=1)])
def test_family_configs_build_decoders_of_the_counted_size(build):
    config = build()
    shapes = nn.unbox(abstract_params(config))["params"]
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == count_params(
        config).total


def test_get_family_dispatches_and_lists_sizes():
    assert get_family("hu2023", 5) == hu2023(5)
    assert get_family("du2024", "1B") == du2024("1B")
    assert get_family("gadre2024", "1.4B") == gadre2024("1.4B")
    assert get_family("tiny", 32, vocab_size=256) == tiny(32, vocab_size=256)
    assert family_sizes("hu2023") == tuple(range(3, 10))
    assert family_sizes("gadre2024")[0] == "0.011B"


@pytest.mark.parametrize("call, field", [
    (lambda: get_family("llama", 1), "family"),
    (lambda: family_sizes("llama"), "family"),
    (lambda: du2024("5B"), "name"),
    (lambda: gadre2024("0.5B"), "name"),
    (lambda: hu2023(0), "i"),
    (lambda: hu2023("3"), "i"),
    (lambda: tiny(40), "d_model"),
    (lambda: tiny("small"), "name"),
])
def test_unknown_family_or_size_raises_config_error_naming_field(call, field):
    with pytest.raises(ConfigError, match=rf"\b{field}="):
        call()
