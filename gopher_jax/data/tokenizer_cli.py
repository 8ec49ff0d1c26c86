"""`gopher-jax data train-tokenizer`: train a SentencePiece model on files or the embedded corpus.

  gopher-jax data train-tokenizer --output_prefix=runs/tok/sp32k                  # embedded corpus
  gopher-jax data train-tokenizer --input=a.jsonl --input=b.txt --vocab_size=32000 \
      --normalization=nfkc --output_prefix=runs/tok/gopher32k                     # Gopher-style
"""
from __future__ import annotations

import argparse
import sys
import time

from gopher_jax.data import tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds this command's flags to `parser`."""
    parser.add_argument("--input", action="append", default=[],
                        help="text file (one document per line) or .jsonl file (repeatable); "
                             "default: the embedded corpus's train split")
    parser.add_argument("--text_key", default="text", help="field holding the text in .jsonl inputs")
    parser.add_argument("--output_prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    parser.add_argument("--vocab_size", type=int, default=tokenizer.DEFAULT_VOCAB_SIZE,
                        help="number of pieces (Gopher/Chinchilla: 32000; the tiny model: 4096)")
    parser.add_argument("--model_type", choices=tokenizer.MODEL_TYPES, default="bpe")
    parser.add_argument("--normalization", choices=tokenizer.NORMALIZATIONS, default="identity",
                        help="Gopher: nfkc; Chinchilla: identity (lossless round-trip)")
    parser.add_argument("--no_split_digits", dest="split_digits", action="store_false",
                        help="let digits merge into multi-digit pieces (default: one piece per digit)")
    parser.add_argument("--no_byte_fallback", dest="byte_fallback", action="store_false",
                        help="map unseen characters to <unk> instead of UTF-8 byte pieces")
    parser.add_argument("--character_coverage", type=float, default=0.9995)
    parser.add_argument("--max_sentences", type=int, default=5_000_000,
                        help="lines sampled for training (bounds memory on large corpora)")


def run(args: argparse.Namespace) -> int:
    """Trains the tokenizer and prints where it is and how well it compresses; returns 0 on success."""
    if args.input:
        texts = tokenizer.read_texts(args.input, text_key=args.text_key)
        source = ", ".join(args.input)
    else:
        from gopher_jax.data import embedded_mixture
        texts = embedded_mixture.documents("train")
        source = "embedded mixture (train split)"
    start = time.perf_counter()
    try:
        path = tokenizer.train_tokenizer(
            texts, args.output_prefix, vocab_size=args.vocab_size, model_type=args.model_type,
            normalization=args.normalization, split_digits=args.split_digits,
            byte_fallback=args.byte_fallback, character_coverage=args.character_coverage,
            max_sentences=args.max_sentences)
    except (ValueError, FileNotFoundError) as e:
        print(f"gopher-jax data train-tokenizer: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    size = tokenizer.load(path).get_piece_size()
    print(f"wrote {path} ({size} pieces, {args.model_type}, {args.normalization}) from {source} "
          f"in {seconds:.1f}s")
    return 0
