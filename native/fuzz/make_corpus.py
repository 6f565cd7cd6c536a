"""Writes native/fuzz/corpus/<target>/seed-* from a fixtures dir the native tests wrote (native/tests/fixtures.py):
the real engine dirs' manifests and scheduler configs, the real banks (bank.json with the harness's placeholders,
bank.safetensors whole where small, else its header and a few bytes), the input PNGs, plus small variants made here
that the fixtures do not hold (other dtypes, spacings, PNG colour types and depths), and small ONNX models with
external data in every place a tensor can be (onnx's helper; the fixtures' models keep their weights inside).
Crash inputs the fuzzers found stay in the corpus as regression-* files; this script only replaces seed-* files.

    python native/fuzz/make_corpus.py build/native/tests/fixtures
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEPARATOR = b"\n--bank.safetensors--\n"  # fuzz_bank.cpp's split between bank.json and bank.safetensors
ENGINE_DIGEST = "18116f2767aaca58bb67a4cd39c922786beebeac83dbbf62579970bc4cbddf7d"  # fuzz_bank.cpp's kEngineDigest


def safetensors(tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict | None = None) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset, body = 0, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        body += data
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + body


def head_only(data: bytes, extra: int = 16) -> bytes:
    """A safetensors file's length, header and its first `extra` data bytes."""
    return data[: 8 + struct.unpack("<Q", data[:8])[0] + extra]


