"""What a failed checkpoint restore means, and what is done about it (docs/reliability.md).

- integrity: the checkpoint's bytes are bad (size-manifest mismatch, a missing or unreadable file,
  orbax/TensorStore cannot parse it): the Checkpointer quarantines it and falls back to the previous.
- mismatch: the checkpoint is intact but the configured train state has another structure, shape
  or dtype (a changed gin binding): `CheckpointMismatch` names it; nothing is moved.
- resource / transient: out of memory while placing arrays, or a filesystem that briefly fails
  (EIO, a timeout, gs:// "Unavailable"/"DeadlineExceeded"): retried with backoff (`RestoreRetry`),
  then `CheckpointUnavailable`; nothing is moved.
- unknown: anything else (PermissionError, a sharding ValueError, a TypeError from an orbax API change):
  not evidence that the bytes are bad, so nothing is quarantined; `CheckpointRestoreFailed` stops the
  run naming the checkpoint and the error. Quarantine needs positive evidence of corruption.
"""
from __future__ import annotations

import dataclasses
import errno
import re
import time

import gin

INTEGRITY, RESOURCE, TRANSIENT, UNKNOWN = "integrity", "resource", "transient", "unknown"

# errno values of a filesystem or network that may answer if asked again (not ENOENT: a missing
# file is an integrity failure).
_TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY, errno.ESTALE,
                               errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ENETDOWN,
                               errno.ENETUNREACH, errno.EHOSTUNREACH})
# tf.errors / google.api_core exception class names (matched by name: neither is imported here).
_TRANSIENT_TYPES = frozenset({"UnavailableError", "DeadlineExceededError", "AbortedError", "ServiceUnavailable",
                              "DeadlineExceeded", "TooManyRequests", "GatewayTimeout"})
# Status words in TensorStore / XLA / gRPC messages.
_TRANSIENT_TEXT = re.compile(r"\b(UNAVAILABLE|DEADLINE_EXCEEDED|Unavailable|DeadlineExceeded)\b")
_RESOURCE_TEXT = re.compile(r"RESOURCE_EXHAUSTED|out of memory", re.IGNORECASE)
# Positive evidence that a checkpoint's bytes are bad: a missing or truncated file, or metadata/array
# data that cannot be parsed (TensorStore DATA_LOSS / NOT_FOUND, orbax's JSON metadata, zarr headers).
_CORRUPT_TYPES = (FileNotFoundError, EOFError, UnicodeDecodeError)
_CORRUPT_TEXT = re.compile(r"\bDATA_LOSS\b|\bNOT_FOUND\b|unexpected end of|truncated|corrupt|No such file|"
                           r"Expecting (value|property name)|Unterminated string|JSONDecodeError|Error opening|"
                           r"Error reading local file|Failed to decode|could not parse|Failed to parse|"
                           r"not a valid checkpoint|No structure could be identified|missing", re.IGNORECASE)


class CheckpointError(RuntimeError):
    """A run's checkpoints cannot be used as asked; the message says what was kept and what to do."""


class CheckpointMismatch(CheckpointError):
    """An intact checkpoint does not fit the configured train state (a gin binding changed)."""


class CheckpointUnavailable(CheckpointError):
    """Restoring kept failing with resource or transient errors after every retry."""


class CheckpointRestoreFailed(CheckpointError):
    """Restoring raised an error that is not evidence of corruption; the run stops, nothing moved."""


class NoUsableCheckpoint(CheckpointError):
    """The workdir has checkpoint history but no checkpoint that restores."""


class RunHistoryExists(CheckpointError, FileExistsError):
    """Starting at step 0 was asked in a workdir that holds checkpoints."""


