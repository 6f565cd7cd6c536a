"""`python -m acsdk.train`: train the SGA adapter (BlipProj, ImageProj, to_k_ip/to_v_ip) on MVTec-shaped data.

The paper's recipe: self-reconstruction of the training-split anomaly images; inpainting mask = the image's
own defect mask in {0, 1}; condition = the image's own CSM + ASEA features (Q-Former output, computed once
and cached, since only the projections after it train); epsilon-MSE with t ~ U{0..999}; AdamW 1e-4 /
wd 1e-2; features, caption, or both dropped 5 % each (for CFG). Everything else stays frozen.

OUT is an acsdk checkpoint at every save (base parts written once, the adapter replaced atomically), plus
OUT/training/state.safetensors (step, config, RNG, optimizer, adapter: one file, replaced atomically) so a resume
continues bit for bit, and loss.jsonl / loss.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from runtime.dtypes import PRECISIONS
from runtime.files import atomic_path, atomic_write
from runtime.state import load_optimizer_tensors, optimizer_tensors, read_state
from runtime.state import save_state as save_state_file

from ..data.mvtec import load_category
from ..data.prompts import PromptSource
from ..errors import ACSDKError, InputError, TrainingError
from ..inference import imaging
from ..inference.sampler import sample_latent
from ..inference.settings import SamplingSettings
from ..models.asea import run_asea
from ..models.checkpoint import ADAPTER_FILE, AnomalyControlModel, checkpoint_digest
from ..models.components import VAEEncoder
from ..models.sga import sga_processors
from .configargs import add_config_arguments, config_from_arguments

log = logging.getLogger(__name__)
STATE_DIR = "training"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-2
    seed: int = 0
    save_every: int = 50
    drop_features: float = 0.05
    drop_caption: float = 0.05
    drop_both: float = 0.05
    asea_steps: int = SamplingSettings.asea_steps  # the features are made as inference makes them
    precision: str = "fp32"  # "bf16" (CPU or CUDA) or "fp16" (CUDA, with loss scaling): autocast, fp32 weights
    augment: bool = False  # random horizontal / vertical flips of each (image, mask) pair


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise InputError("precision", f"one of {sorted(PRECISIONS)}", repr(precision))
    if precision == "fp16" and device.type != "cuda":
        raise InputError("precision", "fp32 or bf16 on a CPU (fp16 training needs CUDA)", f"fp16 on {device}")


def trainable_parameters(model: AnomalyControlModel) -> list[torch.nn.Parameter]:
    params = list(model.projection.parameters())
    for proc in sga_processors(model.unet).values():
        params += list(proc.parameters())
    return params


@torch.no_grad()
def encode_features(
    model: AnomalyControlModel, image: torch.Tensor, mask: torch.Tensor, text: str, asea_steps: int
) -> torch.Tensor:
    """The mean Q-Former query output after ASEA for one (image, own mask, caption): [qformer_dim]."""
    dev = next(model.blip2.parameters()).device
    c = model.config
    pixels, region = imaging.reference_inputs(
        image, mask, c.reference_window, model.vision_image_size, c.image_mean, c.image_std, model.attention_grid
    )
    e_v = model.blip2.vision_model(pixel_values=pixels.to(dev)).last_hidden_state
    tok = model.qformer_tokenizer(
        text, padding="max_length", truncation=True, max_length=model.config.qformer_max_length, return_tensors="pt"
    )
    ids, attn = tok.input_ids.to(dev), tok.attention_mask.to(dev)
    res = run_asea(model.qformer, e_v, ids, attn, region, steps=asea_steps)
    query, _ = model.qformer(res.image_tokens, ids, attn)
    return query.mean(dim=1)[0].cpu()


PER_SAMPLE = ("image", "mask", "text", "feature")


def augment_batch(batch: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    """Flip each image with its mask, left-right and up-down, each with p = 0.5 (draws from `g`).

    The cached semantic feature stays: it summarises what the defect is, which a flip does not change.
    """
    n = batch["image"].shape[0]
    out = dict(batch)
    for dim, flip in ((-1, torch.rand(n, generator=g) < 0.5), (-2, torch.rand(n, generator=g) < 0.5)):
        f = flip.view(n, 1, 1, 1)
        for key in ("image", "mask"):
            out[key] = torch.where(f.to(out[key].device), out[key].flip(dim), out[key])
    return out


def build_dataset(
    model: AnomalyControlModel,
    data: Path,
    category: str,
    cache_dir: Path,
    asea_steps: int,
    model_digest: str,
    captions: str | None = None,
) -> dict[str, torch.Tensor]:
    """Training-split anomalies at model size with cached features; keyed by image, mask, text and model."""
    cat = load_category(data, category)
    prompts = PromptSource(captions=captions)
    h, w = model.config.height, model.config.width
    images, masks, texts, feats = [], [], [], []
    cache_dir.mkdir(parents=True, exist_ok=True)
    for defect in cat.anomalies:
        for sample in cat.references(defect):
            image = imaging.load_image(sample.image, "image")
            mask = imaging.load_mask(sample.mask, "mask")
            text = prompts(category, defect, sample.image.relative_to(cat.root))
            key = hashlib.sha256(
                image.numpy().tobytes()
                + mask.numpy().tobytes()
                + text.encode()
                + model_digest.encode()
                + str(asea_steps).encode()
            ).hexdigest()
            file = cache_dir / f"{key}.safetensors"
            if file.is_file():
                f = load_file(str(file))["feature"]
            else:
                f = encode_features(model, image, mask, text, asea_steps).contiguous()
                with atomic_path(file) as tmp:
                    save_file({"feature": f}, str(tmp))
            images.append(imaging.resize_image(image, h, w))
            masks.append(imaging.resize_mask(mask, h, w))
            texts.append(text)
            feats.append(f)
    if not images:
        raise InputError("data", f"anomaly images in the training split of '{category}'", "none")
    tok = model.tokenizer(
        texts + [""],
        padding="max_length",
        truncation=True,
        max_length=model.tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        text_embeds = model.text_encoder(input_ids=tok.to(model.unet.device)).last_hidden_state.cpu()
    return {
        "image": torch.stack(images),
        "mask": torch.stack(masks)[:, None],
        "text": text_embeds[:-1],
        "empty_text": text_embeds[-1:],
        "feature": torch.stack(feats),
    }


def loss_on_batch(
    model: AnomalyControlModel,
    batch: dict[str, torch.Tensor],
    g: torch.Generator,
    cfg: TrainConfig,
    num_train_timesteps: int,
    scheduler,
) -> torch.Tensor:
    """eps-MSE of the SGA UNet on one batch, with the 5/5/5 % condition dropouts (all randomness from `g`,
    a CPU generator, so a run draws the same numbers on every device)."""
    dev = model.unet.device
    batch = {k: v.to(dev) for k, v in batch.items()}
    x = batch["image"] * 2 - 1
    m = batch["mask"]
    n = x.shape[0]
    with torch.no_grad():
        moments = VAEEncoder(model.vae)(torch.cat([x, x * (m < 0.5)]))
        sf = float(model.vae.config.scaling_factor)
        latents = sample_latent(moments[:n], g, sf)
        masked = sample_latent(moments[n:], g, sf)
    mask_lat = imaging.latent_mask(m, latents.shape[-2:])
    noise = torch.randn(latents.shape, generator=g).to(dev)
    t = torch.randint(0, num_train_timesteps, (n,), generator=g).to(dev)
    noisy = scheduler.add_noise(latents, noise, t)
    r = torch.rand(n, generator=g).to(dev)
    drop_feat = (r < cfg.drop_features) | (
        (r >= cfg.drop_features + cfg.drop_caption) & (r < cfg.drop_features + cfg.drop_caption + cfg.drop_both)
    )
    drop_text = (r >= cfg.drop_features) & (r < cfg.drop_features + cfg.drop_caption + cfg.drop_both)
    feats = batch["feature"] * (~drop_feat).float()[:, None]  # dropped -> zero feature = the uncond tokens
    text = torch.where(drop_text[:, None, None], batch["empty_text"].expand_as(batch["text"]), batch["text"])
    autocast = torch.autocast(dev.type, dtype=PRECISIONS[cfg.precision], enabled=cfg.precision != "fp32")
    with autocast:
        sem = model.projection(feats)
        sample = torch.cat([noisy, mask_lat, masked], dim=1)
        context = torch.cat([text, sem], dim=1)
        scale = {"semantic_scale": torch.ones(1, device=dev)}
        pred = model.unet(sample, t, encoder_hidden_states=context, cross_attention_kwargs=scale)
    return F.mse_loss(pred.sample.float(), noise)


STATE_FILE = "state.safetensors"
_STATE_KIND = "acsdk-adapter-training-state"


def save_state(
    out: Path,
    model: AnomalyControlModel,
    optim: torch.optim.Optimizer,
    g: torch.Generator,
    step: int,
    cfg: TrainConfig,
    base_digest: str,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Everything a resume needs (step, config, RNG, optimizer, adapter, loss scaler) in ONE file, written atomically,
    so a crash never pairs a step with another step's state; then the checkpoint's adapter file, so OUT loads."""
    tensors = {"rng": g.get_state(), **optimizer_tensors(optim)}
    tensors.update({f"adapter.{k}": v for k, v in _adapter_tensors(model).items()})
    meta = {"step": step, "config": dataclasses.asdict(cfg), "base_digest": base_digest}
    if scaler is not None:
        meta["grad_scaler"] = scaler.state_dict()
    save_state_file(out / STATE_DIR / STATE_FILE, tensors, _STATE_KIND, meta)
    _write_adapter(out, model)