def png(width: int, height: int, color: int, depth: int, rows: list[bytes], *, interlace: int = 0,
        chunks: list[tuple[bytes, bytes]] = ()) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    raw = b"".join(b"\0" + r for r in rows)  # filter type 0 on every row
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for kind, data in chunks:
        out += chunk(kind, data)
    return out + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def local_paths_dropped(value):
    """The JSON with every absolute path (a build machine's checkout) shortened to its file name."""
    if isinstance(value, dict):
        return {k: local_paths_dropped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [local_paths_dropped(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value


def write(target: str, name: str, data: bytes) -> None:
    path = HERE / "corpus" / target / f"seed-{name}"
    path.write_bytes(data)


def main(fixtures: Path) -> None:
    for target in ("manifest", "safetensors", "bank", "scheduler", "png", "onnx"):
        folder = HERE / "corpus" / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()

    # manifest.json of real engine dirs: compact (what mutation works on), one as written (indented).
    engines = fixtures / "engines"
    for name in ("tiny", "tiny_fp16", "demo_int8", "bad_manifest"):
        manifest = local_paths_dropped(json.loads((engines / name / "manifest.json").read_text()))
        write("manifest", name, json.dumps(manifest, separators=(",", ":")).encode())
        if name == "tiny":
            write("manifest", "tiny_as_written", json.dumps(manifest, indent=2).encode())
            # as a real-size UNet is written: weights in external data, listed and hashed (fuzz_manifest's stand-in
            # onnx/unet.onnx names onnx/unet.onnx.data)
            manifest["files"]["onnx/unet.onnx.data"] = "0" * 64
            manifest["components"]["unet"]["artifacts"][0]["data_files"] = ["onnx/unet.onnx.data"]
            write("manifest", "tiny_external_data", json.dumps(manifest, separators=(",", ":")).encode())
            # with a TensorRT plan's record (what check_compatible reads through plan_record)
            manifest["files"]["tensorrt/unet.plan"] = "0" * 64
            manifest["components"]["unet"]["artifacts"].append({
                "format": "tensorrt", "precision": "fp16", "file": "tensorrt/unet.plan", "tensorrt_version": "10.3.0",
                "compute_capability": "8.7", "verification": {"passed": True, "max_abs_diff": 0.01}})
            write("manifest", "tiny_tensorrt", json.dumps(manifest, separators=(",", ":")).encode())

    # scheduler configs: the engine dirs' and the DDIM variants the golden tests use, then options the port refuses
    # or reads differently (trained betas, DPM-Solver++ keys, a short schedule).
    write("scheduler", "tiny", (engines / "tiny" / "scheduler" / "scheduler_config.json").read_bytes())
    for i in range(3):
        write("scheduler", f"ddim_{i}", (fixtures / f"ddim_{i}.json").read_bytes())
    base = json.loads((fixtures / "ddim_0.json").read_text())
    variants = {
        "trained_betas": {"num_train_timesteps": 50, "trained_betas": [0.001 * (i + 1) for i in range(50)]},
        "dpmpp": {"solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False,
                  "final_sigmas_type": "sigma_min", "algorithm_type": "dpmsolver++"},
        "short_trailing": {"num_train_timesteps": 100, "timestep_spacing": "trailing", "steps_offset": 0},
        "clip_v": {"clip_sample": True, "clip_sample_range": 2.5, "prediction_type": "v_prediction",
                   "set_alpha_to_one": True},
    }
    for name, change in variants.items():
        write("scheduler", name, json.dumps({**base, **change}).encode())

    # safetensors: the fixtures' small files whole, the large ones' headers and a few bytes, and other dtypes.
    banks = fixtures / "banks"
    for name in ("bad_rank2", "bad_negative_dim", "bad_huge_shape"):
        write("safetensors", name, (banks / name / "bank.safetensors").read_bytes())
    write("safetensors", "roundtrip", (fixtures / "roundtrip.safetensors").read_bytes())
    write("safetensors", "tiny_bank_head", head_only((banks / "tiny_plain" / "bank.safetensors").read_bytes()))
    write("safetensors", "constants", (engines / "tiny" / "torch" / "constants.safetensors").read_bytes())
    write("safetensors", "golden_head", head_only((fixtures / "golden_core.safetensors").read_bytes(), 0))
    write("safetensors", "dtypes", safetensors({
        "f64": ("F64", [2], struct.pack("<2d", 1.5, -2.0)),
        "i32": ("I32", [1, 2], struct.pack("<2i", 7, -7)),
        "i64": ("I64", [], struct.pack("<q", 1 << 40)),
        "empty": ("F32", [0, 3], b""),
    }, metadata={"format": "pt"}))

    # banks: bank.json with "$TENSORS_SHA256" and the harness's engine digest, then bank.safetensors.
    def bank(info_file: Path, tensors: bytes) -> bytes:
        info = local_paths_dropped(json.loads(info_file.read_text()))
        info["tensors_sha256"] = "$TENSORS_SHA256"
        info["engine_manifest_sha256"] = ENGINE_DIGEST
        return json.dumps(info).encode() + SEPARATOR + tensors

    write("bank", "tiny_plain", bank(banks / "tiny_plain" / "bank.json",
                                     (banks / "tiny_plain" / "bank.safetensors").read_bytes()))
    small = safetensors({name: ("F32", [2, 1, 4], bytes(32)) for name in ("text_embeds", "semantic_tokens")})
    write("bank", "demo_hole_small", bank(banks / "demo_hole" / "bank.json", small))
    for name in ("bad_rank2", "bad_negative_dim", "bad_huge_shape"):
        write("bank", name, bank(banks / name / "bank.json", (banks / name / "bank.safetensors").read_bytes()))

    # PNGs: the fixtures' inputs (8-bit RGB and RGBA, 16-bit gray, masks, a truncated file), then tiny ones of every
    # colour type and depth the decoder converts (palette with transparency, gray+alpha, 1/2/4-bit gray, 16-bit
    # colour, interlaced).
    inputs = fixtures / "inputs"
    for name in ("rgb64.png", "rgba80.png", "gray12.png", "mask_small.png", "gray16_wide_mask.png", "truncated.png",
                 "not_a_png.png"):
        write("png", name.removesuffix(".png"), (inputs / name).read_bytes())
    write("png", "gray8", png(3, 2, 0, 8, [b"\x00\x80\xff", b"\x10\x20\x30"]))
    write("png", "gray16", png(2, 2, 0, 16, [b"\x00\x01\xff\xff", b"\x12\x34\x80\x00"]))
    write("png", "gray1", png(9, 2, 0, 1, [b"\xa5\x80", b"\x5a\x00"]))
    write("png", "gray2", png(3, 1, 0, 2, [b"\x6c"]))
    write("png", "gray4", png(3, 1, 0, 4, [b"\x1f\x80"]))
    write("png", "rgb8", png(2, 1, 2, 8, [b"\x01\x02\x03\xfd\xfe\xff"]))
    write("png", "rgb16", png(1, 2, 2, 16, [b"\x01\x02\x03\x04\x05\x06", b"\xff\xff\x00\x00\x80\x80"]))
    write("png", "rgba8", png(1, 1, 6, 8, [b"\x10\x20\x30\x40"]))
    write("png", "rgba16", png(1, 1, 6, 16, [b"\x10\x11\x20\x21\x30\x31\x40\x41"]))
    write("png", "gray_alpha8", png(2, 1, 4, 8, [b"\x10\xff\x80\x00"]))
    write("png", "gray_alpha16", png(1, 1, 4, 16, [b"\x10\x11\xff\xff"]))
    write("png", "palette_trns", png(2, 2, 3, 8, [b"\x00\x01", b"\x01\x00"],
                                     chunks=[(b"PLTE", b"\xff\x00\x00\x00\xff\x00"), (b"tRNS", b"\x80")]))
    write("png", "palette4", png(4, 1, 3, 4, [b"\x01\x10"], chunks=[(b"PLTE", b"\x00\x00\x00\xff\xff\xff")]))
    write("png", "interlaced", png(5, 5, 2, 8, [bytes(range(15))] * 5, interlace=1))

    onnx_models()


def onnx_models() -> None:
    """ONNX graphs whose tensors live in external files (data_location EXTERNAL, external_data location/offset/length):
    an initializer, a Constant node's value, a subgraph's initializer, a sparse initializer, a function's node, a
    training-info graph; and one without external data."""
    import onnx
    from onnx import TensorProto, helper

    def external(name: str, location: str) -> TensorProto:
        t = helper.make_tensor(name, TensorProto.FLOAT, [2], [0.0, 0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "8")):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    const = helper.make_node("Constant", [], ["c"], value=external("c", "const.bin"))
    add = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([const, add], "g", [x], [y], initializer=[external("w", "unet.onnx.data")])
    write("onnx", "initializer_and_constant", helper.make_model(graph).SerializeToString())

    branch = helper.make_graph([helper.make_node("Identity", ["v"], ["y"])], "branch", [], [y],
                               initializer=[external("v", "branch.bin")])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    if_node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    write("onnx", "subgraph", helper.make_model(helper.make_graph([if_node], "g", [cond], [y])).SerializeToString())

    sparse = helper.make_sparse_tensor(external("values", "sparse.bin"),
                                       helper.make_tensor("indices", TensorProto.INT64, [2], [0, 1]), [4])
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["y"])], "g", [], [y])
    sparse.values.name = "s"
    graph.sparse_initializer.append(sparse)
    model = helper.make_model(graph)
    function = helper.make_function("local", "f", ["a"], ["b"],
                                    [helper.make_node("Constant", [], ["b"], value=external("k", "function.bin"))],
                                    [helper.make_opsetid("", 18)])
    model.functions.append(function)
    info = model.training_info.add()
    info.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[external("t", "train.bin")]))
    write("onnx", "sparse_function_training", model.SerializeToString())

    weights = helper.make_tensor("w", TensorProto.FLOAT, [2], [1, 2])
    plain = helper.make_graph([add], "g", [x], [y], initializer=[weights])
    write("onnx", "no_external_data", helper.make_model(plain).SerializeToString())
    onnx.checker.check_model(helper.make_model(plain))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
