import torch

from acsdk.inference import imaging
from acsdk.models.asea import in_mask_ratio, run_asea
from acsdk.models.csm import query_to_image_attention


def _setup(model, mask_np, image_np, prompt="a photo of a surface with a hole"):
    img = imaging.load_image(image_np)
    size = model.vision_image_size
    with torch.no_grad():
        e_v = model.blip2.vision_model(pixel_values=imaging.resize_image(img, size, size)[None]).last_hidden_state
    tok = model.qformer_tokenizer(
        prompt, padding="max_length", max_length=model.config.qformer_max_length, truncation=True, return_tensors="pt"
    )
    region = imaging.mask_coverage(imaging.load_mask(mask_np), *model.attention_grid)
    return e_v, tok.input_ids, tok.attention_mask, region


def test_asea_raises_r_and_lowers_energy(tiny_model, scene):
    e_v, ids, attn, region = _setup(tiny_model, scene["reference_mask"], scene["reference_image"])
    before = {k: v.clone() for k, v in tiny_model.qformer.state_dict().items()}
    res = run_asea(tiny_model.qformer, e_v, ids, attn, region, steps=5)
    assert res.r_after > res.r_before * 1.2
    assert res.energy_after < res.energy_before
    assert all(b <= a for b, a in zip(res.r_history, res.r_history[1:], strict=False))
    # Only e_g moved: every weight is bit-identical.
    after = tiny_model.qformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(res.image_tokens, e_v)


def test_zero_steps_is_identity(tiny_model, scene):
    e_v, ids, attn, region = _setup(tiny_model, scene["reference_mask"], scene["reference_image"])
    res = run_asea(tiny_model.qformer, e_v, ids, attn, region, steps=0)
    assert torch.equal(res.image_tokens, e_v)
    assert res.r_after == res.r_before


def test_defect_smaller_than_a_grid_cell_still_moves_attention(tiny_model, scene):
    mask = torch.zeros(64, 64)
    mask[30, 33] = 1.0  # one pixel: nearest-resizing to the 8x8 grid would drop it
    e_v, ids, attn, region = _setup(tiny_model, mask.numpy(), scene["reference_image"])
    assert region.sum() > 0
    res = run_asea(tiny_model.qformer, e_v, ids, attn, region, steps=3)
    assert res.r_after > res.r_before


def test_r_is_attention_mass_inside_region():
    att = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
    region = torch.tensor([[0.0, 1.0], [1.0, 0.5]])
    assert torch.allclose(in_mask_ratio(att, region), torch.tensor([(3 + 0 + 2) / 8.0]))


def test_attention_map_averages_layers_heads_queries_and_drops_cls():
    a = torch.zeros(1, 2, 3, 5)  # batch, heads, queries, 1 + 2x2 tokens
    a[..., 0] = 0.5
    a[..., 4] = 0.5
    m = query_to_image_attention((a, a * 0 + 0.2), (2, 2))
    assert m.shape == (1, 2, 2)
    assert torch.allclose(m, torch.tensor([[[0.1, 0.1], [0.1, 0.35]]]))
