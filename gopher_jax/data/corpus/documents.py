"""The document record that flows through every stage, and how a document's outcome is named."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Doc:
    """One input document. Dropped documents keep flowing (with `drop` set) so stats see them."""

    id: str  # "<source>/<file>:<index>", zero-padded so string order == input order
    source: str  # dataset name, used for dedup priority and per-source stats
    text: str
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # other JSON fields, kept
    drop: str | None = None  # "<stage>:<rule>" once a stage removes the document
    changes: tuple[str, ...] = ()  # "<stage>:<what>" for each stage that modified the text
    fragments: tuple[str, ...] | None = None  # MT-NLG decontamination output pieces, if split
    priority: int = 100  # lower survives dedup; set from DedupConfig.dataset_priority
    chars_in: int = 0  # length of the text as read, for the stats report

    @property
    def alive(self) -> bool:
        return self.drop is None

    @property
    def rank(self) -> str:
        """Returns the dedup ordering key "<priority:06d>|<id>": the smallest rank survives.

        A string (not a tuple) so Beam can group on it with a deterministic coder.
        """
        return f"{self.priority:06d}|{self.id}"

    def dropped(self, reason: str) -> "Doc":
        """Returns a copy marked as removed for `reason` ("<stage>:<rule>")."""
        return dataclasses.replace(self, drop=reason)

    def changed(self, text: str, what: str) -> "Doc":
        """Returns a copy with new text and `what` appended to its changes."""
        return dataclasses.replace(self, text=text, changes=self.changes + (what,))

    def output_records(self) -> list[dict[str, Any]]:
        """Returns the jsonl records this document writes: none if dropped, one per fragment."""
        if not self.alive:
            return []
        texts = self.fragments if self.fragments is not None else (self.text,)
        return [{**self.fields, "text": t} for t in texts]
