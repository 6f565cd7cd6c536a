"""The Gradio page of `acsdk playground` (the `app` extra): `Playground`'s actions laid out, errors as messages."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ACSDKError
from ..inference.schedules import SAMPLERS
from ..inference.settings import SamplingSettings
from .playground import SEEDS_IN_GALLERY, Playground, Preview, outline

log = logging.getLogger(__name__)
MAX_UPLOAD = "20mb"
PAPER = SamplingSettings()


def editor_mask(value: dict | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The editor's background as RGB uint8 and the painted mask (any stroke on any layer), or Nones."""
    if not value or value.get("background") is None:
        return None, None
    background = np.asarray(value["background"])
    image = background[..., :3] if background.ndim == 3 else np.stack([background] * 3, -1)
    mask = np.zeros(image.shape[:2], bool)
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[:2] == mask.shape:
            mask |= (layer[..., 3] > 0) if layer.shape[2] == 4 else layer.max(-1) > 0
    return image.astype(np.uint8), mask


def editor_value(image: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """An editor value: `image` as the background, `mask` as a white stroke layer."""
    h, w = image.shape[:2]
    layer = np.zeros((h, w, 4), np.uint8)
    if mask is not None:
        layer[mask] = (255, 255, 255, 255)
    composite = image.copy()
    if mask is not None:
        composite[mask] = 255
    return {"background": image, "layers": [layer], "composite": composite}


def build(play: Playground):
    """The page: inputs on the left, results on the right; one generation at a time (Gradio's queue)."""
    import gradio as gr

    def fail(exc: Exception):
        raise gr.Error(str(exc), duration=None) from exc

    def pick_good(rel):
        try:
            return editor_value(play.read(rel)) if rel else gr.update()
        except ACSDKError as exc:
            fail(exc)

    def pick_defect(defect):
        return gr.update(choices=play.references(defect), value=None), play.prompt(defect)

    def pick_reference(rel):
        if not rel:
            return None, None
        try:
            image, mask = play.reference_pair(rel)
        except ACSDKError as exc:
            fail(exc)
        return image, (mask * 255).astype(np.uint8)

    def shape(value, defect, seed):
        image, _ = editor_mask(value)
        if image is None:
            fail(ValueError("image: upload or pick a good image first"))
        return editor_value(image, play.shape_mask(image, defect, int(seed)))

    def generate(n, value, good, prompt, ref_image, ref_mask, ref_rel, defect, steps, strength, guidance, lam, asea,
                 seed, sampler, progress):  # fmt: skip
        image, mask = editor_mask(value)
        if image is None:
            fail(ValueError("image: upload or pick a good image first"))
        progress(0.05, desc=f"generating {int(n)} image(s) on the engines")
        try:
            sources = {}  # what came from --data unchanged (an upload since replaces it): the command names it
            if good and np.array_equal(play.read(good), image):
                sources["image"] = good
            if ref_rel and ref_image is not None and np.array_equal(play.reference_pair(ref_rel)[0], ref_image):
                sources["reference"] = ref_rel
            preview = play.generate(
                image, mask, prompt, ref_image, ref_mask if ref_image is not None else None, seed=int(seed),
                seeds=int(n), defect=defect or "defect", sources=sources, num_inference_steps=int(steps),
                strength=float(strength), guidance_scale=float(guidance), semantic_scale=float(lam),
                asea_steps=int(asea), sampler=sampler,
            )  # fmt: skip
        except ACSDKError as exc:
            fail(exc)
        first = preview.results[0]
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in first.timings.items() if k in _STAGES)
        info = (f"**{preview.seconds:.2f} s** for {len(preview.results)} image(s) on **{preview.backend}**: {stages}"
                + (f"  \nnotes: {', '.join(first.notes)}" if first.notes else ""))  # fmt: skip
        gallery = [(np.asarray(r.image), f"seed {s}") for r, s in zip(preview.results, preview.seeds, strict=True)]
        return (preview, np.asarray(first.image), outline(first), (preview.image, np.asarray(first.image)), gallery,
                info, play.command(preview), "", 0)  # fmt: skip

    def save(preview: Preview | None, which: int):
        if preview is None:
            fail(ValueError("save: generate first"))
        which = min(int(which or 0), len(preview.results) - 1)
        try:
            paths = play.save(preview, which)
        except ACSDKError as exc:
            fail(exc)
        return (f"saved seed {preview.seeds[which]}: {paths['image']} and {paths['mask']}",
                play.command(preview, which, saved=paths))  # fmt: skip

    def choose(preview: Preview | None, evt: gr.SelectData):
        which = int(evt.index or 0)
        seed = preview.seeds[which] if preview is not None and which < len(preview.seeds) else "?"
        return which, f"seed {seed} chosen: Save writes it"

    choose.__annotations__["evt"] = gr.SelectData  # a type, not this module's postponed string: Gradio looks for it

    # No usage analytics: a page on a factory PC talks to nobody but its browser.
    with gr.Blocks(title="acsdk playground", analytics_enabled=False) as page:
        preview = gr.State(None)
        which = gr.State(0)  # the gallery's chosen seed, for Save
        gr.Markdown(f"# acsdk playground\nEngines: `{play.engines}`" + (f", data: `{play.cat.root}` / "
                    f"`{play.cat.name}`" if play.cat else "") + f"; saving into `{play.out}`")  # fmt: skip
        with gr.Row():
            with gr.Column():
                good = gr.Dropdown(play.goods(), value=None, label="good image from --data (or upload below)",
                                   visible=bool(play.cat))  # fmt: skip
                editor = gr.ImageEditor(
                    type="numpy", image_mode="RGBA", sources=("upload",), layers=False, transforms=(),
                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=12), format="png",
                    label="good image: paint the target mask with the brush", elem_id="editor",
                )  # fmt: skip
                defects = play.defects()
                defect = gr.Dropdown(defects, value=defects[0] if defects else None, label="defect type",
                                     allow_custom_value=True)  # fmt: skip
                with gr.Row():
                    mask_seed = gr.Number(0, label="mask shape seed", precision=0)
                    shape_btn = gr.Button("draw a mask shape", elem_id="shape")
                ref_rel = gr.Dropdown(play.references(defects[0]) if defects else [], value=None,
                                      label="reference from --data (or upload below; none: no reference)",
                                      visible=bool(play.cat), elem_id="reference")  # fmt: skip
                with gr.Row():
                    ref_image = gr.Image(type="numpy", label="reference defect", sources=("upload",),
                                         format="png", elem_id="reference_image")  # fmt: skip
                    ref_mask = gr.Image(type="numpy", image_mode="L", label="its mask", sources=("upload",),
                                        format="png", elem_id="reference_mask")  # fmt: skip
                prompt = gr.Textbox(play.prompt(defects[0] if defects else "defect"), label="prompt",
                                    elem_id="prompt")  # fmt: skip
                with gr.Accordion("sampling", open=True):
                    steps = gr.Slider(1, 100, PAPER.num_inference_steps, step=1, label="steps")
                    strength = gr.Slider(0.05, 1.0, PAPER.strength, step=0.05, label="strength")
                    guidance = gr.Slider(0.0, 20.0, PAPER.guidance_scale, step=0.5, label="guidance")
                    lam = gr.Slider(0.0, 3.0, PAPER.semantic_scale, step=0.1, label="semantic scale")
                    asea = gr.Slider(0, 20, PAPER.asea_steps, step=1, label="ASEA steps")
                    seed = gr.Number(0, label="seed", precision=0)
                    sampler = gr.Dropdown(list(SAMPLERS), value=PAPER.sampler, label="sampler")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    go4 = gr.Button(f"{SEEDS_IN_GALLERY} seeds", elem_id="generate4")
            with gr.Column():
                result = gr.Image(label="result", elem_id="result", interactive=False, height=320, format="png")
                info = gr.Markdown(elem_id="info")
                with gr.Tab("label outline"):
                    outlined = gr.Image(label="label outline", interactive=False, height=320, format="png")
                with gr.Tab("before / after"):
                    before_after = gr.ImageSlider(label="before / after", interactive=False, height=320)
                with gr.Tab("seeds", elem_id="seeds_tab"):
                    gallery = gr.Gallery(label="seeds", columns=SEEDS_IN_GALLERY, format="png", elem_id="gallery")
                with gr.Row():
                    save_btn = gr.Button("Save", elem_id="save")
                saved = gr.Markdown(elem_id="saved")
                command = gr.Textbox(label="command that reproduces it", elem_id="command", lines=3)

        good.change(pick_good, good, editor)
        defect.change(pick_defect, defect, [ref_rel, prompt])
        ref_rel.change(pick_reference, ref_rel, [ref_image, ref_mask])
        shape_btn.click(shape, [editor, defect, mask_seed], editor)
        ins = [editor, good, prompt, ref_image, ref_mask, ref_rel, defect, steps, strength, guidance, lam, asea, seed,
               sampler]  # fmt: skip
        outs = [preview, result, outlined, before_after, gallery, info, command, saved, which]

        bar = gr.Progress()  # Gradio shows a progress bar for a handler whose default is one

        def one(*args, progress=bar):
            return generate(1, *args, progress)

        def several(*args, progress=bar):
            return generate(SEEDS_IN_GALLERY, *args, progress)

        go.click(one, ins, outs)
        go4.click(several, ins, outs)
        gallery.select(choose, preview, [which, saved])
        save_btn.click(save, [preview, which], [saved, command])
    page.queue(default_concurrency_limit=1)  # one generation at a time; the page stays responsive meanwhile
    return page


