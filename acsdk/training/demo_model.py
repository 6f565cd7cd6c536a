"""`python -m acsdk.train_base`: train the demo model from scratch on procedural data, in the product's architecture.

No AnomalyControl (or SD) weights can be downloaded here, so the demo model is grown from nothing, in stages:

  vae      AutoencoderKL on random crops: L1 + MSE (defect pixels weighted up) + a tiny KL term
  unet     9-channel inpainting UNet + CLIP text encoder on cached latents: eps-MSE weighted inside the
           mask, caption dropout for CFG, EMA; the SGA branch is off (lambda = 0), as in an SD base model
  csm      vision tower + Q-Former queries learn to tell the defect classes apart (a linear head, then dropped)
  adapter  SGA: to_k_ip / to_v_ip start as copies of the trained to_k / to_v (IP-Adapter's init), then
           `acsdk.train` (the paper's adapter recipe) trains BlipProj, ImageProj and them

OUT/stages/<stage>/ is a full checkpoint after each stage (written atomically); `--resume` skips finished
stages, `--resume --redo STAGE` runs that stage and the later ones again. OUT/logs/ has one loss log per
stage and recipe.json (config, per-stage seconds, metrics). Every stage draws from its own seeded
generator: the same seed and config give the same model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from runtime.files import atomic_write

from ..data.procedural import DEFECTS, make_mvtec_like, render_sample
from ..data.prompts import PromptSource
from ..errors import InputError
from ..inference import imaging
from ..inference.sampler import sample_latent
from ..models.checkpoint import AnomalyControlModel
from ..models.components import VAEEncoder
from ..models.ip_adapter import copy_attention_to_adapter
from ..models.presets import PRESETS, build_model
from ..models.sga import sga_processors
from .configargs import add_config_arguments, config_from_arguments

log = logging.getLogger(__name__)

CATEGORY = "plate"
CLASSES = ("good", *DEFECTS)
STAGES = ("vae", "unet", "csm", "adapter")


@dataclass(frozen=True)
class BaseTrainConfig:
    preset: str = "demo"
    seed: int = 0
    samples: int = 8000  # procedural corpus size; ~1/5 of it defect-free
    vae_steps: int = 3000
    vae_batch: int = 32
    vae_crop: int = 32
    vae_lr: float = 1e-3
    csm_steps: int = 1500
    csm_batch: int = 32
    csm_lr: float = 1e-3
    unet_steps: int = 4500
    unet_batch: int = 32
    unet_lr: float = 6e-4
    warmup: int = 100
    ema: float = 0.998
    mask_weight: float = 4.0  # eps-MSE weight 1 + mask_weight inside the (latent) mask
    caption_dropout: float = 0.1
    adapter_steps: int = 1500
    adapter_per_defect: int = 45  # procedural anomalies per type; the paper's split trains on a third
    adapter_batch: int = 8
    adapter_lr: float = 1e-3  # BlipProj / ImageProj start random; the paper's 1e-4 is for far longer runs
    # Procedural defects of one type look alike, so a caption naming the type leaves the reference nothing
    # to add; dropping the caption often (the paper: 5 %) makes the reference alone steer the defect.
    adapter_drop_caption: float = 0.5


# -- data --------------------------------------------------------------------------------------------


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(mask, 2 * r + 1, stride=1, padding=r) if r > 0 else mask


def make_corpus(n: int, size: int, seed: int) -> dict[str, torch.Tensor | list[str]]:
    """Images with exact defect masks, and the training masks the inpainter sees.

    A training mask is the defect's own mask grown by 0-2 px (generation pastes into a reference mask's
    shape) or its box grown by 2-4 px; a defect-free image gets another defect's shape, so the model also
    learns to continue the surface. Captions follow the runtime's prompt template.
    """
    rng = np.random.default_rng(seed)
    prompts = PromptSource()
    kinds = rng.choice(len(CLASSES), size=n, p=[0.2] + [0.8 / len(DEFECTS)] * len(DEFECTS))
    images, masks, train_masks, captions = [], [], [], []
    for k in kinds:
        kind = CLASSES[int(k)]
        img, mask = render_sample(kind, size, rng)
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        if kind == "good":
            _, shape = render_sample(DEFECTS[int(rng.integers(len(DEFECTS)))], size, rng)
            tm = _dilate(torch.from_numpy(shape.astype(np.float32))[None, None], int(rng.integers(0, 3)))
            captions.append(f"a photo of a {CATEGORY}")
        elif rng.random() < 0.7:
            tm = _dilate(m, int(rng.integers(0, 3)))
            captions.append(prompts(CATEGORY, kind))
        else:
            ys, xs = np.nonzero(mask)
            g = int(rng.integers(2, 5))
            tm = torch.zeros_like(m)
            tm[..., max(0, ys.min() - g) : ys.max() + g + 1, max(0, xs.min() - g) : xs.max() + g + 1] = 1
            captions.append(prompts(CATEGORY, kind))
        images.append(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1))
        masks.append(m[0])
        train_masks.append(tm[0])
    return {
        "image": torch.stack(images),
        "mask": torch.stack(masks),
        "train_mask": torch.stack(train_masks),
        "label": torch.from_numpy(kinds.astype(np.int64)),
        "caption": captions,
    }


# -- shared loop -------------------------------------------------------------------------------------


def _optimise(
    name: str,
    params: list[torch.nn.Parameter],
    steps: int,
    lr: float,
    warmup: int,
    loss_fn: Callable[[], torch.Tensor],
    logs: Path,
    ema: list[torch.Tensor] | None = None,
    ema_decay: float = 0.0,
    weight_decay: float = 1e-2,
) -> float:
    """AdamW, warm-up + cosine schedule, grad-norm clip 1, optional EMA; returns the mean of the last 50 losses."""
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def factor(s: int) -> float:  # linear warm-up, then cosine decay to a tenth
        return min(1.0, (s + 1) / max(1, warmup)) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, s / steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, factor)
    losses: list[float] = []
    with open(logs / f"{name}.jsonl", "w") as f, tqdm(total=steps, desc=name, leave=False) as bar:
        for step in range(1, steps + 1):
            optim.zero_grad(set_to_none=True)
            loss = loss_fn()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: loss became {float(loss)} at step {step}; lower its lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - ema_decay)
            losses.append(float(loss.detach()))
            f.write(json.dumps({"step": step, "loss": losses[-1]}) + "\n")
            bar.update(1)
            if step % 50 == 0 or step == steps:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
                log.info("%s step %d/%d loss %.4f", name, step, steps, np.mean(losses[-50:]))
    return float(np.mean(losses[-50:]))


def _held(n: int) -> int:
    """How many corpus images (the last ones) the VAE and CSM stages hold out for their metric."""
    return max(1, min(256, n // 4))


# -- stages ------------------------------------------------------------------------------------------


def train_vae(model: AnomalyControlModel, corpus: dict, cfg: BaseTrainConfig, logs: Path) -> dict:
    vae = model.vae.train().requires_grad_(True)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    images, masks = corpus["image"], corpus["mask"]
    n, size, c = images.shape[0], images.shape[-1], cfg.vae_crop

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(0, n - _held(n), (cfg.vae_batch,), generator=g)
        y, x = (int(v) for v in torch.randint(0, size - c + 1, (2,), generator=g))
        img = images[idx, :, y : y + c, x : x + c] * 2 - 1
        w = 1 + cfg.mask_weight * masks[idx, :, y : y + c, x : x + c]
        post = vae.encode(img).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        err = rec - img
        return (w * (err.abs() + err**2)).mean() + 1e-6 * post.kl().mean()

    final = _optimise("vae", list(vae.parameters()), cfg.vae_steps, cfg.vae_lr, cfg.warmup, loss_fn, logs)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        held = images[-_held(n) :] * 2 - 1
        moments = VAEEncoder(vae)(held)
        mean = moments[:, :4]
        rec = vae.decode(mean).sample.clamp(-1, 1)
        mse = float(((rec - held) / 2).pow(2).mean())
        scale = 1.0 / float(mean.std())
    vae.register_to_config(scaling_factor=scale)
    return {"final_loss": final, "held_out_psnr_db": -10 * math.log10(mse), "scaling_factor": scale}


def train_csm(model: AnomalyControlModel, corpus: dict, cfg: BaseTrainConfig, logs: Path) -> dict:
    """Teach the vision tower + Q-Former queries to tell the surface classes apart.

    A linear head on the mean query output (thrown away after) is trained with cross-entropy. BLIP-2's
    own ITC against the class captions was tried first and stayed at chance (loss ln 5) for 1000 steps
    at this scale; the supervised head leaves chance within ~150 steps.
    """
    blip2 = model.blip2
    blip2.load_state_dict(build_model(cfg.preset, cfg.seed).blip2.state_dict())  # from init, whatever came before
    blip2.train().requires_grad_(True)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    torch.manual_seed(cfg.seed + 2)  # the head's init and the Q-Former's dropout
    head = torch.nn.Linear(blip2.config.qformer_config.hidden_size, len(CLASSES))
    size = model.vision_image_size
    c = model.config
    pixels = torch.cat([imaging.vision_pixels(im, size, c.image_mean, c.image_std) for im in corpus["image"]])
    labels = corpus["label"]
    n = pixels.shape[0]

    def logits(idx: torch.Tensor) -> torch.Tensor:
        e_v = blip2.vision_model(pixel_values=pixels[idx]).last_hidden_state
        queries = blip2.query_tokens.expand(len(idx), -1, -1)
        q = blip2.qformer(query_embeds=queries, encoder_hidden_states=e_v).last_hidden_state
        return head(q.mean(dim=1))

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(0, n - _held(n), (cfg.csm_batch,), generator=g)
        return F.cross_entropy(logits(idx), labels[idx])

    params = list(blip2.parameters()) + list(head.parameters())
    final = _optimise("csm", params, cfg.csm_steps, cfg.csm_lr, cfg.warmup, loss_fn, logs)
    blip2.eval().requires_grad_(False)
    with torch.no_grad():
        held = torch.arange(n - _held(n), n)
        acc = float((logits(held).argmax(-1) == labels[held]).float().mean())
    return {"final_loss": final, "held_out_class_accuracy": acc}


@torch.no_grad()
def _latent_moments(model: AnomalyControlModel, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    encoder = VAEEncoder(model.vae)
    return torch.cat([encoder(x[i : i + batch]) for i in range(0, len(x), batch)])


def train_unet(model: AnomalyControlModel, corpus: dict, cfg: BaseTrainConfig, logs: Path) -> dict:
    from diffusers import DDPMScheduler

    x = corpus["image"] * 2 - 1
    m = corpus["train_mask"]
    t0 = time.perf_counter()
    image_moments = _latent_moments(model, x)
    masked_moments = _latent_moments(model, x * (m < 0.5))
    log.info("encoded %d images and their masked copies in %.0f s", len(x), time.perf_counter() - t0)
    lat = image_moments.shape[-2:]
    mask_lat = imaging.latent_mask(m, lat)
    captions = corpus["caption"]
    unique = sorted(set(captions)) + [""]
    caption_idx = torch.tensor([unique.index(c) for c in captions])
    ids = model.tokenizer(
        unique, padding="max_length", truncation=True, max_length=model.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    unet, text_encoder = model.unet.train(), model.text_encoder.train()
    sga = {id(q) for proc in sga_processors(unet).values() for q in proc.parameters()}
    params = [p for p in unet.parameters() if id(p) not in sga] + list(text_encoder.parameters())
    for p in params:
        p.requires_grad_(True)
    ema = [p.detach().clone() for p in params]
    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    sf = float(model.vae.config.scaling_factor)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    n = x.shape[0]
    empty = len(unique) - 1
    sem = torch.zeros(cfg.unet_batch, model.config.num_semantic_tokens, model.text_encoder.config.hidden_size)
    off = {"semantic_scale": torch.zeros(1)}  # SGA off: the base model is text-only, as SD is

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.unet_batch,), generator=g)
        latents = sample_latent(image_moments[idx], g, sf)
        masked = sample_latent(masked_moments[idx], g, sf)
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=g)
        noisy = scheduler.add_noise(latents, noise, t)
        which = torch.where(torch.rand(len(idx), generator=g) < cfg.caption_dropout, empty, caption_idx[idx])
        text = text_encoder(input_ids=ids).last_hidden_state[which]
        sample = torch.cat([noisy, mask_lat[idx], masked], dim=1)
        pred = unet(sample, t, encoder_hidden_states=torch.cat([text, sem], dim=1), cross_attention_kwargs=off)
        w = 1 + cfg.mask_weight * F.interpolate(mask_lat[idx], size=lat)
        return (w * (pred.sample - noise) ** 2).mean()

    final = _optimise("unet", params, cfg.unet_steps, cfg.unet_lr, cfg.warmup, loss_fn, logs, ema, cfg.ema)
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    return {"final_loss": final}


def train_adapter(base: Path, out: Path, cfg: BaseTrainConfig, logs: Path) -> dict:
    from .adapter import TrainConfig, train

    data = out / "adapter-data"
    if data.exists():
        shutil.rmtree(data)
    make_mvtec_like(
        data, CATEGORY, size=64, n_good=4, n_per_defect=cfg.adapter_per_defect, defects=DEFECTS, seed=cfg.seed + 4
    )
    target = out / "adapter-run"
    if target.exists():
        shutil.rmtree(target)
    tc = TrainConfig(
        steps=cfg.adapter_steps,
        batch_size=cfg.adapter_batch,
        lr=cfg.adapter_lr,
        drop_caption=cfg.adapter_drop_caption,
        seed=cfg.seed + 5,
        save_every=cfg.adapter_steps,
    )
    train(base, data, CATEGORY, target, tc, progress=True)
    losses = [json.loads(line)["loss"] for line in (target / "training" / "loss.jsonl").read_text().splitlines()]
    shutil.copy(target / "training" / "loss.jsonl", logs / "adapter.jsonl")
    return {"final_loss": float(np.mean(losses[-50:])), "first_loss": float(np.mean(losses[:50]))}


# -- driver ------------------------------------------------------------------------------------------


def _save_stage(model: AnomalyControlModel, out: Path, stage: str) -> Path:
    path = out / "stages" / stage
    model.save_pretrained(path, overwrite=True)
    return path


def _settings_of(config: dict, stages: list[str]) -> dict:
    """The settings that shaped `stages`: the shared ones plus each stage's own (named `<stage>_...`)."""
    return {k: v for k, v in config.items() if k.split("_")[0] in stages or k.split("_")[0] not in STAGES}


