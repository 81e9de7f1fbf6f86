"""Convert a CTranslate2 Whisper model directory into an openai-whisper checkpoint.

faster-whisper runs Whisper through CTranslate2 (CT2), whose models are a ``model.bin``
of named tensors plus a ``config.json``. openai-whisper loads a ``torch.save``'d dict
``{"dims": ..., "model_state_dict": ...}``. Both describe the same network, so the
conversion is a renaming plus two reshapes, with no arithmetic on the weights:

* CT2 fuses the self-attention query/key/value projections into one linear layer
  (rows ``[q; k; v]``) and the cross-attention key/value into another (``[k; v]``);
  openai-whisper keeps them apart, so they are split back along the output rows.
* openai-whisper's key projections have no bias. CT2 stores one (zeros, written by its
  converter for the missing bias); we drop it, which is exact even if it were not zero:
  a key bias adds ``q·b`` to every score of a query, and softmax ignores a constant.

``model.bin`` is parsed here with :mod:`struct` (layout: CTranslate2's
``ModelSpec._serialize`` in ``python/ctranslate2/specs/model_spec.py``, read back by
``Model::load`` in ``src/models/model.cc``), so neither ctranslate2 nor torch is needed
to read it. torch and whisper are imported only inside the functions that need them:
importing this module stays cheap for a CLI that may never convert anything.

The conversion is strict: every openai-whisper parameter must be filled, every CT2
variable must be consumed, and the CT2 flags that change the computation (activation,
pre-norm, embedding scale, ...) must have the values openai-whisper hard-codes.
Anything else raises :class:`ValueError` naming the culprit, so a silently wrong model
cannot come out.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from canvascast_cli.atomic import staged

if TYPE_CHECKING:
    from whisper.model import Whisper

__all__ = [
    "ConversionResult",
    "alignment_heads_dump",
    "convert_ct2_to_openai_whisper",
    "load_openai_whisper",
    "read_ct2_model",
]

MODEL_FILE = "model.bin"
CONFIG_FILE = "config.json"
WHISPER_SPEC = "WhisperSpec"

# Binary versions whose layout this parser knows. 2 added the spec name and revision,
# 3 the alias table, 4 explicit dtype ids; 5 and 6 changed load-time semantics only
# (quantisation rounding), not the bytes. CTranslate2 itself refuses newer files.
_MIN_BINARY_VERSION = 2
_MAX_BINARY_VERSION = 6
# WhisperSpec revision written by CTranslate2 4.x; a newer one may rename weights.
_MAX_WHISPER_REVISION = 3

# CT2's DataType enum (include/ctranslate2/types.h): the id is the index.
_FLOAT32, _INT8, _INT16, _INT32, _FLOAT16, _BFLOAT16 = range(6)
_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES: dict[int, np.dtype[Any]] = {
    _FLOAT32: np.dtype("<f4"),
    _INT8: np.dtype("i1"),
    _INT16: np.dtype("<i2"),
    _INT32: np.dtype("<i4"),
    _FLOAT16: np.dtype("<f2"),
    _BFLOAT16: np.dtype("<u2"),  # raw bits; numpy has no bfloat16, widened below
}
# Before binary version 4 the dtype was guessed from the item size (CT2 calls this logic
# "old and flawed": float16 did not exist yet).
_LEGACY_ITEM_SIZES = {4: _FLOAT32, 2: _INT16, 1: _INT8}

_CT2_GELU = 3  # common_spec.Activation.GELU (erf form), what openai-whisper's nn.GELU is

# Scalar attributes of a Whisper model.bin and the values under which openai-whisper
# computes the same function. A value of None means "any": the attribute only matters
# when another one is set (alibi) or is superseded by config.json.
_EXPECTED_SCALARS: dict[str, int | None] = {
    "decoder/activation": _CT2_GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,  # Whisper does not scale token embeddings by sqrt(d)
    "decoder/start_from_zero_embedding": 0,
    "decoder/alibi": 0,
    "decoder/alibi_use_positive_positions": None,
    "decoder/scale_alibi": None,
    # Legacy single-layer attention export for return_attention; faster-whisper takes its
    # alignment heads from config.json, and so do we.
    "decoder/alignment_layer": None,
    "decoder/alignment_heads": None,
}

_SUPPORTED_OUTPUT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_ct2_to_openai_whisper` wrote."""

    output: Path
    dims: dict[str, int]  # openai-whisper ModelDimensions fields
    tensors: int  # entries in model_state_dict
    alignment_heads: list[tuple[int, int]]  # (decoder layer, head) pairs
    sha256: str  # of the checkpoint file


