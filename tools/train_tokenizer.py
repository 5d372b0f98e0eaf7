"""Trains a SentencePiece BPE vocabulary (as Du et al.) on a corpus, for seqio.

The model reserves the ids seqio expects (pad 0, eos 1, unk 2, no bos), so the output
works as `seqio.SentencePieceVocabulary(path)` and as the vocabulary spec `path` in
`lmscale.data.vocab.get_vocabulary`.

  python tools/train_tokenizer.py --corpus=lmscale_stdlib_py --vocab_size=4096 \
      --output=/tmp/spm/stdlib_bpe4k
  python tools/train_tokenizer.py --files_glob='/data/*.jsonl' --text_field=text ...

Writes <output>.model and <output>.vocab. Only the train split is read.
"""
from __future__ import annotations

import os
import tempfile

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Flags are defined only when run as a script, so tests can import `train`."""
    flags.DEFINE_string("corpus", "lmscale_stdlib_py",
                        "Built-in corpus to train on (ignored with --files_glob).")
    flags.DEFINE_string("files_glob", None, "Local text/JSONL files instead.")
    flags.DEFINE_string("text_field", None, "JSONL field with the text.")
    flags.DEFINE_integer("vocab_size", 4096, "Pieces, including pad/eos/unk.")
    flags.DEFINE_string("output", None, "Output prefix (<output>.model).", required=True)
    flags.DEFINE_integer("max_sentences", 2_000_000, "Lines sampled by the trainer (0 = all).")


def corpus_lines(corpus: str, files_glob: str | None, text_field: str | None) -> list[str]:
    """Training-split documents of the corpus, as text."""
    from lmscale.data import corpora
    from lmscale.data import errors

    if files_glob is None:
        if corpus != corpora.STDLIB_TASK:
            raise app.UsageError(f"--corpus supports {corpora.STDLIB_TASK!r}; use "
                                 "--files_glob for local files")
        return corpora.stdlib_texts("train")
    docs = []
    for path in errors.expand_glob(files_glob):
        if text_field is None:
            docs.append(errors.read_text(path))
        else:
            docs.extend(errors.require_field(rec, text_field, str, path, line)
                        for line, rec in errors.iter_jsonl(path))
    return docs


def train(docs: list[str], vocab_size: int, output: str, max_sentences: int = 0) -> str:
    """Trains BPE on `docs`; returns the path of the written .model file."""
    import sentencepiece as spm

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8",
                                     delete=False) as f:
        for doc in docs:
            f.write(doc if doc.endswith("\n") else doc + "\n")
        text_path = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=text_path, model_prefix=output, model_type="bpe", vocab_size=vocab_size,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
            byte_fallback=True, split_digits=True, remove_extra_whitespaces=False,
            # Code: keep runs of spaces (indentation) as pieces.
            allow_whitespace_only_pieces=True, normalization_rule_name="identity",
            input_sentence_size=max_sentences, shuffle_input_sentence=True,
            max_sentence_length=1 << 16, minloglevel=2)
    finally:
        os.unlink(text_path)
    return output + ".model"


def main(argv):
    del argv
    docs = corpus_lines(FLAGS.corpus, FLAGS.files_glob, FLAGS.text_field)
    path = train(docs, FLAGS.vocab_size, FLAGS.output, FLAGS.max_sentences)
    print(f"wrote {path} ({FLAGS.vocab_size} pieces, {len(docs)} documents)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
