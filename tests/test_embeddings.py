"""The embedder interface, the bundled default model, the test fallback and compact storage."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from memory.models import Fact
from memory.recall.embeddings import (
    E5Embedder,
    Embedder,
    HashingEmbedder,
    compact_matches,
    decode_compact,
    default_embedder,
    encode_compact,
    with_embeddings,
)

ROOT = Path(__file__).resolve().parents[1]

#: (query, paraphrase, unrelated) per language.
PARAPHRASES = {
    "en": (
        "I need to reschedule my dentist appointment",
        "Can I move my dental appointment to another day?",
        "The March invoice has not been paid yet",
    ),
    "es": (
        "Necesito cambiar la cita con el dentista",
        "¿Puedo mover mi cita dental a otro día?",
        "La factura de marzo todavía no se ha pagado",
    ),
    "ca": (
        "Necessito canviar la cita amb el dentista",
        "Puc moure la meva cita dental a un altre dia?",
        "La factura de març encara no s'ha pagat",
    ),
}


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    return E5Embedder()


def test_default_embedder_is_the_bundled_model_and_shared() -> None:
    embedder = default_embedder()
    assert isinstance(embedder, E5Embedder)
    assert isinstance(embedder, Embedder)
    assert default_embedder() is embedder
    assert embedder.dim == 384


def test_vectors_are_normalised_float32_and_deterministic(e5: E5Embedder) -> None:
    texts = ["Caller prefers weekday mornings", "El client és vegetarià"]
    first = e5.embed(texts)
    second = e5.embed(texts)
    assert first.shape == (2, 384)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, second)
    # One at a time or in a batch: the same vector.
    np.testing.assert_allclose(e5.embed(texts[:1])[0], first[0], atol=1e-5)


def test_empty_input_gives_an_empty_matrix(e5: E5Embedder) -> None:
    assert e5.embed([]).shape == (0, 384)
    assert e5.embed_query([]).shape == (0, 384)
    assert HashingEmbedder().embed([]).shape == (0, 256)


@pytest.mark.parametrize("language", sorted(PARAPHRASES))
def test_a_paraphrase_is_closer_than_an_unrelated_sentence(e5: E5Embedder, language: str) -> None:
    query, paraphrase, unrelated = PARAPHRASES[language]
    query_vector = e5.embed_query([query])[0]
    paraphrase_vector, unrelated_vector = e5.embed([paraphrase, unrelated])
    assert query_vector @ paraphrase_vector > query_vector @ unrelated_vector + 0.03


@pytest.mark.parametrize("language", ["es", "ca"])
def test_a_query_finds_an_english_fact_across_languages(e5: E5Embedder, language: str) -> None:
    query = e5.embed_query([PARAPHRASES[language][0]])[0]
    paraphrase, unrelated = e5.embed([PARAPHRASES["en"][1], PARAPHRASES["en"][2]])
    assert query @ paraphrase > query @ unrelated


def test_the_model_loads_once_across_threads() -> None:
    embedder = E5Embedder()
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(embedder.embed_query(["hola, trucava per la factura"])[0])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for vector in results[1:]:
        np.testing.assert_allclose(vector, results[0], atol=1e-6)


@pytest.mark.slow
def test_the_model_loads_with_no_network() -> None:
    # A fresh interpreter where any socket use fails and the hub is off: the weights are in
    # the package, so loading and embedding still work.
    script = (
        "import socket\n"
        "def refuse(*args, **kwargs):\n"
        "    raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from memory.recall.embeddings import E5Embedder\n"
        "print(E5Embedder().embed_query(['bon dia'])[0].shape)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "(384,)"


def test_hashing_embedder_is_deterministic_and_lexical() -> None:
    first, second = HashingEmbedder(), HashingEmbedder()
    texts = ["Caller is vegetarian", "Caller is a vegetarian", "Invoice overdue"]
    vectors = first.embed(texts)
    np.testing.assert_array_equal(vectors, second.embed(texts))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert first.name != HashingEmbedder(dim=128).name


def test_compact_round_trip() -> None:
    rng = np.random.default_rng(7)
    vector = rng.standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    data = encode_compact(vector, model="m")
    assert isinstance(data, bytes)
    assert len(data) == 392
    restored = decode_compact(data, model="m")
    assert restored.dtype == np.float32
    assert restored.shape == (384,)
    assert float(restored @ vector) > 0.999
    np.testing.assert_allclose(decode_compact(data), restored)


def test_compact_round_trip_of_a_real_embedding_keeps_the_ranking(e5: E5Embedder) -> None:
    query = e5.embed_query([PARAPHRASES["en"][0]])[0]
    memories = e5.embed([PARAPHRASES["en"][1], PARAPHRASES["en"][2]])
    restored = np.array([decode_compact(encode_compact(m, model=e5.name)) for m in memories])
    np.testing.assert_allclose(restored @ query, memories @ query, atol=0.01)


def test_compact_vectors_of_another_model_are_refused() -> None:
    data = encode_compact(np.ones(8), model="old-model")
    with pytest.raises(ValueError, match="another model"):
        decode_compact(data, model="new-model")
    assert compact_matches(data, model="old-model", dim=8)
    assert not compact_matches(data, model="new-model", dim=8)
    assert not compact_matches(data, model="old-model", dim=384)
    assert not compact_matches(None, model="old-model", dim=8)


def test_malformed_compact_bytes_are_refused() -> None:
    with pytest.raises(ValueError):
        decode_compact(b"\x01\x02")


def test_a_zero_vector_survives_the_round_trip() -> None:
    restored = decode_compact(encode_compact(np.zeros(4)))
    assert np.all(np.isfinite(restored))


def test_with_embeddings_embeds_only_what_is_missing_or_stale() -> None:
    embedder = HashingEmbedder()
    current = with_embeddings([Fact(text="Caller is vegetarian")], embedder)[0]
    stale = Fact(text="Caller has a dog", embedding=encode_compact(np.ones(256), model="old"))
    missing = Fact(text="Caller lives in Girona")
    result = with_embeddings([current, stale, missing], embedder)
    assert result[0] is current
    for fact in result:
        assert compact_matches(fact.embedding, model=embedder.name, dim=embedder.dim)
    expected = embedder.embed(["Caller lives in Girona"])[0]
    assert float(decode_compact(result[2].embedding) @ expected) > 0.999
    assert [fact.text for fact in result] == [current.text, stale.text, missing.text]