def _adapter_tensors(model: AnomalyControlModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.adapter_state_dict().items()}


def _write_adapter(out: Path, model: AnomalyControlModel) -> None:
    with atomic_path(out / ADAPTER_FILE) as tmp:
        save_file(_adapter_tensors(model), str(tmp), metadata={"format": "acsdk-adapter"})


def load_state(out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta, tensors) of the state `save_state` wrote."""
    file = out / STATE_DIR / STATE_FILE
    if not file.is_file():
        raise InputError("out", f"a training output with {STATE_DIR}/{STATE_FILE} to resume", f"'{out}'")
    kind, meta, tensors = read_state(file)
    if kind != _STATE_KIND:
        raise InputError("out", "a training state written by this version of acsdk.train", f"'{file}' of another kind")
    return meta, tensors


def _fixed(config: dict) -> dict:
    """The settings a resume must share: the step target and save cadence may change (extend a run)."""
    return {k: v for k, v in config.items() if k not in ("steps", "save_every")}


def train(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    category: str,
    out: str | os.PathLike,
    cfg: TrainConfig = TrainConfig(),
    resume: bool = False,
    captions: str | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Path:
    """Train (or with `resume`, continue) the adapter; `device` defaults to CUDA when present."""
    out = Path(out)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_precision(cfg.precision, dev)
    cat = load_category(data, category)  # validate the data before writing anything
    if not any(cat.references(d) for d in cat.anomalies):
        raise InputError("data", f"anomaly images in the training split of '{category}'", "none")
    base_digest = checkpoint_digest(checkpoint)
    if out.exists() and not resume:
        raise InputError("out", "a new directory, or --resume to continue training there", f"'{out}', which exists")
    if resume:
        meta, state = load_state(out)
        if _fixed(meta["config"]) != _fixed(dataclasses.asdict(cfg)) or meta["base_digest"] != base_digest:
            raise InputError(
                "resume",
                "the same base checkpoint and training config as the run being resumed",
                "another config or base checkpoint",
            )
        model = AnomalyControlModel.from_pretrained(out)
    else:
        model = AnomalyControlModel.from_pretrained(checkpoint)
        model.save_pretrained(out)
    model.to(dev)
    params = trainable_parameters(model)
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.projection.train()
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    step = 0
    if resume:
        # The adapter comes from the state, not from adapter.safetensors, which a crash may have left a save behind.
        adapter = {k.removeprefix("adapter."): v for k, v in state.items() if k.startswith("adapter.")}
        model.load_adapter_state_dict({k: v.to(dev) for k, v in adapter.items()}, out / STATE_DIR / STATE_FILE)
        _write_adapter(out, model)
        g.set_state(state["rng"])
        load_optimizer_tensors(optim, state)
        step = meta["step"]
    scaler = torch.amp.GradScaler(dev.type) if cfg.precision == "fp16" else None
    if scaler is not None and resume and "grad_scaler" in meta:
        scaler.load_state_dict(meta["grad_scaler"])
    dataset = build_dataset(
        model, Path(data), category, out / STATE_DIR / "features", cfg.asea_steps, base_digest, captions
    )
    dataset = {k: v.to(dev) for k, v in dataset.items()}  # once, not per step
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    n = dataset["image"].shape[0]
    log_file = out / STATE_DIR / "loss.jsonl"
    if resume and log_file.is_file():  # steps after the saved one are trained again: drop their lines
        kept = [x for x in log_file.read_text().splitlines() if _logged_step(x) <= step]
        atomic_write(log_file, "".join(x + "\n" for x in kept))
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not progress)
    while step < cfg.steps:
        optim.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.grad_accum):
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=g)
            batch = {k: (v[idx] if k in PER_SAMPLE else v) for k, v in dataset.items()}
            if cfg.augment:
                batch = augment_batch(batch, g)
            loss = loss_on_batch(model, batch, g, cfg, scheduler.config.num_train_timesteps, scheduler)
            scaled = loss / cfg.grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total += float(loss.detach()) / cfg.grad_accum
        if not torch.isfinite(torch.tensor(total)):
            raise TrainingError(
                f"loss became {total} at step {step + 1}; stopped, the checkpoint in {out} is "
                f"from step {step} (lower --lr or check the data)"
            )
        if scaler is not None:
            scaler.step(optim)  # skips the step when fp16 gradients overflowed
            scaler.update()
        else:
            optim.step()
        step += 1
        with open(log_file, "a") as f:
            f.write(json.dumps({"step": step, "loss": total}) + "\n")
        bar.update(1)
        bar.set_postfix(loss=f"{total:.4f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_state(out, model, optim, g, step, cfg, base_digest, scaler)
    bar.close()
    _loss_plot(log_file, out / STATE_DIR / "loss.png")
    return out


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):  # a line torn by a kill
        return float("inf")


def _loss_plot(log_file: Path, png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional
        return
    rows = [json.loads(x) for x in log_file.read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("eps-MSE")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="python -m acsdk.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="base acsdk checkpoint (its adapter is the starting point)")
    p.add_argument("--data", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--out", required=True)
    add_config_arguments(
        p,
        TrainConfig,
        help={
            "precision": "autocast dtype: fp32, bf16, fp16 (CUDA only)",
            "augment": "random flips of each (image, mask) pair",
        },
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--captions")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = config_from_arguments(TrainConfig, args)
    try:
        out = train(
            args.checkpoint,
            args.data,
            args.category,
            args.out,
            cfg,
            resume=args.resume,
            captions=args.captions,
            device=args.device,
        )
    except ACSDKError as exc:  # TrainingError and other failures 1, bad arguments 2 (ACSDKError.exit_code)
        print(f"acsdk.train: {'error: ' if exc.exit_code == 2 else ''}{exc}", file=sys.stderr)
        return exc.exit_code
    print(f"trained adapter: {out} (loss log: {out / STATE_DIR / 'loss.jsonl'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
