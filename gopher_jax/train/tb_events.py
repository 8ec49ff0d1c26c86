"""A TensorBoard scalar writer for local run directories that imports neither TensorFlow nor torch.

Why not a library writer: flax's SummaryWriter and tensorboard's own EventFileWriter load
TensorFlow whenever it is installed (~5-10 s per process, the largest part of a CPU run's start-up),
and tensorboardX imports torch. The file format is small and stable: TFRecord framing
(length, masked CRC-32C of the length, data, masked CRC-32C of the data) around `Event` protos,
written here with tensorboard's own protos and CRC. `tensorboard --logdir` and its
EventAccumulator read the result (tests/train/test_tb_events.py).
"""
from __future__ import annotations

import os
import socket
import struct
import time


class ScalarEventWriter:
    """Appends scalar summaries to one `events.out.tfevents.*` file in a local directory."""

    def __init__(self, logdir: str):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

        self._event_pb2, self._summary_pb2, self._crc = event_pb2, summary_pb2, masked_crc32c
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.0"
        self.path = os.path.join(logdir, name)
        self._f = open(self.path, "ab")
        self._write(self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._f.write(header + struct.pack("<I", self._crc(header)) + data + struct.pack("<I", self._crc(data)))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Records `value` under `tag` at `step`."""
        summary = self._summary_pb2.Summary(value=[self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        """Makes everything written so far visible to readers."""
        self._f.flush()

    def close(self) -> None:
        """Flushes and closes the file."""
        self._f.close()


def summary_writer(logdir: str):
    """Returns a writer with `scalar(tag, value, step)` and `flush()` for `logdir`.

    Local directories get ScalarEventWriter (no TensorFlow); URLs such as gs:// get flax's
    SummaryWriter, whose tf.io.gfile reaches them.
    """
    if "://" in logdir:
        from flax.metrics import tensorboard
        return tensorboard.SummaryWriter(logdir)
    return ScalarEventWriter(logdir)