def train_base(
    out: str | os.PathLike, cfg: BaseTrainConfig = BaseTrainConfig(), resume: bool = False, redo: str | None = None
) -> Path:
    """Run every stage; returns the finished checkpoint OUT/model (the adapter-trained demo model).

    With `resume`, finished stages are kept (their settings must not have changed) and the rest run with
    the given settings; `redo` also discards that stage and every later one.
    """
    if cfg.preset not in PRESETS:
        raise InputError("preset", f"one of {sorted(PRESETS)}", repr(cfg.preset))
    if redo is not None and redo not in STAGES:
        raise InputError("redo", f"one of {list(STAGES)}", repr(redo))
    out = Path(out)
    logs = out / "logs"
    recipe_file = logs / "recipe.json"
    if out.exists() and not resume:
        raise InputError("out", "a new directory, or --resume to continue there", f"'{out}', which exists")
    if resume and not recipe_file.is_file():
        raise InputError("out", "a train_base output with logs/recipe.json to resume", f"'{out}'")
    recipe = json.loads(recipe_file.read_text()) if resume else {"stages": {}}
    keep = STAGES[: STAGES.index(redo)] if redo else STAGES
    done = [s for s in keep if s in recipe["stages"] and (out / "stages" / s / "acsdk.json").is_file()]
    done = done[: next((i for i, s in enumerate(done) if s != STAGES[i]), len(done))]  # a prefix only
    config = dataclasses.asdict(cfg)
    if resume and _settings_of(recipe["config"], done) != _settings_of(config, done):
        raise InputError(
            "resume", f"the settings of the finished stages {done} unchanged", "changed settings (use --redo STAGE)"
        )
    recipe = {"config": config, "stages": {s: recipe["stages"][s] for s in done}}
    logs.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if done:
        model = AnomalyControlModel.from_pretrained(out / "stages" / done[-1])
    else:
        model = build_model(cfg.preset, cfg.seed)
        model.config = dataclasses.replace(model.config, negative_prompt="")  # CFG's uncond = the dropped caption
    corpus = None
    for stage in STAGES:
        if stage in done:
            log.info("stage %s already done (resume)", stage)
            continue
        if corpus is None and stage != "adapter":
            t0 = time.perf_counter()
            corpus = make_corpus(cfg.samples, model.config.height, cfg.seed)
            log.info("procedural corpus: %d images in %.0f s", cfg.samples, time.perf_counter() - t0)
        t0 = time.perf_counter()
        log.info("stage %s", stage)
        if stage == "vae":
            metrics = train_vae(model, corpus, cfg, logs)
        elif stage == "csm":
            metrics = train_csm(model, corpus, cfg, logs)
        elif stage == "unet":
            metrics = train_unet(model, corpus, cfg, logs)
            copy_attention_to_adapter(model)  # IP-Adapter's start, without the closed gate init_adapter adds
        else:
            metrics = train_adapter(out / "stages" / STAGES[STAGES.index(stage) - 1], out, cfg, logs)
            model = AnomalyControlModel.from_pretrained(out / "adapter-run")
        _save_stage(model, out, stage)
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        recipe["stages"][stage] = metrics
        log.info("stage %s done: %s", stage, metrics)
        atomic_write(recipe_file, json.dumps(recipe, indent=2))
    return model.save_pretrained(out / "model", overwrite=True)  # the last stage's model, in memory


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m acsdk.train_base", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="keep the stages OUT already finished")
    p.add_argument("--redo", choices=STAGES, help="with --resume: run this stage and the later ones again")
    add_config_arguments(p, BaseTrainConfig)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = config_from_arguments(BaseTrainConfig, args)
    try:
        final = train_base(args.out, cfg, resume=args.resume, redo=args.redo)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    except FloatingPointError as exc:
        log.error("%s", exc)
        return 1
    log.info("demo model written to %s", final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
