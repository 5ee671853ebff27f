"""Whisper-base's encoder in plain PyTorch, read from the CTranslate2 ``model.bin``, exported to ONNX.

    python -m train.whisper_export            # -> ser_models/weights/whisper-encoder/encoder.onnx (int8)

CTranslate2 returns only the encoder's last layer; emotion lives as much in its middle layers
(Pepino et al., 2021, for wav2vec 2.0; the padding and layer study in model_card.md for Whisper).
So the same float16 weights the CTranslate2 path runs are read here into openai/whisper's encoder
(conv stem, sinusoidal positions, six pre-norm attention blocks, final layer norm) and exported
with every layer's states as outputs. ``check_against_ctranslate2`` compares the last layer with
CTranslate2's own output before anything is trusted. Serving runs the export on onnxruntime
(ser_models/whisper.py, ``OnnxWhisperEncoder``), without torch; its weights are quantised to int8
(onnxruntime's dynamic quantisation of the matrix products), about 20 MB.
"""

from __future__ import annotations

import argparse
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ser_models.whisper import (
    ENCODER_INPUT_FRAMES,
    ENCODER_ONNX_PATH,
    N_MELS,
    CTranslate2WhisperEncoder,
    log_mel_spectrogram,
    whisper_base_dir,
)

CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_ctranslate2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin`` (the layout ctranslate2.specs.model_spec writes)."""
    buffer = path.read_bytes()
    offset = 0

    def take(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from(fmt, buffer, offset)
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        length = take("H")
        value = buffer[offset : offset + length - 1].decode()
        offset += length
        return value

    if (version := take("I")) != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version}, expected 6")
    string()  # the spec's name
    take("I")  # its revision
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype = CT2_DTYPES[take("B")]
        n_bytes = take("I")
        if dtype == "bfloat16":
            raise ValueError(f"{name}: bfloat16 weights are not supported")
        variables[name] = np.frombuffer(buffer, dtype=dtype, count=n_bytes // np.dtype(dtype).itemsize, offset=offset)
        variables[name] = variables[name].reshape(shape)
        offset += n_bytes
    return variables


class EncoderBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)  # the key's bias is zero, as in Whisper
        self.out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class WhisperEncoderLayers(nn.Module):
    """openai/whisper's AudioEncoder, returning the states after the stem and after every block.

    Output (batch, n_layers + 1, frames / 2, width); the last entry has the final layer norm
    applied, so it equals what CTranslate2 (and transformers' ``last_hidden_state``) return.
    """

    def __init__(self, width: int = 512, heads: int = 8, layers: int = 6, positions: int = ENCODER_INPUT_FRAMES // 2):
        super().__init__()
        self.conv1 = nn.Conv1d(N_MELS, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(positions, width))
        self.blocks = nn.ModuleList(EncoderBlock(width, heads) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        states[-1] = self.final_norm(x)
        return torch.stack(states, dim=1)

    @classmethod
    def from_ctranslate2(cls, model_dir: Path | None = None) -> WhisperEncoderLayers:
        variables = read_ctranslate2(Path(model_dir or whisper_base_dir()) / "model.bin")

        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(variables[f"encoder/{name}"].astype(np.float32))

        n_layers = 1 + max(int(name.split("/")[1][6:]) for name in variables if re.match(r"encoder/layer_\d", name))
        width = variables["encoder/conv1/bias"].size
        model = cls(width, int(variables["encoder/num_heads"]), n_layers)
        state = {
            "conv1.weight": tensor("conv1/weight"),
            "conv1.bias": tensor("conv1/bias"),
            "conv2.weight": tensor("conv2/weight"),
            "conv2.bias": tensor("conv2/bias"),
            "positions": tensor("position_encodings/encodings")[: model.positions.shape[0]],
            "final_norm.weight": tensor("layer_norm/gamma"),
            "final_norm.bias": tensor("layer_norm/beta"),
        }
        for i in range(n_layers):
            for ours, theirs in {
                "attention_norm.weight": "self_attention/layer_norm/gamma",
                "attention_norm.bias": "self_attention/layer_norm/beta",
                "qkv.weight": "self_attention/linear_0/weight",
                "qkv.bias": "self_attention/linear_0/bias",
                "out.weight": "self_attention/linear_1/weight",
                "out.bias": "self_attention/linear_1/bias",
                "mlp_norm.weight": "ffn/layer_norm/gamma",
                "mlp_norm.bias": "ffn/layer_norm/beta",
                "fc1.weight": "ffn/linear_0/weight",
                "fc1.bias": "ffn/linear_0/bias",
                "fc2.weight": "ffn/linear_1/weight",
                "fc2.bias": "ffn/linear_1/bias",
            }.items():
                state[f"blocks.{i}.{ours}"] = tensor(f"layer_{i}/{theirs}")
        model.load_state_dict(state)
        return model.eval()


@torch.inference_mode()
def check_against_ctranslate2(model: WhisperEncoderLayers, clips: list[np.ndarray]) -> float:
    """Largest absolute difference between our last layer and CTranslate2's (float32) on these clips."""
    ctranslate2 = CTranslate2WhisperEncoder(compute_type="float32")
    worst = 0.0
    for clip in clips:
        mel = log_mel_spectrogram(np.pad(clip, (0, ENCODER_INPUT_FRAMES * 160 - clip.size)))
        theirs = ctranslate2.encode_mel(mel)
        ours = model(torch.from_numpy(mel[None]))[0, -1].numpy()
        worst = max(worst, float(np.abs(ours - theirs).max()))
    return worst


def export_onnx(model: WhisperEncoderLayers, output: Path, quantize: bool = True) -> Path:
    """Write the encoder as ONNX (input ``mel`` (batch, 80, 400), output ``states``), int8 by default."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "encoder.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(1, N_MELS, ENCODER_INPUT_FRAMES),),
            str(plain),
            dynamo=False,
            input_names=["mel"],
            output_names=["states"],
            dynamic_axes={"mel": {0: "batch"}, "states": {0: "batch"}},
            opset_version=17,
        )
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(plain), str(output), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        else:
            output.write_bytes(plain.read_bytes())
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ENCODER_ONNX_PATH)
    parser.add_argument("--float32", action="store_true", help="skip the int8 quantisation")
    args = parser.parse_args(argv)
    model = WhisperEncoderLayers.from_ctranslate2()
    rng = np.random.default_rng(0)
    probe = [0.1 * rng.standard_normal(16_000 * seconds).astype(np.float32) for seconds in (1, 3)]
    print(f"largest difference from CTranslate2's last layer: {check_against_ctranslate2(model, probe):.2e}")
    print(f"wrote {export_onnx(model, args.output, quantize=not args.float32)}")


if __name__ == "__main__":
    main()