@dataclass(frozen=True)
class _Ct2File:
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Reader:
    """Little-endian cursor over the bytes of model.bin, with CT2's primitive types."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.offset = 0

    def _need(self, size: int, what: str) -> None:
        if self.offset + size > len(self.data):
            raise ValueError(
                f"{self.path} is truncated: cannot read {what} of {size} bytes at offset "
                f"{self.offset} (file is {len(self.data)} bytes)"
            )

    def unpack(self, fmt: str, what: str) -> int:
        size = struct.calcsize("<" + fmt)
        self._need(size, what)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return int(value)

    def u8(self, what: str) -> int:
        return self.unpack("B", what)

    def u16(self, what: str) -> int:
        return self.unpack("H", what)

    def u32(self, what: str) -> int:
        return self.unpack("I", what)

    def string(self, what: str) -> str:
        # uint16 length including a trailing NUL, then the UTF-8 bytes and the NUL.
        length = self.u16(what + " length")
        self._need(length, what)
        raw = self.data[self.offset : self.offset + length]
        self.offset += length
        # The C++ reader stops at the first NUL (it builds a std::string from a C string).
        return raw.split(b"\0", 1)[0].decode("utf-8")

    def array(self, dtype: np.dtype[Any], count: int, what: str) -> np.ndarray:
        size = count * dtype.itemsize
        self._need(size, what)
        # A view on the file's bytes: no copy until a tensor is actually converted.
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += size
        return out


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of a float32, so widening is exact.
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _model_file(path: Path) -> Path:
    return path / MODEL_FILE if path.is_dir() else path


def _read_ct2_file(path: Path) -> _Ct2File:
    model_file = _model_file(Path(path))
    reader = _Reader(model_file.read_bytes(), model_file)

    version = reader.u32("binary version")
    if not _MIN_BINARY_VERSION <= version <= _MAX_BINARY_VERSION:
        raise ValueError(
            f"{model_file}: CTranslate2 binary version {version} is not supported "
            f"(this reader knows {_MIN_BINARY_VERSION}-{_MAX_BINARY_VERSION}); "
            "is this a CTranslate2 model.bin?"
        )
    spec = reader.string("spec name")
    revision = reader.u32("spec revision")

    variables: dict[str, np.ndarray] = {}
    for index in range(reader.u32("variable count")):
        name = reader.string(f"name of variable #{index}")
        rank = reader.u8(f"rank of {name}")
        shape = tuple(reader.u32(f"dimension of {name}") for _ in range(rank))
        if version >= 4:
            type_id = reader.u8(f"dtype of {name}")
            num_bytes = reader.u32(f"byte size of {name}")
        else:
            item_size = reader.u8(f"item size of {name}")
            if item_size not in _LEGACY_ITEM_SIZES:
                raise ValueError(f"{model_file}: {name} has unknown item size {item_size}")
            type_id = _LEGACY_ITEM_SIZES[item_size]
            num_bytes = reader.u32(f"element count of {name}") * item_size
        if type_id not in _NUMPY_DTYPES:
            raise ValueError(f"{model_file}: {name} has unsupported CTranslate2 dtype id {type_id}")
        dtype = _NUMPY_DTYPES[type_id]
        count = int(np.prod(shape, dtype=np.int64))  # 1 for a scalar (rank 0)
        if num_bytes != count * dtype.itemsize:
            raise ValueError(
                f"{model_file}: {name} declares {num_bytes} bytes but shape {shape} of "
                f"{_DTYPE_NAMES[type_id]} needs {count * dtype.itemsize}"
            )
        value = reader.array(dtype, count, f"data of {name}").reshape(shape)
        if type_id == _BFLOAT16:
            value = _bfloat16_to_float32(value)
        if name in variables:
            raise ValueError(f"{model_file}: variable {name} appears twice")
        variables[name] = value

    aliases: dict[str, str] = {}
    if version >= 3:
        for index in range(reader.u32("alias count")):
            alias = reader.string(f"alias #{index}")
            aliases[alias] = reader.string(f"target of alias {alias}")

    if reader.offset != len(reader.data):
        raise ValueError(
            f"{model_file}: {len(reader.data) - reader.offset} unexpected bytes after the "
            "alias table"
        )
    return _Ct2File(version, spec, revision, variables, aliases)


def read_ct2_model(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse CTranslate2's model.bin: variables by name and aliases.

    Args:
        path: A CTranslate2 model directory, or its ``model.bin`` itself.

    Returns:
        ``(variables, aliases)``. Variables keep their stored dtype as numpy arrays
        (float32, float16, int8, int16, int32; bfloat16 is widened, exactly, to
        float32 because numpy has no bfloat16), with their CT2 shape; scalar attributes
        are 0-d arrays. The arrays are read-only views on the file's bytes. ``aliases``
        maps an alias name to the variable that holds its data (CTranslate2 stores a
        tensor once when several names have equal values, e.g. tied embeddings).

    Raises:
        ValueError: The file is truncated, has trailing bytes, a binary version this
            parser does not know, or a dtype id outside CTranslate2's enum.
    """
    parsed = _read_ct2_file(path)
    return parsed.variables, parsed.aliases


