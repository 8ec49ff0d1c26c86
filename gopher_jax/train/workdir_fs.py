"""One filesystem API for run directories: local paths and URLs (gs://, s3://, ...) alike.

Checkpoint manifests, their verification, quarantine and the "does this workdir hold a run?" check
go through these functions, never through os/shutil directly, so a gs:// workdir behaves like a
local one: manifests are written, a quarantine moves objects inside the bucket, and no local
"gs:" directory is ever created.

Backends, chosen by the path's scheme:
- no scheme (or file://): os/shutil; moving a directory is one atomic rename.
- a scheme given to `register_backend` (tests register fsspec's in-memory filesystem for gs://;
  users with s3fs/gcsfs may register `FsspecBackend(fsspec.filesystem(...))`).
- any other scheme: tf.io.gfile, the library etils.epath (hence orbax) itself uses for gs:// when
  TensorFlow is installed, so checkpoints and their manifests see the same credentials and paths.

Object stores have no directory rename: moving a tree there copies every file, then deletes the
source, so a move cut short leaves the source whole (and a partial copy beside it).
"""
from __future__ import annotations

import os
import shutil
from typing import Iterator

_SCHEME_SEP = "://"


def scheme(path: str) -> str | None:
    """Returns the URL scheme of `path` ("gs" for gs://b/x), or None for a local path."""
    head, sep, _ = str(path).partition(_SCHEME_SEP)
    return head if sep and head and "/" not in head and head != "file" else None


def join(path: str, *parts: str) -> str:
    """Joins path components with "/"; keeps the "scheme://" of a URL intact."""
    return os.path.join(str(path), *parts)


