"""MassiveText-style corpus processing: per-document filters, dedup, decontamination, runners.

Stages, in pipeline order (`pipeline_config.STAGES`): unicode repair, language identification,
MT-NLG short-document rules, Gopher quality filter, Gopher repetition filter, exact dedup,
MinHash-LSH fuzzy dedup, test-set decontamination. The same stage functions run in-process
(`local_pipeline.run_local`) and on Apache Beam (`beam_pipeline.run_beam`).
"""