class _Variables:
    """CT2 variables looked up by name (through aliases), recording which were used."""

    def __init__(self, parsed: _Ct2File, source: Path) -> None:
        self.parsed = parsed
        self.source = source
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.parsed.variables or name in self.parsed.aliases

    def raw(self, name: str) -> np.ndarray:
        target = name
        if name in self.parsed.aliases:
            self.used.add(name)
            target = self.parsed.aliases[name]
        if target not in self.parsed.variables:
            detail = f" (alias of {target})" if target != name else ""
            raise ValueError(f"{self.source}: missing CTranslate2 variable {name}{detail}")
        self.used.add(target)
        return self.parsed.variables[target]

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = self.raw(name)
        if value.dtype.kind != "f":
            # int8/int16 weights are quantised (with a separate *_scale): dequantising
            # would not reproduce what faster-whisper computes, so refuse.
            raise ValueError(
                f"{self.source}: {name} is {value.dtype} (a quantised model); convert a "
                "float16/float32 CTranslate2 model instead"
            )
        if value.shape != shape:
            raise ValueError(f"{self.source}: {name} has shape {value.shape}, expected {shape}")
        return value

    def scalar(self, name: str) -> int | float:
        value = self.raw(name)
        if value.ndim != 0:
            raise ValueError(f"{self.source}: {name} should be a scalar, has shape {value.shape}")
        return value.item()

    def unused(self) -> list[str]:
        names = set(self.parsed.variables) | set(self.parsed.aliases)
        return sorted(names - self.used)


