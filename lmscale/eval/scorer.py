"""Likelihood scorer: multiple-choice log-likelihoods, their metrics, and validation loss.

Stage: eval. Consumes a decoder (`ModelConfig` + params) and tokenised questions; produces,
per question, the log-likelihood of every choice's continuation given the shared context,
and the metrics of Du et al. (accuracy, CorrectChoiceProb, Brier score) and of the
lm-evaluation-harness family (length-normalised accuracy by characters or bytes of the
choice without its joining delimiter, and by tokens),
plus the per-instance answer loss used by loss-assisted PassUntil (Hu et al., Sec. 4) and
the token-weighted validation loss of a held-out corpus. `Scorer.score_partial` scores
Winograd-style questions whose choices are different contexts before one shared
continuation (LLM-foundry's "schema" tasks: the continuation's log-likelihood).

How a question is scored (the context is computed once per question, one forward a batch):
  1. row q of a batch is [bos] + context q (right-padded to the batch's bucket) + its
     choices packed back to back at positions len(context) + [0, len(choice)) (a segment
     each); the attention mask (`Decoder(attention_mask=)`) keeps the context causal by
     itself and lets each choice attend to the valid context and, causally, to itself
     only, never to another choice or the padding, so no choice gets its own copy of the
     context; where the choices are short against the packed width, the CPU attention
     reads, per block of choice tokens, the context and a band of choice keys only
     (`Decoder(attention_window=)`, `ops.prefix_window_attention`);
  2. log-probabilities are read where a choice token is predicted: at the last context
     position (log p(first choice token)) and at choice position j (log p(token j + 1));
  3. target-token log-probs are summed per segment (t5x `score_batch` style).
The `bos` id (0 by default) is prepended because seqio's DecoderFeatureConverter shifts
every training sequence right with id 0, so a document always starts after a 0 in training.

Shapes are bucketed (four sizes per doubling) and the jitted functions are built once per model and
cached, so a new task reuses every compiled shape it shares with earlier tasks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lmscale.eval import results as results_lib
from lmscale.models import Decoder, ModelConfig, ops

Array = jax.Array
# What joins a choice to its context in lm-evaluation-harness (its `target_delimiter`).
TARGET_DELIMITER = " "


@dataclasses.dataclass(frozen=True)
class Question:
    """One tokenised multiple-choice question (a generative target is a 1-choice question).

    Attributes:
      id: instance id, carried into result rows.
      context_ids: [P] int token ids of the shared context (may be empty: bos alone).
      choice_ids: one [T_c] int array of continuation token ids per choice (each non-empty).
      choice_texts: the choices' strings (for character / byte length normalisation).
      gold: index of the correct choice, or None when there is none.
    """

    id: str
    context_ids: np.ndarray
    choice_ids: tuple[np.ndarray, ...]
    choice_texts: tuple[str, ...]
    gold: int | None = None

    def __post_init__(self):
        if len(self.choice_ids) == 0:
            raise ValueError(f"question {self.id!r}: no choices")
        if len(self.choice_texts) != len(self.choice_ids):
            raise ValueError(f"question {self.id!r}: {len(self.choice_texts)} choice_texts for "
                             f"{len(self.choice_ids)} choice_ids")
        for c, ids in enumerate(self.choice_ids):
            if len(ids) == 0:
                raise ValueError(f"question {self.id!r}: choice {c} ({self.choice_texts[c]!r}) "
                                 f"encodes to no tokens")
        if self.gold is not None and not 0 <= self.gold < len(self.choice_ids):
            raise ValueError(f"question {self.id!r}: gold={self.gold} is not a choice index "
                             f"in [0, {len(self.choice_ids)})")


def encode_question(vocab, instance_id: str, context: str, choices: Sequence[str],
                    gold: int | None) -> Question:
    """Tokenises a question with a `seqio.Vocabulary`.

    Context and each choice are encoded separately, so a choice's tokens never depend on its
    context (the byte vocabulary gives the same ids either way).
    """
    return Question(
        id=str(instance_id),
        context_ids=np.asarray(vocab.encode(context), np.int32).reshape(-1),
        choice_ids=tuple(np.asarray(vocab.encode(c), np.int32).reshape(-1) for c in choices),
        choice_texts=tuple(choices), gold=gold)


@dataclasses.dataclass(frozen=True)
class PartialQuestion:
    """A question whose choices are different contexts followed by one shared continuation.

    LLM-foundry's "schema" tasks and lm-evaluation-harness's WinoGrande score Winograd
    schemas this way ("partial scoring"): each choice is the sentence up to the blank with
    one candidate filled in, and the score of a choice is the log-likelihood of the rest of
    the sentence (the same tokens for every choice) given it. C = number of choices.

    Attributes:
      id: instance id, carried into result rows.
      context_ids: one [P_c] int array of context token ids per choice (may be empty).
      continuation_ids: [T] int token ids of the shared continuation (non-empty).
      continuation_text: the continuation's string (for the length fields of the score).
      gold: index of the correct context, or None when there is none.
    """

    id: str
    context_ids: tuple[np.ndarray, ...]
    continuation_ids: np.ndarray
    continuation_text: str
    gold: int | None = None

    def __post_init__(self):
        if len(self.context_ids) == 0:
            raise ValueError(f"partial question {self.id!r}: no contexts")
        if len(self.continuation_ids) == 0:
            raise ValueError(f"partial question {self.id!r}: the continuation "
                             f"{self.continuation_text!r} encodes to no tokens")
        if self.gold is not None and not 0 <= self.gold < len(self.context_ids):
            raise ValueError(f"partial question {self.id!r}: gold={self.gold} is not a "
                             f"context index in [0, {len(self.context_ids)})")

    def as_questions(self) -> list[Question]:
        """One single-choice `Question` per context, each scoring the continuation."""
        return [Question(id=f"{self.id}/{c}", context_ids=ctx,
                         choice_ids=(self.continuation_ids,),
                         choice_texts=(self.continuation_text,))
                for c, ctx in enumerate(self.context_ids)]


def encode_partial_question(vocab, instance_id: str, prompt: str, contexts: Sequence[str],
                            continuation: str, gold: int | None) -> PartialQuestion:
    """Tokenises a partial-scoring question: context c is `prompt + contexts[c]` (encoded
    as one string), the continuation is encoded on its own, as the harnesses do."""
    return PartialQuestion(
        id=str(instance_id),
        context_ids=tuple(np.asarray(vocab.encode(prompt + c), np.int32).reshape(-1)
                          for c in contexts),
        continuation_ids=np.asarray(vocab.encode(continuation), np.int32).reshape(-1),
        continuation_text=continuation, gold=gold)


@dataclasses.dataclass(frozen=True)
class QuestionScore:
    """Scores of one question. C = number of choices.

    Attributes:
      id: the question's id.
      loglik: [C] float64 sum of target-token log-probs (nats) of each choice.
      num_tokens, num_chars, num_bytes: [C] int lengths of each choice.
      greedy: [C] bool, every token of the choice is the argmax of its distribution.
      gold: correct choice index, or None.
      truncated: number of context tokens dropped from the left to fit `max_seq_len`.
      delimiter_chars: [C] int characters (ASCII, so also bytes) of the delimiter that
        joins each choice to the context (`TARGET_DELIMITER` when the choice starts with
        it), or None for none. Length-normalised accuracy divides by the choice's length
        without it, as lm-evaluation-harness's acc_norm does (it scores
        `delimiter + choice` and divides by `len(choice)`).
    """

    id: str
    loglik: np.ndarray
    num_tokens: np.ndarray
    num_chars: np.ndarray
    num_bytes: np.ndarray
    greedy: np.ndarray
    gold: int | None
    truncated: int = 0
    delimiter_chars: np.ndarray | None = None

    def norm_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """[C] characters and [C] bytes of each choice without its joining delimiter."""
        delim = 0 if self.delimiter_chars is None else np.asarray(self.delimiter_chars)
        return (np.asarray(self.num_chars) - delim, np.asarray(self.num_bytes) - delim)

    def metrics(self) -> dict[str, float]:
        """Per-question metrics keyed by the `results` metric constants (needs `gold`)."""
        if self.gold is None:
            raise ValueError(f"question {self.id!r} has no gold choice: no metrics")
        ll, g = self.loglik, self.gold
        chars, nbytes = self.norm_lengths()
        # softmax over choices of the choice log-likelihoods (Du et al., CorrectChoiceProb).
        probs = np.exp(ll - ll.max())
        probs /= probs.sum()
        onehot = np.zeros_like(probs)
        onehot[g] = 1.0

        def hit(scores):
            # First index wins ties, like numpy argmax; a tie with gold counts only if gold is
            # first, so a constant model is never credited with every tie.
            return float(int(np.argmax(scores)) == g)

        return {
            results_lib.ACCURACY: hit(ll),
            results_lib.ACCURACY_NORM_CHARS: hit(ll / np.maximum(chars, 1)),
            results_lib.ACCURACY_NORM_BYTES: hit(ll / np.maximum(nbytes, 1)),
            results_lib.ACCURACY_NORM_TOKENS: hit(ll / self.num_tokens),
            results_lib.CORRECT_CHOICE_PROB: float(probs[g]),
            # Brier (1950) as in Du et al.: summed over choices; uniform over 4 gives 0.75.
            results_lib.BRIER_SCORE: float(np.sum((probs - onehot) ** 2)),
            results_lib.ANSWER_LOSS: float(-ll[g] / self.num_tokens[g]),
        }

    def detail(self) -> dict[str, Any]:
        """JSON-ready per-instance detail: everything needed to recompute any convention."""
        out = {"loglik": [float(x) for x in self.loglik],
               "num_tokens": [int(x) for x in self.num_tokens],
               "num_chars": [int(x) for x in self.num_chars],
               "num_bytes": [int(x) for x in self.num_bytes],
               "greedy": [bool(x) for x in self.greedy], "gold": self.gold}
        if self.truncated:
            out["truncated"] = self.truncated
        if self.delimiter_chars is not None:
            out["delimiter_chars"] = [int(x) for x in self.delimiter_chars]
        return out

    @classmethod
    def from_detail(cls, id_: str, detail: dict[str, Any]) -> "QuestionScore":
        """Inverse of `detail` (for aggregating per-instance rows read back from a file)."""
        try:
            return cls(id=id_, loglik=np.asarray(detail["loglik"], np.float64),
                       num_tokens=np.asarray(detail["num_tokens"]),
                       num_chars=np.asarray(detail["num_chars"]),
                       num_bytes=np.asarray(detail["num_bytes"]),
                       greedy=np.asarray(detail["greedy"], bool), gold=detail["gold"],
                       truncated=int(detail.get("truncated", 0)),
                       delimiter_chars=(None if "delimiter_chars" not in detail else
                                        np.asarray(detail["delimiter_chars"])))
        except KeyError as e:
            raise ValueError(f"question {id_!r}: scorer detail lacks {e}") from None


def delimiter_chars(choice_texts: Sequence[str]) -> np.ndarray:
    """[C] length of the `TARGET_DELIMITER` each choice starts with (0 when it does not).

    Tasks write the delimiter into the choice (" yes" after "Answer:"); the harness keeps
    it apart and normalises by the choice alone, so the space must not count.
    """
    n = len(TARGET_DELIMITER)
    return np.array([n if t.startswith(TARGET_DELIMITER) and len(t) > n else 0
                     for t in choice_texts], np.int64)


def aggregate(scores: Sequence[QuestionScore]) -> dict[str, float]:
    """Dataset metrics: the mean over questions of each per-question metric."""
    if not scores:
        raise ValueError("aggregate: no question scores")
    per = [s.metrics() for s in scores]
    return {name: float(np.mean([m[name] for m in per])) for name in per[0]}


def _bucket(n: int, minimum: int) -> int:
    """Smallest size >= max(n, minimum) of the form m * 2^k, m in {4, 5, 6, 7} (or 1..3).

    Four sizes per octave keep padding under a fifth of the row (a 65-token context pads
    to 80; with powers of two and 1.5x between it padded to 96, which cost the scorer a
    fifth of its speed in tools/bench_score.py) at the price of more compiled shapes:
    about four per doubling of the context length.
    """
    target = max(n, minimum, 1)
    if target <= 4:
        return target
    k = (target - 1).bit_length() - 3  # 4 * 2^k < target <= 8 * 2^k
    for m in (5, 6, 7, 8):
        if m << k >= target:
            return m << k
    raise AssertionError(target)


def _batch_shape(questions, contexts, band: bool = True) -> tuple[int, int, int, int]:
    """Padded (context, choice count, packed choices width, window) of one scorer call.

    window (0: none) is the longest choice rounded up to a power of two, when it is at
    most a quarter of the width (and `band`): the CPU attention then reads, per block of `window`
    choice tokens, the context and the `2 window - 1` choice keys around the block
    only (`ops.prefix_window_attention`), not every choice key.
    """
    width = _bucket(max(sum(len(x) for x in q.choice_ids) for q in questions), 4)
    longest = max(len(x) for q in questions for x in q.choice_ids)
    window = 1 << max(0, longest - 1).bit_length()
    return (_bucket(max(len(c) for c in contexts) - 1, 8),  # bos: outside the bucket
            _bucket(max(len(q.choice_ids) for q in questions), 2), width,
            window if band and 4 * window <= width else 0)


def _as_params(params):
    params = nn.unbox(params)
    if isinstance(params, dict) and set(params) == {"params"}:
        return params["params"]
    return params


@functools.lru_cache(maxsize=None)
def _score_fn(model: nn.Module):
    """Jitted shared-context scorer for `model`; jit caches one executable per shape."""

    def score(params, ctx_tokens, ctx_len, tokens, segments, offsets, is_first, bos, slots,
              window):
        # ctx_tokens [Q, P]: the contexts without bos (right-padded); ctx_len [Q] (>= 1):
        # context lengths plus one (bos). tokens [Q, L]: question q's choices back to back;
        # segments [Q, L] = choice index + 1 (0: padding); offsets [Q, L]: position within
        # its choice; is_first [Q, L]: a choice's first token; bos [1, 1]: the bos id;
        # slots [C]: 1..C (its length is the static choice count); window (static): the
        # longest choice's bound, or 0 (see `_batch_shape`).
        #
        # One forward per batch: row q is [bos, context q (padded to P), its choices], and
        # the attention mask lets each choice see the valid context and, causally, its own
        # tokens; the context is causal by itself.
        q, p = ctx_tokens.shape
        width = tokens.shape[1]
        row = jnp.concatenate([jnp.broadcast_to(bos, (q, 1)), ctx_tokens, tokens], axis=1)
        positions = jnp.concatenate(
            [jnp.broadcast_to(jnp.arange(1 + p, dtype=jnp.int32), (q, 1 + p)),
             ctx_len[:, None] + offsets], axis=1)
        idx = jnp.arange(1 + p + width)
        in_ctx = idx < 1 + p
        seg = jnp.concatenate([jnp.zeros((q, 1 + p), segments.dtype), segments], axis=1)
        causal = idx[:, None] >= idx[None, :]
        sees_ctx = (in_ctx[None, None, :] & (idx[None, None, :] < ctx_len[:, None, None]))
        ctx_rows = in_ctx[None, :, None] & in_ctx[None, None, :] & causal[None]
        # A padding choice token (segment 0) sees the context only.
        choice_rows = (~in_ctx[None, :, None]) & (
            sees_ctx | ((seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
                        & causal[None]))
        mask = ctx_rows | choice_rows  # [Q, T, T]
        band = {"attention_window": (1 + p, window)} if window else {}
        # Only the last context position and the choices are unembedded: one gathered
        # row, then a static slice (a gather of all 1 + L rows was slower on CPU).
        logits = model.apply({"params": params}, row, positions, attention_mask=mask,
                             logits_at=ctx_len - 1, logits_from=1 + p, **band)  # [Q, 1+L, V]
        first_logp = jax.nn.log_softmax(logits[:, :1])  # [Q, 1, V]
        logp = jax.nn.log_softmax(logits[:, 1:])  # [Q, L, V]
        # Token j of a choice is predicted by choice position j - 1, token 0 by the context.
        prev = jnp.concatenate([first_logp, logp[:, :-1]], axis=1)
        prev = jnp.where(is_first[..., None], first_logp, prev)
        token_logp = jnp.take_along_axis(prev, tokens[..., None], axis=-1)[..., 0]  # [Q, L]
        hit = jnp.argmax(prev, axis=-1) == tokens
        member = segments[..., None] == slots  # [Q, L, C]
        loglik = jnp.sum(jnp.where(member, token_logp[..., None], 0.0), axis=1)  # [Q, C]
        greedy = ~jnp.any(member & ~hit[..., None], axis=1)
        return loglik, greedy

    return jax.jit(score, static_argnames=("window",))


class Scorer:
    """Scores multiple-choice questions with one decoder checkpoint.

    Args:
      config: the model's configuration.
      params: the unboxed parameter tree (as `restore_params` returns; a boxed
        `{"params": ...}` variables dict is accepted too).
      batch_questions: questions prefilled together (Q of the jitted call).
      bos_id: id prepended to every context (0: the feature converter's shift token).
      model: a Linen module with `Decoder`'s call forms (default `Decoder(config)`; tests pass
        a fake-logits model).
      band: let the CPU attention read a band of the choice keys where the choices are
        short (`_batch_shape`'s window); False reads every choice key (the same result;
        an ablation of tools/bench_score.py). Taken only where the model's attention
        reads it (`ops.explicit_vjp_enabled()`, attention_impl "default"): elsewhere a
        window would only compile more programs.
    """

    def __init__(self, config: ModelConfig, params, *, batch_questions: int = 8,
                 bos_id: int = 0, model: nn.Module | None = None, band: bool = True):
        if batch_questions < 1:
            raise ValueError(f"Scorer: batch_questions={batch_questions} must be >= 1")
        self.config, self.params = config, _as_params(params)
        self.batch_questions, self.bos_id = int(batch_questions), int(bos_id)
        self.band = (bool(band) and config.attention_impl == "default"
                     and ops.explicit_vjp_enabled())
        self._fn = _score_fn(model if model is not None else Decoder(config))

    def _prepare(self, q: Question) -> tuple[np.ndarray, int]:
        """[bos] + context, left-truncated so context + longest choice fit max_seq_len."""
        ctx = np.concatenate([[self.bos_id], np.asarray(q.context_ids, np.int32)])
        longest = max(len(c) for c in q.choice_ids)
        room = self.config.max_seq_len - longest
        if room < 1:
            raise ValueError(f"question {q.id!r}: a choice of {longest} tokens does not fit "
                             f"max_seq_len={self.config.max_seq_len}")
        dropped = max(0, len(ctx) - room)
        if dropped:
            ctx = np.concatenate([ctx[:1], ctx[1 + dropped:]])
        return ctx.astype(np.int32), dropped

    def score(self, questions: Sequence[Question]) -> list[QuestionScore]:
        """Scores `questions`; returns one `QuestionScore` each, in input order."""
        prepared = [self._prepare(q) for q in questions]
        truncated = sum(1 for _, d in prepared if d)
        if truncated:
            logging.warning("scorer: %d of %d contexts left-truncated to fit max_seq_len=%d",
                            truncated, len(questions), self.config.max_seq_len)
        out: list[QuestionScore | None] = [None] * len(questions)
        for idx in self._batches(prepared):
            lls, greedy = self._score_batch([questions[i] for i in idx],
                                            [prepared[i][0] for i in idx])
            for i, ll, gr in zip(idx, lls, greedy):
                q = questions[i]
                out[i] = QuestionScore(
                    id=q.id, loglik=ll, greedy=gr, gold=q.gold, truncated=prepared[i][1],
                    num_tokens=np.array([len(c) for c in q.choice_ids]),
                    num_chars=np.array([len(t) for t in q.choice_texts]),
                    num_bytes=np.array([len(t.encode("utf-8")) for t in q.choice_texts]),
                    delimiter_chars=delimiter_chars(q.choice_texts))
        return out  # type: ignore[return-value]

    def score_partial(self, questions: Sequence[PartialQuestion]) -> list[QuestionScore]:
        """Scores partial-scoring questions; one `QuestionScore` each, in input order.

        Choice c of a question scores the shared continuation after context c, so
        `loglik[c]` is log p(continuation | [bos] + context c) and every choice has the
        continuation's lengths (length-normalised accuracy then equals accuracy, as it
        should: the scored tokens are the same). Each (context, continuation) pair is
        one single-choice row of the shared-context scorer: the contexts differ, so no
        prefill is shared, but the jitted functions and their shapes are.
        """
        flat = [q for pq in questions for q in pq.as_questions()]
        scores = iter(self.score(flat))
        out = []
        for pq in questions:
            per = [next(scores) for _ in pq.context_ids]
            n = len(per)
            text = pq.continuation_text
            out.append(QuestionScore(
                id=pq.id, loglik=np.array([s.loglik[0] for s in per], np.float64),
                num_tokens=np.full(n, len(pq.continuation_ids)),
                num_chars=np.full(n, len(text)),
                num_bytes=np.full(n, len(text.encode("utf-8"))),
                greedy=np.array([bool(s.greedy[0]) for s in per]), gold=pq.gold,
                truncated=max(s.truncated for s in per),
                delimiter_chars=np.repeat(delimiter_chars([text]), n)))
        return out

    def _batches(self, prepared) -> list[list[int]]:
        """Question indices per jitted call: similar context lengths share a batch, so
        little is padded."""
        order = sorted(range(len(prepared)), key=lambda i: len(prepared[i][0]))
        return [order[s:s + self.batch_questions]
                for s in range(0, len(order), self.batch_questions)]

    def batch_indices(self, questions: Sequence[Question]) -> list[list[int]]:
        """The indices into `questions` of each jitted call `score(questions)` makes."""
        return self._batches([self._prepare(q) for q in questions])

    def batch_shapes(self, questions: Sequence[Question]) -> list[tuple[int, int, int, int]]:
        """(context, choices, width, window) padded sizes of each jitted call `score(questions)`
        makes: one compiled program per distinct shape (what `lmscale.report.plan`
        counts). Nothing is computed on the device (params may be None)."""
        prepared = [self._prepare(q) for q in questions]
        return [_batch_shape([questions[i] for i in idx], [prepared[i][0] for i in idx],
                             self.band) for idx in self._batches(prepared)]

    def _score_batch(self, questions, contexts):
        qn = self.batch_questions
        p, c, width, window = _batch_shape(questions, contexts, self.band)
        ctx_tokens = np.zeros((qn, p), np.int32)
        ctx_len = np.ones((qn,), np.int32)  # padding questions: bos alone
        tokens, segments, offsets = (np.zeros((qn, width), np.int32) for _ in range(3))
        is_first = np.zeros((qn, width), bool)
        for qi, (q, ctx) in enumerate(zip(questions, contexts)):
            ctx_tokens[qi, :len(ctx) - 1], ctx_len[qi] = ctx[1:], len(ctx)
            at = 0
            for ci, choice in enumerate(q.choice_ids):
                n = len(choice)
                tokens[qi, at:at + n] = choice
                segments[qi, at:at + n] = ci + 1
                offsets[qi, at:at + n] = np.arange(n)
                is_first[qi, at] = True
                at += n
        loglik, greedy = self._fn(self.params, ctx_tokens, ctx_len, tokens, segments, offsets,
                                  is_first, np.full((1, 1), self.bos_id, np.int32),
                                  np.arange(1, c + 1, dtype=np.int32), window=window)
        loglik = np.asarray(loglik, np.float64)
        greedy = np.asarray(greedy)
        lls = [loglik[qi, :len(q.choice_ids)] for qi, q in enumerate(questions)]
        grs = [greedy[qi, :len(q.choice_ids)] for qi, q in enumerate(questions)]
        return lls, grs


class ValidationLoss(NamedTuple):
    """Token-weighted mean NLL of a held-out corpus.

    loss_nats: sum of per-token NLL / number of weighted tokens (nats per token).
    num_tokens: target tokens with non-zero loss weight.
    num_batches: batches read.
    """

    loss_nats: float
    num_tokens: int
    num_batches: int


@functools.lru_cache(maxsize=None)
def _eval_step_fn(config: ModelConfig):
    """Training's eval step, jitted once per model configuration."""
    from lmscale.train import step as step_lib

    return jax.jit(lambda params, batch: step_lib.eval_step(params, batch, config=config))


