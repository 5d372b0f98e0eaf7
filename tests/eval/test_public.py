"""Public ladders: random `transformers` checkpoints in a ladder layout, through the evaluator.

The test builds 2 sizes x 2 steps of LLaMA and of GPT-NeoX checkpoints (save_pretrained,
safetensors) with a byte-level BPE tokenizer.json trained here, evaluates them with
`runner.evaluate(source=public_source(...))` on validation loss and a multiple-choice task,
and checks every number against a direct forward of the `transformers` model on the same
tokens. `transformers`, `tokenizers` and `torch` are test-only dependencies; nothing is
downloaded.
"""

import json
import pathlib

import numpy as np
import pytest

from lmscale.data import corpora, registry
from lmscale.data import vocab as vocab_lib
from lmscale.eval import public
from lmscale.eval import results as R
from lmscale.eval import runner

pytestmark = pytest.mark.usefixtures("fast_compiles")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ("the cat sat on the mat and the dog ran to the hat while a bird sang over the "
         "old red barn near the river").split()
TEXTS = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
TOKENS_PER_STEP = 1000
STEPS = (10, 20)
MC_TASK = "public_test_mc"
CORPUS = "public_test_corpus"
SEQ_LEN = 32
VOCAB = 300  # the embedding table: >= the tokenizer's ids (256 bytes + specials + merges)


def build_tokenizer(directory: pathlib.Path, bos: str | None = None) -> None:
    """A byte-level BPE tokenizer.json (pad id 0, eos "</s>" id 1, "<s>" id 2) and its
    config; `bos`: the token the tokenizer adds first (LLaMA style), None: none (NeoX)."""
    m = tokenizers.models
    tok = tokenizers.Tokenizer(m.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=290, special_tokens=["<pad>", "</s>", "<s>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS, trainer)
    assert tok.get_vocab_size() <= VOCAB
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {"eos_token": "</s>"}
    if bos is not None:
        config.update(bos_token=bos, add_bos_token=True)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def _model(family: str, size: int, seed: int):
    width, layers = (16, 1) if size == 0 else (32, 2)
    if family == "llama":
        config = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=width, num_hidden_layers=layers,
            num_attention_heads=width // 8, num_key_value_heads=width // 16,
            intermediate_size=2 * width, max_position_embeddings=64, rms_norm_eps=1e-5,
            tie_word_embeddings=False, attn_implementation="eager")
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=width, num_hidden_layers=layers,
            num_attention_heads=width // 8, intermediate_size=4 * width,
            max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True,
            hidden_act="gelu", tie_word_embeddings=False, attn_implementation="eager")
        model = transformers.GPTNeoXForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # sharper than the default init, so scores differ visibly
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.15)
    return model.eval()


def build_ladder(root: pathlib.Path, family: str, sizes=(0, 1), steps=STEPS):
    """`<root>/<family>-<size>/step<step>/` checkpoints; returns (entries, models) with
    models[(name, step)] the torch model saved there."""
    entries, models = [], {}
    for size in sizes:
        name = f"{family}-{size}"
        for step in steps:
            model = _model(family, size, seed=100 * size + step)
            directory = root / name / f"step{step}"
            model.save_pretrained(directory, safe_serialization=True)
            build_tokenizer(directory, bos="<s>" if family == "llama" else None)
            entries.append({"model": name, "path": f"{name}/step{step}",
                            "tokens": step * TOKENS_PER_STEP, "step": step})
            models[(name, step)] = model
    return entries, models


def register_fixtures(root: pathlib.Path):
    """The validation corpus (a few text files, all in validation) and the MC task."""
    docs = root / "corpus"
    docs.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(TEXTS[:6]):
        (docs / f"doc{i}.txt").write_text(text + ". " + text)
    corpora.register_corpus_task(CORPUS, str(docs / "*.txt"), validation_fraction=1.0)
    instances = [registry.Instance(f"q{i}", " ".join(WORDS[i:i + 5]),
                                   choices=(" " + WORDS[i + 5], " dog", " barn near"),
                                   gold=0) for i in range(4)]
    task = registry.EvalTask(MC_TASK, registry.MULTIPLE_CHOICE, None, 1 / 3, (), 1,
                             loader=lambda split: list(instances))
    registry.register_eval_task(task, with_seqio=False)
    return instances


def _hf_logprobs(model, ids) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([list(ids)])).logits[0].double()
    return torch.log_softmax(logits, -1).numpy()