_STAGES = ("csm_vision", "asea", "text_encode", "vae_encode", "denoise", "vae_decode", "total")


LOOPBACK = ("127.0.0.1", "localhost", "::1")
GRADIO_TEMP = "GRADIO_TEMP_DIR"  # where Gradio caches every upload and every image it sends to the page


def page_url(host: str, port: int) -> str:
    """The page's address; an IPv6 host in brackets (http://[::1]:7860), as URLs require."""
    host = host.strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _set_gradio_temp(path: str | None) -> None:
    """Point Gradio's cache at `path` (None: Gradio's default). Components and the server read GRADIO_TEMP_DIR when
    made; a few Gradio modules copy it into DEFAULT_TEMP_DIR when imported (the server makes a folder there), so
    those already imported are pointed there too."""
    if path is None:
        os.environ.pop(GRADIO_TEMP, None)
    else:
        os.environ[GRADIO_TEMP] = path
    value = path or str(Path(tempfile.gettempdir()) / "gradio")  # Gradio's own default
    for name, module in list(sys.modules.items()):
        if (name == "gradio" or name.startswith("gradio.")) and isinstance(getattr(module, "DEFAULT_TEMP_DIR", 0), str):
            module.DEFAULT_TEMP_DIR = value


class Served:
    """A page being served and its private Gradio temp dir: `close()` stops the page, removes the dir and puts
    GRADIO_TEMP_DIR back (it also runs at exit, once)."""

    def __init__(self, temp: Path, previous: str | None):
        self.page = None
        self.temp, self._previous = temp, previous
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            if self.page is not None:
                self.page.close()
        finally:
            _set_gradio_temp(self._previous)
            shutil.rmtree(self.temp, ignore_errors=True)


def launch(play: Playground, host: str, port: int, block: bool = True) -> Served:
    """Serve the page; a host other than the loopback is said loudly (anyone on that network can use the engines).

    Never a public link: `share=False` whatever GRADIO_SHARE or a hosted notebook would make Gradio choose. Gradio
    caches uploads and results in GRADIO_TEMP_DIR (by default a shared /tmp/gradio that outlives the page): here a
    private dir inside --out (`.gradio-*`), removed when the page stops. With `block` it serves until Ctrl+C and
    returns closed; without, the caller closes what it returns."""
    host = host.strip("[]")
    if host not in LOOPBACK:
        log.warning("serving on %s: anyone who can reach this machine on port %d can use it", host, port)
    Path(play.out).mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".gradio-", dir=play.out))
    served = Served(temp, os.environ.get(GRADIO_TEMP))
    _set_gradio_temp(str(temp))
    atexit.register(served.close)
    try:
        served.page = build(play)
        served.page.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_UPLOAD,
                           prevent_thread_lock=not block, allowed_paths=[], show_error=True)  # fmt: skip
    except BaseException:
        served.close()
        raise
    if block:  # Gradio returns once Ctrl+C stopped it
        served.close()
    return served