def classify(error: BaseException) -> str:
    """Returns INTEGRITY, RESOURCE, TRANSIENT or UNKNOWN for an exception raised while reading a checkpoint.

    Looks through the exception's cause/context chain (orbax re-raises TensorStore errors). INTEGRITY
    only on positive evidence of corruption (a missing/truncated file, unparsable data): anything else
    is UNKNOWN, never a reason to quarantine.
    """
    chain, e = [], error
    while e is not None and len(chain) < 10 and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if any(isinstance(e, MemoryError) or _RESOURCE_TEXT.search(str(e)) for e in chain):
        return RESOURCE
    for e in chain:
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return TRANSIENT
        if isinstance(e, (TimeoutError, ConnectionError)) or type(e).__name__ in _TRANSIENT_TYPES:
            return TRANSIENT
        if _TRANSIENT_TEXT.search(str(e)):
            return TRANSIENT
    if any(isinstance(e, PermissionError) or "PERMISSION_DENIED" in str(e) for e in chain):
        return UNKNOWN  # an access problem, not bad bytes
    for e in chain:
        if isinstance(e, _CORRUPT_TYPES) or (isinstance(e, OSError) and e.errno == errno.ENOENT):
            return INTEGRITY
        if type(e).__name__ == "JSONDecodeError" or _CORRUPT_TEXT.search(str(e)):
            return INTEGRITY
    return UNKNOWN


@gin.configurable("checkpoint_restore")
@dataclasses.dataclass(frozen=True)
class RestoreRetry:
    """How often a restore that fails with a resource or transient error is tried again."""

    attempts: int = 4  # tries in all (1 = no retry)
    first_wait_s: float = 2.0  # wait before the second try; doubles each time
    max_wait_s: float = 60.0  # cap on one wait

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError(f"checkpoint_restore.attempts={self.attempts} must be >= 1 (1 = no retry)")
        if self.first_wait_s < 0 or self.max_wait_s < 0:
            raise ValueError(f"checkpoint_restore waits must be >= 0 (first_wait_s={self.first_wait_s}, "
                             f"max_wait_s={self.max_wait_s})")

    def wait_s(self, attempt: int) -> float:
        """Returns the wait after failed try number `attempt` (1-based)."""
        return min(self.max_wait_s, self.first_wait_s * 2 ** (attempt - 1))


_ADVICE = {
    RESOURCE: ("free host/device memory (another process on this host?) or restore on more devices (a larger "
               "fsdp axis shards the state further), then run again with --resume"),
    TRANSIENT: ("check the filesystem (bucket permissions, network, disk), then run again with --resume; "
                "more tries: --gin_param=checkpoint_restore.attempts=N"),
}


def short(error: BaseException) -> str:
    """Returns `Type: first line of the message` (at most 300 characters)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}"


def unknown_error(what: str, error: BaseException) -> CheckpointRestoreFailed:
    """Returns the error that stops a run on a restore error that is not evidence of corruption."""
    return CheckpointRestoreFailed(
        f"{what} failed with {short(error).rstrip('.')}. This is not evidence that the checkpoint is corrupt, "
        f"so nothing was moved or quarantined. Fix the cause (permissions of the workdir, the mesh/sharding "
        f"config, the installed orbax/jax versions), then run again with --resume")


def with_retries(fn, *, what: str, retry: RestoreRetry, report, sleep=time.sleep):
    """Returns fn(). Resource/transient errors are retried with backoff and reported, then raised as
    CheckpointUnavailable; integrity errors and CheckpointErrors propagate at once."""
    for attempt in range(1, retry.attempts + 1):
        try:
            return fn()
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 — classified below; integrity errors re-raised
            kind = classify(e)
            if kind == INTEGRITY:
                raise
            if kind == UNKNOWN:
                raise unknown_error(what, e) from e
            if attempt == retry.attempts:
                last = short(e).rstrip(".")
                raise CheckpointUnavailable(
                    f"{what} failed {retry.attempts} time(s) with a {kind} error, last: {last}. Nothing was moved: "
                    f"the checkpoint is kept as it is. What to do: {_ADVICE[kind]}") from e
            wait = retry.wait_s(attempt)
            report(f"{what}: {kind} error on try {attempt} of {retry.attempts} ({short(e)}); trying again in "
                   f"{wait:.1f} s (nothing was moved)")
            sleep(wait)
    raise AssertionError("unreachable")
