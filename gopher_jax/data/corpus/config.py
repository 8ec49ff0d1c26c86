"""What a corpus-processing run does: the stage list and every stage's settings, from gin.

`ProcessConfig.from_gin()` is called once in the launcher; the result is a plain, picklable
value handed to every worker, so Beam workers never need the gin files.
"""
from __future__ import annotations

import dataclasses

import gin

from gopher_jax.data.corpus.components import BeamComponentsConfig
from gopher_jax.data.corpus.decontamination import DecontamConfig
from gopher_jax.data.corpus.fuzzy_dedup import DedupConfig
from gopher_jax.data.corpus.langid import LangIdConfig
from gopher_jax.data.corpus.quality import QualityConfig
from gopher_jax.data.corpus.repetition import RepetitionConfig
from gopher_jax.data.corpus.short_docs import ShortDocConfig

# Pipeline order (Gopher A.1.1: filter, then dedup, then test-set filtering; MT-NLG §3.1 puts
# ftfy and language identification first). `--stages` selects a subset, always in this order.
STAGES = ("unicode", "langid", "short_docs", "quality", "repetition", "exact_dedup", "fuzzy_dedup", "decontam")
DOCUMENT_STAGES = STAGES[:5]  # per-document, embarrassingly parallel


def parse_stages(spec: str | tuple | list | None) -> tuple[str, ...]:
    """Returns the named stages in pipeline order; raises ValueError naming an unknown one."""
    if spec is None:
        return STAGES
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {','.join(STAGES)}")
    return tuple(s for s in STAGES if s in names)


@gin.configurable(module="corpus")
@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Stage selection and I/O settings of a corpus-processing run."""

    stages: tuple[str, ...] = STAGES
    text_split: str = "auto"  # plain-text inputs: "auto" | "file" | "wikitext" (reader.split_text)
    num_shards: int = 4  # output shards per component and split
    write_tfrecord: bool = True  # also write TFRecord shards (tf.train.Example, feature "text")
    # Share of each component's documents held out as its "validation" split, chosen by a hash of
    # the document's id (writer.split_of), so the same documents in every run and runner; 0 = none.
    validation_fraction: float = 0.01


@dataclasses.dataclass(frozen=True)
class ProcessConfig:
    """Every setting of a run, resolved from gin in the launcher."""

    pipeline: PipelineConfig = PipelineConfig()
    langid: LangIdConfig = LangIdConfig()
    short_docs: ShortDocConfig = ShortDocConfig()
    quality: QualityConfig = QualityConfig()
    repetition: RepetitionConfig = RepetitionConfig()
    dedup: DedupConfig = DedupConfig()
    decontam: DecontamConfig = DecontamConfig()
    beam_components: BeamComponentsConfig = BeamComponentsConfig()  # Beam runs only

    @property
    def stages(self) -> tuple[str, ...]:
        return parse_stages(self.pipeline.stages)

    @classmethod
    def from_gin(cls, **overrides) -> "ProcessConfig":
        """Returns the config built from the current gin bindings, with keyword overrides."""
        cfg = cls(pipeline=PipelineConfig(), langid=LangIdConfig(), short_docs=ShortDocConfig(),
                  quality=QualityConfig(), repetition=RepetitionConfig(), dedup=DedupConfig(),
                  decontam=DecontamConfig(), beam_components=BeamComponentsConfig())
        return dataclasses.replace(cfg, **overrides)
