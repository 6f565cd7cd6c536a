"""acsdk-native's failures as a user meets them (issue 34 §4), run by ctest after fixtures.py make:

    failures.py list                 the case names (CMake reads them at configure time)
    failures.py run DIR NAME BIN     run acsdk-native (BIN) on case NAME, with inputs made under DIR/failures/NAME

Every case is a file or flag nobody vouched for: the exit status native/README.md documents (2: bad input, 1: any
other failure), one stderr line naming the argument and the file or field (never a JSON or std:: library's own
text), and nothing written: no --out, no label, no temporary beside them. Cases that need another user (a sticky
directory's file, a directory this user may not search) run the binary as `nobody` through setpriv where ctest runs
as root, and are skipped (ctest's SKIP_RETURN_CODE 77) where neither root nor setpriv is at hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

E = "^acsdk-native synth: error: "
SKIP = 77
NOBODY = 65534
LIBRARY_TEXT = re.compile(r"json\.exception|map::at|_M_range_check|basic_string|filesystem error|std::")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _engines(fx: Path, work: Path, edit=None, scheduler=None, onnx=None) -> tuple[Path, Path]:
    """A copy of the tiny engine dir with its manifest edited (`edit(manifest)`), its scheduler config edited
    (`scheduler(config)`) or an ONNX graph edited (`onnx(name, model) -> None`), every sha256 recorded again, and a
    sound bank for it: what is refused is the content, not a hash."""
    dest, bank = work / "engines", work / "bank"
    shutil.copytree(fx / "engines" / "tiny", dest, ignore=shutil.ignore_patterns("cache"))
    manifest = json.loads((dest / "manifest.json").read_text())
    if scheduler:
        path = dest / "scheduler" / "scheduler_config.json"
        config = json.loads(path.read_text())
        scheduler(config)
        path.write_text(json.dumps(config))
        manifest["files"]["scheduler/scheduler_config.json"] = _sha(path)
    if onnx:
        import onnx as onnx_lib

        for rel in list(manifest["files"]):
            if rel.endswith(".onnx"):
                model = onnx_lib.load(str(dest / rel))
                if onnx(Path(rel).stem, model):
                    onnx_lib.save(model, str(dest / rel))
                    manifest["files"][rel] = _sha(dest / rel)
    if edit:
        edit(manifest)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    shutil.copytree(fx / "banks" / "tiny_plain", bank)
    info = json.loads((bank / "bank.json").read_text())
    info["engine_manifest_sha256"] = _sha(dest / "manifest.json")
    (bank / "bank.json").write_text(json.dumps(info))
    return dest, bank


def _component(manifest: dict, name: str) -> dict:
    return manifest["components"][name]


def _manifest_root_array(fx, work):
    (work / "engines").mkdir()
    (work / "engines" / "manifest.json").write_text("[1, 2]")
    return {"engines": work / "engines"}


def _manifest_sections_wrong_type(fx, work):
    engines, bank = _engines(fx, work, edit=lambda m: m.update(model=[64, 64]))
    return {"engines": engines, "bank": bank}


def _output_without_name(fx, work):
    engines, bank = _engines(fx, work, edit=lambda m: _component(m, "vae_encoder").update(outputs=[{"dtype": "f"}]))
    return {"engines": engines, "bank": bank}


def _artifact_without_precision(fx, work):
    """An fp16 VAE encoder whose second artifact lacks its precision: has_artifact (the fp32 variant's lookup)
    reads it after the first one opened."""

    def edit(m):
        enc = _component(m, "vae_encoder")
        enc["precision"] = "fp16"
        enc["artifacts"] = [{**enc["artifacts"][0], "precision": "fp16"}, {"format": "onnx", "file": "x.onnx"}]

    engines, bank = _engines(fx, work, edit=edit)
    return {"engines": engines, "bank": bank}


def _missing_output(fx, work):
    """The VAE encoder's graph names its output 'moments'; the manifest (and the runtime) read 'latent_moments'."""

    def rename(stem, model):
        if stem != "vae_encoder":
            return False
        for node in model.graph.node:
            node.output[:] = ["moments" if o == "latent_moments" else o for o in node.output]
        for out in model.graph.output:
            if out.name == "latent_moments":
                out.name = "moments"
        return True

    engines, bank = _engines(fx, work, onnx=rename)
    return {"engines": engines, "bank": bank}


def _scheduler(**changes):
    def make(fx, work):
        engines, bank = _engines(fx, work, scheduler=lambda c: c.update(changes))
        return {"engines": engines, "bank": bank}

    return make


def _model(**changes):
    def make(fx, work):
        engines, bank = _engines(fx, work, edit=lambda m: m["model"].update(changes))
        return {"engines": engines, "bank": bank}

    return make


def _settings(**changes):
    def make(fx, work):
        engines, bank = _engines(fx, work, edit=lambda m: m["settings"].update(changes))
        return {"engines": engines, "bank": bank}

    return make


def _bank_root_array(fx, work):
    shutil.copytree(fx / "banks" / "tiny_plain", work / "bank")
    (work / "bank" / "bank.json").write_text("[1, 2]")
    return {"bank": work / "bank"}


def _out_directory(fx, work):
    (work / "out.png").mkdir()
    return {"out": work / "out.png", "mask-out": work / "label.png"}


def _mask_out_directory(fx, work):
    (work / "label.png").mkdir()
    return {"out": work / "out.png", "mask-out": work / "label.png"}


def _sticky_other_users_label(fx, work):
    """--mask-out names a root-owned file in a sticky world-writable directory; the run is nobody's: rename may not
    replace it (EPERM), so --out must not be written either (was: --out renamed first, then exit 2)."""
    sticky = work / "shared"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (sticky / "label.png").write_bytes(b"someone else's label")
    os.chmod(sticky / "label.png", 0o644)
    return {"out": sticky / "out.png", "mask-out": sticky / "label.png", "__as": NOBODY,
            "__keep": [sticky / "label.png"]}  # fmt: skip


def _engines_not_searchable(fx, work):
    """The engine dir sits in a directory this user may not search (EACCES from stat): was std::filesystem's
    'filesystem error: status: Permission denied', exit 1."""
    locked = work / "locked"
    locked.mkdir()
    shutil.copy(fx / "engines" / "tiny" / "manifest.json", locked / "manifest.json")
    os.chmod(locked, 0o700 if os.geteuid() == 0 else 0o000)
    return {"engines": locked, "__as": NOBODY if os.geteuid() == 0 else None, "__cleanup": [locked]}


def _long_name(fx, work):
    """An --out whose name is 250 bytes (NAME_MAX is 255): the temporary beside it (name + '.tmp-' + 16 hex) used
    to be too long to create. Not a failure: the run succeeds."""
    return {"out": work / ("o" * 246 + ".png"), "mask-out": work / "label.png", "__ok": True}


# name -> (setup(fixtures, work) -> argument changes, exit status, regex of the one stderr line). Paths are absolute;
# keys starting with "__" are the case's own: "__as" a uid to run as, "__keep" files that must be left as they were,
# "__ok" a run that must succeed and write both outputs.
CASES = {
    "manifest_root_array": (_manifest_root_array, 1, E + r"engines: \S*manifest\.json holds a list, not a JSON object"),
    "manifest_section_wrong_type": (_manifest_sections_wrong_type, 1,
                                    E + r"engines: \S*manifest\.json: 'model' is a list"),
    "manifest_output_without_name": (_output_without_name, 1,
                                     E + r"engines: .*component 'vae_encoder' is malformed: outputs\[0\]\.name: "
                                         r"expected a string"),
    "manifest_artifact_without_precision": (_artifact_without_precision, 1,
                                            E + r"engines: .*component 'vae_encoder' is malformed: "
                                                r"artifacts\[1\]\.precision: expected a string, got nothing"),
    "engine_output_missing": (_missing_output, 1,
                              E + r"engines: vae_encoder: the model has no output 'latent_moments', which "
                                  r"manifest\.json lists \(it has 'moments'\)"),
    "scheduler_steps_offset_past_schedule": (_scheduler(steps_offset=100), 1,
                                             E + r"engines: scheduler/scheduler_config\.json: steps_offset 100 puts "
                                                 r"DDIM-50's timestep 1080 outside \[0, 999\]"),
    "scheduler_empty_trained_betas": (_scheduler(trained_betas=[]), 1,
                                      E + r"engines: scheduler/scheduler_config\.json: trained_betas: expected a list "
                                          r"of num_train_timesteps \(1000\) numbers in \[0, 1\), got 0 values"),
    "scheduler_negative_train_timesteps": (_scheduler(num_train_timesteps=-5), 1,
                                           E + r"engines: scheduler/scheduler_config\.json: num_train_timesteps: "
                                               r"expected an integer in \[50, 100000\].*, got -5"),
    "scheduler_train_timesteps_1e300": (_scheduler(num_train_timesteps=1e300), 1,
                                        E + r"engines: scheduler/scheduler_config\.json: num_train_timesteps: "
                                            r"expected an integer in \[50, 100000\].*, got 1e\+300"),
    "geometry_scaling_factor_zero": (_model(vae_scaling_factor=0), 1,
                                     E + r"engines: \S*manifest\.json: model\.vae_scaling_factor: expected a finite "
                                         r"number in \(0, 1000\], got 0"),
    "geometry_height_1e300": (_settings(height=1e300), 1,
                              E + r"engines: \S*manifest\.json: settings\.height: expected an integer in \[1, 8192\], "
                                  r"got 1e\+300"),
    "geometry_channels_huge": (_model(latent_channels=10**12), 1,
                           E + r"engines: \S*manifest\.json: model\.latent_channels: expected an integer in "
                               r"\[1, 256\], got 1000000000000"),
    "bank_root_array": (_bank_root_array, 2, E + r"bank: expected a bank\.json written by `acsdk prepare` \(a JSON "
                                              r"object\), got \S*bank\.json' holding \[1,2\]"),
    "out_is_a_directory": (_out_directory, 2, E + r"out: expected a file path, got '\S*out\.png', a directory"),
    "mask_out_is_a_directory": (_mask_out_directory, 2,
                                E + r"mask-out: expected a file path, got '\S*label\.png', a directory"),
    "mask_out_other_users_file_in_sticky_dir": (_sticky_other_users_label, 2,
                                                E + r"mask-out: expected a path this user may replace, got "
                                                    r"'\S*label\.png' \(another user's file in the sticky directory"),
    "engines_not_searchable": (_engines_not_searchable, 2,
                               E + r"engines: expected a path this user can read, got '\S*locked/manifest\.json' "
                                   r"\(Permission denied\)"),
    "out_name_of_250_bytes": (_long_name, 0, None),
}  # fmt: skip

# Every numeric flag out of its range (or not a number): exit 2 before any work, one line naming the flag, its
# range and what came. --bit-depth 4294967304 used to be narrowed to 8 and accepted; --roi-padding 2^63 - 1
# overflowed 2 * padding; --seed 2^64 - 1 (torch's largest) was refused as "an integer".
FLAGS = [
    ("steps", "0"), ("steps", "1000001"), ("strength", "0"), ("strength", "1.5"), ("guidance", "-1"),
    ("guidance", "1e4"), ("semantic-scale", "-1e4"), ("roi-padding", "-1"), ("roi-padding", "9223372036854775807"),
    ("roi-padding", "99999999999999999999"), ("roi-min-size", "0"), ("roi-min-size", "1000000000"),
    ("blur-sigma", "-1"), ("blur-sigma", "1e5"), ("blur-sigma", "nan"), ("bit-depth", "0"), ("bit-depth", "17"),
    ("bit-depth", "4294967304"), ("cfg-cutoff", "1.5"), ("cfg-cutoff", "inf"), ("repeat", "0"),
    ("repeat", "1000000000"), ("seed", "-1"), ("seed", "18446744073709551616"), ("seed", "7x"), ("steps", "2.5"),
]  # fmt: skip
FLAG_LINE = E + r"(?P<flag>[a-z-]+): expected (an integer|a number) in [\[(]-?[0-9.e+]+, [0-9.e+]+\], got (?P<got>.+)$"

BASE = {"engines": "engines/tiny", "bank": "banks/tiny_plain", "image": "inputs/rgb64.png",
        "mask": "inputs/rgb64_mask.png", "steps": "2"}  # fmt: skip


def _run(binary: str, args: dict, uid: int | None = None, cache: Path | None = None) -> subprocess.CompletedProcess:
    argv = [binary, "synth"]
    for k, v in args.items():
        argv += [f"--{k}", str(v)]
    env = {**os.environ, "ACSDK_CACHE": str(cache)} if cache else None
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


def _flags(fx: Path, binary: str, work: Path) -> int:
    ok = True
    for flag, value in FLAGS:
        args = {k: fx / v if k != "steps" else v for k, v in BASE.items()}
        args.update({"out": work / "out.png", flag: value})
        run = _run(binary, args)
        lines = run.stderr.strip().splitlines()
        m = re.match(FLAG_LINE, lines[0]) if len(lines) == 1 else None
        good = run.returncode == 2 and m is not None and m["flag"] == flag and value in m["got"]
        good = good and not (work / "out.png").exists() and not list(work.iterdir())
        print(f"--{flag} {value}: exit {run.returncode}, {run.stderr.strip()!r}: {'ok' if good else 'FAIL'}")
        ok = ok and good
    return 0 if ok else 1


def _can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def run_case(fx: Path, name: str, binary: str) -> int:
    work = fx / "failures" / name
    if work.exists():
        for p in [work, *work.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if name == "numeric_flags":
        return _flags(fx, binary, work)
    setup, status, pattern = CASES[name]
    changes = setup(fx, work)
    uid = changes.pop("__as", None)
    keep = changes.pop("__keep", [])
    cleanup = changes.pop("__cleanup", [])
    must_succeed = changes.pop("__ok", False)
    if uid is not None and not _can_switch_user():
        print(f"{name}: skipped (needs root and setpriv to run as another user)")
        return SKIP
    if uid is not None:  # nobody writes into work/ and its own cache, nowhere else
        os.chmod(work, 0o777)
    args = {k: fx / v if k != "steps" else v for k, v in BASE.items()}
    args.update({"out": work / "out.png", **changes})
    kept = {p: _sha(p) for p in keep}
    try:
        run = _run(binary, args, uid, cache=work / "cache")
    finally:
        for p in cleanup:
            os.chmod(p, 0o755)
    lines = run.stderr.strip().splitlines()
    print(f"{name}: exit {run.returncode}, stderr: {run.stderr.strip()!r}")
    outputs = [Path(args["out"]), Path(args.get("mask-out", Path(args["out"]).with_name("out_mask.png")))]
    if must_succeed:
        ok = run.returncode == 0 and all(p.is_file() for p in outputs)
    else:
        ok = run.returncode == status and len(lines) == 1 and re.search(pattern, lines[0]) is not None
        ok = ok and not LIBRARY_TEXT.search(lines[0]) if lines else False
        written = [p for p in outputs if p.is_file() and p not in kept]
        if written:
            print(f"{name}: written although it failed: {[str(p) for p in written]}")
        ok = ok and not written
    changed = [str(p) for p, sha in kept.items() if not p.is_file() or _sha(p) != sha]
    leftovers = [str(p) for p in work.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    if changed or leftovers:
        print(f"{name}: changed {changed}, temporaries left {leftovers}")
    return 0 if ok and not changed and not leftovers else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        print(";".join([*CASES, "numeric_flags"]))
        return 0
    if argv[:1] == ["run"] and len(argv) == 4:
        return run_case(Path(argv[1]).resolve(), argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