def basename(path: str) -> str:
    """Returns the last component of a local path or URL (ignoring a trailing "/")."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def _local(path: str) -> str:
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


class LocalBackend:
    """Local (or NFS-mounted) paths through os and shutil."""

    def exists(self, path):
        return os.path.exists(_local(path))

    def isdir(self, path):
        return os.path.isdir(_local(path))

    def listdir(self, path):
        return os.listdir(_local(path))

    def makedirs(self, path):
        os.makedirs(_local(path), exist_ok=True)

    def file_sizes(self, root) -> Iterator[tuple[str, int]]:
        root = _local(root)
        for d, _, names in os.walk(root):
            for n in names:
                p = os.path.join(d, n)
                yield os.path.relpath(p, root).replace(os.sep, "/"), os.path.getsize(p)

    def read_bytes(self, path):
        with open(_local(path), "rb") as f:
            return f.read()

    def write_bytes(self, path, data):
        with open(_local(path), "wb") as f:
            f.write(data)

    def replace_file(self, src, dst):
        os.replace(_local(src), _local(dst))

    def move_tree(self, src, dst):
        shutil.move(_local(src), _local(dst))


class GfileBackend:
    """URLs through tf.io.gfile (gs:// natively; imported on first use: TensorFlow is heavy)."""

    @property
    def _g(self):
        import tensorflow as tf
        return tf.io.gfile

    def exists(self, path):
        return self._g.exists(path)

    def isdir(self, path):
        return self._g.isdir(path)

    def listdir(self, path):
        return [n.rstrip("/") for n in self._g.listdir(path)]

    def makedirs(self, path):
        self._g.makedirs(path)

    def file_sizes(self, root):
        root = str(root).rstrip("/")
        for d, _, names in self._g.walk(root):
            for n in names:
                p = join(d, n)
                yield p[len(root):].lstrip("/"), self._g.stat(p).length

    def read_bytes(self, path):
        with self._g.GFile(path, "rb") as f:
            return f.read()

    def write_bytes(self, path, data):
        with self._g.GFile(path, "wb") as f:
            f.write(data)

    def replace_file(self, src, dst):
        self._g.rename(src, dst, overwrite=True)

    def move_tree(self, src, dst):
        _copy_then_delete(self, src, dst, copy=lambda a, b: self._g.copy(a, b, overwrite=False),
                          delete=self._g.rmtree)


class FsspecBackend:
    """Any fsspec filesystem (e.g. fsspec.filesystem("memory"), gcsfs, s3fs) for one scheme.

    Paths are handed to fsspec without their scheme, so one in-memory filesystem can stand in
    for gs:// in tests.
    """

    def __init__(self, fs):
        self.fs = fs

    @staticmethod
    def _p(path):
        return "/" + str(path).split(_SCHEME_SEP, 1)[-1].lstrip("/")

    def exists(self, path):
        return self.fs.exists(self._p(path))

    def isdir(self, path):
        return self.fs.isdir(self._p(path))

    def listdir(self, path):
        return [basename(p) for p in self.fs.ls(self._p(path), detail=False)]

    def makedirs(self, path):
        self.fs.makedirs(self._p(path), exist_ok=True)

    def file_sizes(self, root):
        base = self._p(str(root).rstrip("/"))
        for p, info in self.fs.find(base, detail=True).items():
            yield p[len(base):].lstrip("/"), int(info["size"])

    def read_bytes(self, path):
        return self.fs.cat_file(self._p(path))

    def write_bytes(self, path, data):
        self.fs.pipe_file(self._p(path), data)

    def replace_file(self, src, dst):
        self.fs.mv(self._p(src), self._p(dst))

    def move_tree(self, src, dst):
        _copy_then_delete(self, src, dst, copy=lambda a, b: self.fs.copy(self._p(a), self._p(b)),
                          delete=lambda p: self.fs.rm(self._p(p), recursive=True))


def _copy_then_delete(backend, src, dst, *, copy, delete) -> None:
    """Moves a tree on a store without directory rename: every file copied, then the source deleted."""
    src = str(src).rstrip("/")
    backend.makedirs(dst)
    for rel, _ in list(backend.file_sizes(src)):
        target = join(dst, rel)
        backend.makedirs(target.rsplit("/", 1)[0])
        copy(join(src, rel), target)
    delete(src)


_LOCAL = LocalBackend()
_GFILE = GfileBackend()
_REGISTERED: dict[str, object] = {}


def register_backend(url_scheme: str, backend) -> None:
    """Serves paths `url_scheme://...` with `backend` (None removes the registration)."""
    if backend is None:
        _REGISTERED.pop(url_scheme, None)
    else:
        _REGISTERED[url_scheme] = backend


def backend_for(path: str):
    """Returns the backend that serves `path` (see the module docstring)."""
    s = scheme(path)
    if s is None:
        return _LOCAL
    return _REGISTERED.get(s, _GFILE)


def exists(path: str) -> bool:
    """Returns whether a file or directory exists at `path`."""
    return backend_for(path).exists(path)


def isdir(path: str) -> bool:
    """Returns whether `path` is a directory (or, on object stores, a non-empty prefix)."""
    return backend_for(path).isdir(path)


def listdir(path: str) -> list[str]:
    """Returns the entry names directly under `path` ([] if it does not exist)."""
    b = backend_for(path)
    return sorted(b.listdir(path)) if b.isdir(path) else []


def makedirs(path: str) -> None:
    """Creates `path` and its parents (no error if it exists)."""
    backend_for(path).makedirs(path)


def file_sizes(root: str) -> dict[str, int]:
    """Returns {path relative to root, "/"-separated: size in bytes} of every file under `root`."""
    return dict(backend_for(root).file_sizes(root))


def read_text(path: str) -> str:
    """Returns the UTF-8 text of a file (FileNotFoundError-like errors of the backend propagate)."""
    return backend_for(path).read_bytes(path).decode("utf-8")


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `<path>.tmp`, then replaces `path` with it (readers never see half a file)."""
    b = backend_for(path)
    b.write_bytes(path + ".tmp", text.encode("utf-8"))
    b.replace_file(path + ".tmp", path)


def move_tree(src: str, dst: str) -> None:
    """Moves a directory tree to `dst` (which must not exist) on the same filesystem."""
    backend_for(src).move_tree(src, dst)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `<path>.tmp`, then replaces `path` with it."""
    b = backend_for(path)
    b.write_bytes(path + ".tmp", data)
    b.replace_file(path + ".tmp", path)


def append_text(path: str, text: str) -> None:
    """Appends `text` to a file (creating it). Object stores cannot append: there the file is read and
    rewritten whole, which is fine for what the loop appends to (metrics.jsonl: kilobytes per 1k steps)."""
    b = backend_for(path)
    if b is _LOCAL:
        with open(_local(path), "a", encoding="utf-8") as f:
            f.write(text)
        return
    old = b.read_bytes(path).decode("utf-8") if b.exists(path) else ""
    write_text_atomic(path, old + text)
