"""The built default model loads in sentence-transformers (real library, real converted backbones, committed delta)
and gives the `transformers` path's embeddings: text queries/passages and speech, cosine >= 0.999."""

import numpy as np
import pytest
import soundfile as sf
import torch

from wolofmrl.testing import espeak_wave

pytestmark = pytest.mark.slow

WOLOF = ["Ndax dafay taw tey?", "Ñaata la ceeb bi jar?"]
FRENCH = ["Il pleuvra demain sur Dakar.", "Le prix du riz a augmenté cette année."]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from transformers import AutoModel, AutoProcessor

    from wolofmrl.build import build, default_delta

    folder = build(tmp_path_factory.mktemp("st") / "wolofmrl-base", speech="whisper-base",
                   text="multilingual-e5-small", strategy="fusion", delta=default_delta("fusion"), hub=False)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    return folder, model, AutoProcessor.from_pretrained(folder, trust_remote_code=True)


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_sentence_transformers_text_and_speech_match_transformers(built, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder, model, processor = built
    st = SentenceTransformer(str(folder), trust_remote_code=True, truncate_dim=128, device="cpu")
    assert st.get_embedding_dimension() == 128 and st.prompts == {"query": "query: ", "document": "passage: "}
    q, d = st.encode_query(WOLOF), st.encode_document(FRENCH)
    assert q.shape == (2, 128) and d.shape == (2, 128)
    clip = espeak_wave(FRENCH[0], "fr")
    wav = tmp_path / "q.wav"
    sf.write(wav, clip, 16000)
    speech = st.encode_query([{"array": clip, "sampling_rate": 16000}, str(wav)])
    with torch.no_grad():
        tq = model.get_text_embeddings(**processor(text=WOLOF, text_kind="query"), dim=128).numpy()
        td = model.get_text_embeddings(**processor(text=FRENCH, text_kind="passage"), dim=128).numpy()
        ts = model.get_speech_embeddings(**processor(audio=[clip], sampling_rate=16000), dim=128).numpy()
    assert cosine(q, tq).min() >= 0.999 and cosine(d, td).min() >= 0.999
    assert cosine(speech, np.repeat(ts, 2, 0)).min() >= 0.999
    sims = st.similarity(speech[:1], d)  # cosine, the folder's similarity_fn_name
    np.testing.assert_allclose(sims.numpy(), (ts @ td.T) / np.linalg.norm(ts) / np.linalg.norm(td, axis=1), atol=1e-3)
    with pytest.raises(ValueError, match="sampling_rate"):
        st.encode_query([clip])  # a bare array carries no rate


def test_saved_sentence_transformer_reloads(built, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder, _, _ = built
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    st.save(str(tmp_path / "copy"))
    again = SentenceTransformer(str(tmp_path / "copy"), trust_remote_code=True, device="cpu")
    a, b = st.encode_document(FRENCH), again.encode_document(FRENCH)
    assert a.shape == (2, 384) and cosine(a, b).min() >= 0.99999
