"""Counting what happened to every input document; mergeable so Beam can combine it."""
from __future__ import annotations

import collections
import dataclasses
import json
from typing import Iterable

from gopher_jax.data.corpus.documents import Doc


@dataclasses.dataclass
class Stats:
    """Document accounting: read == kept + sum(dropped.values()) always holds."""

    read: int = 0
    kept: int = 0
    records_written: int = 0  # output records (> kept when MT-NLG decontamination splits docs)
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    changed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    read_by_source: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    kept_by_source: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    chars_read: int = 0
    chars_written: int = 0
    # fuzzy dedup work: "candidate_pairs" (LSH) and "duplicate_pairs" (verified edges)
    dedup_pairs: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def add(self, doc: Doc) -> None:
        """Counts one document's final outcome."""
        self.read += 1
        self.read_by_source[doc.source] += 1
        self.chars_read += doc.chars_in
        self.changed.update(doc.changes)
        if doc.alive:
            records = doc.output_records()
            self.kept += 1
            self.kept_by_source[doc.source] += 1
            self.records_written += len(records)
            self.chars_written += sum(len(r["text"]) for r in records)
        else:
            self.dropped[doc.drop] += 1

    def merge(self, other: "Stats") -> "Stats":
        """Adds `other` into self and returns self."""
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, a + b)
        return self

    def check(self) -> None:
        """Raises AssertionError if some document is unaccounted for."""
        total = self.kept + sum(self.dropped.values())
        if total != self.read:
            raise AssertionError(f"stats do not add up: kept {self.kept} + dropped "
                                 f"{sum(self.dropped.values())} != read {self.read}")

    def to_json(self) -> dict:
        """Returns a JSON-serialisable dict with sorted keys (stable across runners)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = dict(sorted(v.items())) if isinstance(v, collections.Counter) else v
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Stats":
        """Returns Stats from `to_json` output."""
        kw = {f.name: (collections.Counter(d.get(f.name, {})) if f.type == "collections.Counter"
                       else d.get(f.name, 0)) for f in dataclasses.fields(cls)}
        return cls(**kw)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=2)

    def summary(self) -> str:
        """Returns a human-readable table of the outcome of every input document."""
        def pct(n):
            return f"{100.0 * n / self.read:6.2f}%" if self.read else "   n/a"
        lines = [f"documents read     {self.read:>10,}",
                 f"documents kept     {self.kept:>10,}  {pct(self.kept)}",
                 f"records written    {self.records_written:>10,}",
                 f"characters kept    {self.chars_written:>10,} of {self.chars_read:,}"]
        if self.dropped:
            lines.append("dropped, by reason:")
            lines += [f"  {r:<44} {n:>10,}  {pct(n)}" for r, n in sorted(self.dropped.items(), key=lambda x: -x[1])]
        if self.dedup_pairs:
            lines.append(f"fuzzy dedup: {self.dedup_pairs['candidate_pairs']:,} candidate pairs, "
                         f"{self.dedup_pairs['duplicate_pairs']:,} verified duplicates")
        if self.changed:
            lines.append("changed (kept or not), by stage:")
            lines += [f"  {r:<44} {n:>10,}" for r, n in sorted(self.changed.items(), key=lambda x: -x[1])]
        if len(self.read_by_source) > 1:
            lines.append("by source (kept / read):")
            lines += [f"  {s:<44} {self.kept_by_source[s]:>10,} / {n:,}" for s, n in sorted(self.read_by_source.items())]
        return "\n".join(lines)


def stats_of(docs: Iterable[Doc]) -> Stats:
    """Returns the Stats of a finished collection of documents."""
    s = Stats()
    for d in docs:
        s.add(d)
    return s