def hf_validation_loss(model, batches, start: int = 0) -> float:
    """Token-weighted NLL of packed batches, each packed segment forwarded on its own,
    starting with `start` (the BOS the checkpoint's tokenizer adds, else seqio's 0)."""
    total, count = 0.0, 0.0
    for b in batches:
        for row in range(b["decoder_input_tokens"].shape[0]):
            seg = b["decoder_segment_ids"][row]
            for s in set(seg.tolist()) - {0}:
                at = np.flatnonzero(seg == s)
                assert (b["decoder_positions"][row, at] == np.arange(at.size)).all()
                ids = b["decoder_input_tokens"][row, at].copy()
                assert ids[0] == 0  # seqio's shift: the text's tokens follow an id 0
                ids[0] = start
                logp = _hf_logprobs(model, ids)
                nll = -logp[np.arange(at.size), b["decoder_target_tokens"][row, at]]
                w = b["decoder_loss_weights"][row, at]
                total, count = total + float((nll * w).sum()), count + float(w.sum())
    return total / count


def hf_choice_logliks(model, tok, prompt, choices, start: int = 0) -> list[float]:
    """log p(choice | start + prompt) per choice, one forward each (start: the BOS id the
    checkpoint's tokenizer adds, else 0)."""
    ctx = [start] + tok.encode(prompt, add_special_tokens=False).ids
    out = []
    for choice in choices:
        ids = tok.encode(choice, add_special_tokens=False).ids
        logp = _hf_logprobs(model, ctx + ids)
        out.append(float(sum(logp[len(ctx) - 1 + j, t] for j, t in enumerate(ids))))
    return out


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("public")
    return root, register_fixtures(root)


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_public_ladder_matches_transformers(family, fixtures, tmp_path):
    root, instances = fixtures
    entries, models = build_ladder(tmp_path / "hub", family)
    ladder = public.PublicLadder(root=str(tmp_path / "hub"), checkpoints=entries,
                                 corpus=CORPUS, seq_len=SEQ_LEN)
    runs = public.build_runs(ladder)
    assert sorted(runs) == [f"{family}-0", f"{family}-1"]
    small, large = runs[f"{family}-0"].record, runs[f"{family}-1"].record
    assert small.N < large.N and small.checkpoints == list(STEPS)
    assert small.D == STEPS[-1] * TOKENS_PER_STEP and small.tokens_per_step == TOKENS_PER_STEP
    assert small.vocab_spec.startswith(vocab_lib.HF_PREFIX)
    results = runner.evaluate(list(runs), [MC_TASK], source=public.public_source(runs),
                              results_path=str(tmp_path / "results.jsonl"),
                              validation=runner.ValidationConfig(batch_size=4))
    tok = tokenizers.Tokenizer.from_file(
        str(tmp_path / "hub" / f"{family}-0" / "step10" / "tokenizer.json"))
    from lmscale.data.pipeline import LMStream

    batches = list(LMStream(CORPUS, "validation", SEQ_LEN, 4, seed=0,
                            vocab_spec=small.vocab_spec, repeat=False))
    by_key = {(r.run, r.step, r.task, r.metric, r.instance): r for r in results.rows}
    losses = [by_key[(n, s, R.VALIDATION_TASK, R.VALIDATION_LOSS, None)].value
              for n, s in models]
    # Every checkpoint was loaded (the losses differ far beyond the tolerance below).
    assert min(abs(a - b) for i, a in enumerate(losses) for b in losses[i + 1:]) > 1e-3
    for (name, step), model in models.items():
        rec = runs[name].record
        row = by_key[(name, step, R.VALIDATION_TASK, R.VALIDATION_LOSS, None)]
        assert row.tokens == step * TOKENS_PER_STEP and row.num_params_non_embedding == rec.N
        assert row.flops == pytest.approx(6.0 * rec.N * step * TOKENS_PER_STEP)
        start = tok.token_to_id("<s>") if family == "llama" else 0
        assert row.value == pytest.approx(hf_validation_loss(model, batches, start), abs=1e-4)
        assert by_key[(name, step, MC_TASK, R.UNIT_COMPLETE, None)].value == len(instances)
        for inst in instances:
            got = by_key[(name, step, MC_TASK, R.INSTANCE, inst.id)].detail["loglik"]
            want = hf_choice_logliks(model, tok, inst.prompt, inst.choices, start=start)
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