def batch_sharding(params, batch_size: int):
    """Where a [B, T] evaluation batch goes: split over the data axes ("data", "fsdp") of
    the mesh `params` live on, as training splits its batches; None (let jit place it)
    when the parameters are not on a mesh, the mesh has no data axis over 1, or B does not
    divide among the data shards."""
    leaves = jax.tree_util.tree_leaves(params)
    sharding = getattr(leaves[0], "sharding", None) if leaves else None
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return None
    mesh = sharding.mesh
    axes = tuple(a for a in ("data", "fsdp") if mesh.shape.get(a, 1) > 1)
    shards = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if not axes or batch_size % shards:
        return None
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axes, None))


def validation_loss(config: ModelConfig, params, batches: Iterable[dict[str, np.ndarray]],
                    *, max_batches: int | None = None) -> ValidationLoss:
    """Token-weighted mean NLL over `batches` (e.g. `LMStream(..., repeat=False)`).

    Each batch goes through `lmscale.train.step.eval_step`, the function training's periodic
    validation uses, so the evaluator and training measure validation loss identically.
    On a mesh each batch is split over the data axes (`batch_sharding`), not replicated.

    Args:
      config: the model's configuration.
      params: the unboxed parameter tree.
      batches: dicts with [B, T] int arrays `decoder_input_tokens`, `decoder_target_tokens`,
        `decoder_loss_weights`, `decoder_positions`, `decoder_segment_ids` (seqio's
        DecoderFeatureConverter); packed rows attend only within their segment.
      max_batches: stop after this many batches (None: the whole finite stream).

    Returns:
      `ValidationLoss`; sums are accumulated in float64 on the host.

    Raises:
      ValueError: the stream held no weighted token, or a batch lacks a feature.
    """
    fn = _eval_step_fn(config)
    params = _as_params(params)
    keys = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
            "decoder_positions", "decoder_segment_ids")
    total, count, n = 0.0, 0.0, 0
    for batch in batches:
        if max_batches is not None and n >= max_batches:
            break
        try:
            feats = {k: np.asarray(batch[k], np.int32) for k in keys}
        except KeyError as e:
            raise ValueError(f"validation_loss: batch {n} lacks feature {e}") from None
        placement = batch_sharding(params, feats["decoder_input_tokens"].shape[0])
        if placement is not None:
            feats = jax.device_put(feats, placement)
        sums = fn(params, feats)
        total += float(sums["nll_sum"])
        count += float(sums["weight_sum"])
        n += 1
    if count == 0:
        raise ValueError(f"validation_loss: no weighted target token in {n} batches")
    return ValidationLoss(total / count, int(count), n)