def _layer_count(names: list[str], stack: str, source: Path) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    if not indices:
        raise ValueError(f"{source}: no {stack} layers ({stack}/layer_N/...) in the model")
    if indices != set(range(len(indices))):
        raise ValueError(f"{source}: {stack} layers are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _dims(variables: _Variables, source: Path) -> dict[str, int]:
    names = list(variables.parsed.variables) + list(variables.parsed.aliases)
    shapes: dict[str, tuple[int, ...]] = {}
    for name in (
        "encoder/conv1/weight",
        "encoder/position_encodings/encodings",
        "decoder/embeddings/weight",
        "decoder/position_encodings/encodings",
    ):
        value = variables.raw(name)
        if value.ndim != (3 if "conv" in name else 2):
            raise ValueError(f"{source}: {name} has unexpected shape {value.shape}")
        shapes[name] = value.shape
    n_audio_state, n_mels, _kernel = shapes["encoder/conv1/weight"]
    n_audio_ctx, pos_state = shapes["encoder/position_encodings/encodings"]
    n_vocab, n_text_state = shapes["decoder/embeddings/weight"]
    n_text_ctx, text_pos_state = shapes["decoder/position_encodings/encodings"]
    if pos_state != n_audio_state or text_pos_state != n_text_state:
        raise ValueError(f"{source}: position encodings do not match the model width")
    # Head counts are not visible in any shape; CT2 stores them as int16 attributes.
    dims = {
        "n_mels": n_mels,
        "n_audio_ctx": n_audio_ctx,
        "n_audio_state": n_audio_state,
        "n_audio_head": int(variables.scalar("encoder/num_heads")),
        "n_audio_layer": _layer_count(names, "encoder", source),
        "n_vocab": n_vocab,
        "n_text_ctx": n_text_ctx,
        "n_text_state": n_text_state,
        "n_text_head": int(variables.scalar("decoder/num_heads")),
        "n_text_layer": _layer_count(names, "decoder", source),
    }
    for state, head in (("n_audio_state", "n_audio_head"), ("n_text_state", "n_text_head")):
        if dims[head] <= 0 or dims[state] % dims[head]:
            raise ValueError(f"{source}: {head}={dims[head]} does not divide {state}={dims[state]}")
    return dims


def _check_scalars(variables: _Variables) -> None:
    for name, expected in _EXPECTED_SCALARS.items():
        if name not in variables:
            continue  # older CTranslate2 versions write fewer attributes
        value = variables.scalar(name)
        if expected is not None and value != expected:
            raise ValueError(
                f"{variables.source}: {name} = {value}, but openai-whisper computes as if it "
                f"were {expected}; this model cannot be converted exactly"
            )


def _check_output_projection(variables: _Variables, embedding: np.ndarray) -> None:
    # openai-whisper computes logits with the token embedding matrix itself (tied
    # weights) and no bias. CT2 has a separate projection, normally an alias of the
    # embeddings; anything else is a model openai-whisper cannot represent.
    name = "decoder/projection/weight"
    if name in variables and not np.array_equal(variables.raw(name), embedding):
        raise ValueError(
            f"{variables.source}: {name} differs from decoder/embeddings/weight; "
            "openai-whisper ties the output projection to the token embedding"
        )
    bias = "decoder/projection/bias"
    if bias in variables and np.any(variables.raw(bias)):
        raise ValueError(f"{variables.source}: {bias} is not zero; openai-whisper has none")


def _alignment_heads_from_config(
    model_dir: Path, n_text_layer: int, n_text_head: int
) -> list[tuple[int, int]]:
    config_file = model_dir / CONFIG_FILE
    heads: Any = None
    if config_file.is_file():
        heads = json.loads(config_file.read_text(encoding="utf-8")).get("alignment_heads")
    if heads is None:
        # Same default as CTranslate2's converter and openai-whisper: every head of the
        # second half of the decoder layers.
        return [
            (layer, head)
            for layer in range(n_text_layer // 2, n_text_layer)
            for head in range(n_text_head)
        ]
    try:
        pairs = [(int(layer), int(head)) for layer, head in heads]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{config_file}: alignment_heads is not a list of [layer, head]") from exc
    _check_heads(pairs, n_text_layer, n_text_head)
    return pairs


def _check_heads(heads: list[tuple[int, int]], n_text_layer: int, n_text_head: int) -> None:
    for layer, head in heads:
        if not (0 <= layer < n_text_layer and 0 <= head < n_text_head):
            raise ValueError(
                f"alignment head ({layer}, {head}) is outside the decoder's "
                f"{n_text_layer} layers x {n_text_head} heads"
            )


def alignment_heads_dump(
    heads: list[tuple[int, int]], n_text_layer: int, n_text_head: int
) -> bytes:
    """The base85(gzip(bool array)) form ``model.set_alignment_heads()`` takes.

    The array is ``n_text_layer x n_text_head`` booleans, row-major, True for each
    ``(layer, head)`` in ``heads`` — the same encoding as ``whisper._ALIGNMENT_HEADS``.

    Raises:
        ValueError: A head lies outside the decoder.
    """
    _check_heads(heads, n_text_layer, n_text_head)
    mask = np.zeros((n_text_layer, n_text_head), dtype=bool)
    for layer, head in heads:
        mask[layer, head] = True
    # mtime=0 so the same heads always give the same bytes.
    return base64.b85encode(gzip.compress(mask.tobytes(), mtime=0))


def _expected_shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """openai-whisper's parameter names and shapes, from the library itself."""
    import torch
    from whisper.model import AudioEncoder, TextDecoder

    # The two halves of Whisper on the meta device: shapes without allocating weights.
    # (Whisper() itself cannot be built there: it calls to_sparse(), which has no meta
    # kernel.) Its state_dict is exactly "encoder." + these and "decoder." + these.
    with torch.device("meta"):
        encoder = AudioEncoder(
            dims["n_mels"],
            dims["n_audio_ctx"],
            dims["n_audio_state"],
            dims["n_audio_head"],
            dims["n_audio_layer"],
        )
        decoder = TextDecoder(
            dims["n_vocab"],
            dims["n_text_ctx"],
            dims["n_text_state"],
            dims["n_text_head"],
            dims["n_text_layer"],
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, module in (("encoder.", encoder), ("decoder.", decoder)):
        for name, value in module.state_dict().items():
            shapes[prefix + name] = tuple(value.shape)
    return shapes


def _map_weights(variables: _Variables, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """openai-whisper state-dict name -> numpy array (CT2's dtype, split where fused)."""
    out: dict[str, np.ndarray] = {}

    def linear(ct2: str, ours: str, n_out: int, n_in: int, bias: bool = True) -> None:
        out[f"{ours}.weight"] = variables.tensor(f"{ct2}/weight", (n_out, n_in))
        if bias:
            out[f"{ours}.bias"] = variables.tensor(f"{ct2}/bias", (n_out,))

    def layer_norm(ct2: str, ours: str, n_state: int) -> None:
        out[f"{ours}.weight"] = variables.tensor(f"{ct2}/gamma", (n_state,))
        out[f"{ours}.bias"] = variables.tensor(f"{ct2}/beta", (n_state,))

    def fused(ct2: str, ours: list[str], n_state: int) -> None:
        # CT2 concatenates the projections' rows in order [q; k; v] (or [k; v]).
        parts = len(ours)
        weight = variables.tensor(f"{ct2}/weight", (parts * n_state, n_state))
        bias = variables.tensor(f"{ct2}/bias", (parts * n_state,))
        for i, name in enumerate(ours):
            rows = slice(i * n_state, (i + 1) * n_state)
            out[f"{name}.weight"] = weight[rows]
            if not name.endswith(".key"):
                out[f"{name}.bias"] = bias[rows]
            # The key bias is dropped: see the module docstring.

    def mlp(ct2: str, ours: str, n_state: int) -> None:
        layer_norm(f"{ct2}/layer_norm", f"{ours}.mlp_ln", n_state)
        linear(f"{ct2}/linear_0", f"{ours}.mlp.0", 4 * n_state, n_state)
        linear(f"{ct2}/linear_1", f"{ours}.mlp.2", n_state, 4 * n_state)

    a_state, t_state = dims["n_audio_state"], dims["n_text_state"]
    n_mels = dims["n_mels"]

    out["encoder.conv1.weight"] = variables.tensor("encoder/conv1/weight", (a_state, n_mels, 3))
    out["encoder.conv1.bias"] = variables.tensor("encoder/conv1/bias", (a_state,))
    out["encoder.conv2.weight"] = variables.tensor("encoder/conv2/weight", (a_state, a_state, 3))
    out["encoder.conv2.bias"] = variables.tensor("encoder/conv2/bias", (a_state,))
    # CT2 stores the encoder's fixed sinusoids as a tensor; openai-whisper keeps them in
    # a persistent buffer, so they are part of the state dict and copied like weights.
    out["encoder.positional_embedding"] = variables.tensor(
        "encoder/position_encodings/encodings", (dims["n_audio_ctx"], a_state)
    )
    for i in range(dims["n_audio_layer"]):
        ct2, ours = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        layer_norm(f"{ct2}/self_attention/layer_norm", f"{ours}.attn_ln", a_state)
        fused(
            f"{ct2}/self_attention/linear_0",
            [f"{ours}.attn.query", f"{ours}.attn.key", f"{ours}.attn.value"],
            a_state,
        )
        linear(f"{ct2}/self_attention/linear_1", f"{ours}.attn.out", a_state, a_state)
        mlp(f"{ct2}/ffn", ours, a_state)
    layer_norm("encoder/layer_norm", "encoder.ln_post", a_state)

    embedding = variables.tensor("decoder/embeddings/weight", (dims["n_vocab"], t_state))
    out["decoder.token_embedding.weight"] = embedding
    _check_output_projection(variables, embedding)
    # The decoder's positions are learned: a plain weight, despite the CT2 name.
    out["decoder.positional_embedding"] = variables.tensor(
        "decoder/position_encodings/encodings", (dims["n_text_ctx"], t_state)
    )
    for i in range(dims["n_text_layer"]):
        ct2, ours = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        layer_norm(f"{ct2}/self_attention/layer_norm", f"{ours}.attn_ln", t_state)
        fused(
            f"{ct2}/self_attention/linear_0",
            [f"{ours}.attn.query", f"{ours}.attn.key", f"{ours}.attn.value"],
            t_state,
        )
        linear(f"{ct2}/self_attention/linear_1", f"{ours}.attn.out", t_state, t_state)
        # CT2 "attention" is the cross-attention over the encoder output.
        layer_norm(f"{ct2}/attention/layer_norm", f"{ours}.cross_attn_ln", t_state)
        linear(f"{ct2}/attention/linear_0", f"{ours}.cross_attn.query", t_state, t_state)
        fused(
            f"{ct2}/attention/linear_1",
            [f"{ours}.cross_attn.key", f"{ours}.cross_attn.value"],
            t_state,
        )
        linear(f"{ct2}/attention/linear_2", f"{ours}.cross_attn.out", t_state, t_state)
        mlp(f"{ct2}/ffn", ours, t_state)
    layer_norm("decoder/layer_norm", "decoder.ln", t_state)
    return out


def _write_atomically(path: Path, write: Callable[[Any], None]) -> str:
    """Write through ``write(file)`` to a temp file beside ``path``, then rename; sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        with open(tmp, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return digest


def convert_ct2_to_openai_whisper(
    model_dir: Path, output: Path, *, dtype: str = "float32"
) -> ConversionResult:
    """Write a checkpoint ``whisper.load_model(output)`` loads.

    The file is ``torch.save({"dims": ..., "model_state_dict": ...,
    "alignment_heads": [[layer, head], ...]})``: openai-whisper's own two keys plus
    ours, the alignment heads from ``config.json`` (CTranslate2's converter records the
    model's heads there; without them the default is the second half of the decoder
    layers, as openai-whisper's). ``whisper.load_model`` ignores the extra key; use
    :func:`load_openai_whisper` to apply it.

    Args:
        model_dir: A CTranslate2 Whisper model directory (``model.bin``, ``config.json``).
        output: Checkpoint path; written to a temp file beside it, then renamed.
        dtype: ``"float32"`` or ``"float16"`` tensors in the checkpoint. Both are exact
            for a float16 source (openai-whisper casts to its parameters' dtype on load);
            float16 halves the file.

    Raises:
        ValueError: Not a Whisper CTranslate2 model, a quantised one, a missing or
            unused variable, a flag openai-whisper cannot reproduce, bad alignment heads,
            or an unsupported ``dtype``.
    """
    import torch

    if dtype not in _SUPPORTED_OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {_SUPPORTED_OUTPUT_DTYPES}, got {dtype!r}")
    model_dir = Path(model_dir)
    output = Path(output)
    source = model_dir / MODEL_FILE
    parsed = _read_ct2_file(source)
    if parsed.spec != WHISPER_SPEC:
        raise ValueError(
            f"{source} is a CTranslate2 {parsed.spec or 'unnamed'} model, not a Whisper "
            f"model ({WHISPER_SPEC})"
        )
    if parsed.revision > _MAX_WHISPER_REVISION:
        raise ValueError(
            f"{source}: {WHISPER_SPEC} revision {parsed.revision} is newer than this "
            f"converter knows ({_MAX_WHISPER_REVISION})"
        )

    variables = _Variables(parsed, source)
    dims = _dims(variables, source)
    _check_scalars(variables)
    weights = _map_weights(variables, dims)

    unused = variables.unused()
    if unused:
        raise ValueError(f"{source}: CTranslate2 variables not used by the conversion: {unused}")
    expected = _expected_shapes(dims)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(
            f"openai-whisper parameters not filled: {missing}; names openai-whisper lacks: {extra}"
        )
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise ValueError(f"{name}: shape {weights[name].shape}, openai-whisper has {shape}")

    heads = _alignment_heads_from_config(model_dir, dims["n_text_layer"], dims["n_text_head"])
    np_dtype = np.dtype(dtype)
    # astype copies: the arrays are read-only views on model.bin, which torch dislikes,
    # and a fused slice must become its own contiguous tensor.
    state_dict = {
        name: torch.from_numpy(np.ascontiguousarray(value.astype(np_dtype)))
        for name, value in weights.items()
    }
    checkpoint = {
        "dims": dims,
        "model_state_dict": state_dict,
        "alignment_heads": [[layer, head] for layer, head in heads],
    }
    digest = _write_atomically(output, lambda fh: torch.save(checkpoint, fh))
    return ConversionResult(
        output=output, dims=dims, tensors=len(state_dict), alignment_heads=heads, sha256=digest
    )


def load_openai_whisper(checkpoint: Path, device: str = "cpu") -> Whisper:
    """``whisper.load_model(checkpoint)`` with the checkpoint's own alignment heads.

    ``whisper.load_model`` sets alignment heads only for OpenAI's named models; for a
    file it keeps the default (second half of the decoder), and word timestamps then
    come from the wrong cross-attention heads. This applies the ``"alignment_heads"``
    key written by :func:`convert_ct2_to_openai_whisper`; a checkpoint without it keeps
    openai-whisper's default.
    """
    import torch
    import whisper

    checkpoint = Path(checkpoint)
    model = whisper.load_model(str(checkpoint), device=device)
    # mmap: only the small "alignment_heads" list is read, not the weights a second time.
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    heads = saved.get("alignment_heads")
    if heads is not None:
        dims = model.dims
        pairs = [(int(layer), int(head)) for layer, head in heads]
        model.set_alignment_heads(alignment_heads_dump(pairs, dims.n_text_layer, dims.n_text_head))
        # set_alignment_heads registers a new CPU buffer; move it to where the model is.
        model.to(device)
    return model
