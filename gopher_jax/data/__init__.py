"""Data: the embedded default corpus, tokenizer training, seqio input pipeline, corpus processing."""
