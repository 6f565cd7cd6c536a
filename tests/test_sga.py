import copy

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from acsdk.models.components import SGAUNet
from acsdk.models.sga import SGAAttnProcessor, sga_processors


def _inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    d = unet.config.cross_attention_dim
    return {
        "sample": torch.randn(batch, 9, size, size, generator=g),
        "timestep": torch.full((batch,), 500.0),
        "text_embeds": torch.randn(batch, 77, d, generator=g),
        "semantic_tokens": torch.randn(batch, 4, d, generator=g),
    }


def test_every_cross_attention_gets_an_sga_processor(tiny_model):
    procs = sga_processors(tiny_model.unet)
    attn2 = [n for n in tiny_model.unet.attn_processors if n.endswith("attn2.processor")]
    assert sorted(procs) == sorted(attn2) and len(procs) > 2
    assert all(isinstance(p, SGAAttnProcessor) for p in procs.values())


def test_lambda_zero_equals_plain_unet(tiny_model):
    sga = SGAUNet(tiny_model.unet)
    x = _inputs(tiny_model.unet)
    with torch.no_grad():
        out = sga(**x, semantic_scale=torch.zeros(1))
        plain_unet = copy.deepcopy(tiny_model.unet)
        plain_unet.set_attn_processor(AttnProcessor2_0())
        plain = plain_unet(x["sample"], x["timestep"], encoder_hidden_states=x["text_embeds"]).sample
    assert torch.allclose(out, plain, atol=1e-5), (out - plain).abs().max()


def test_lambda_is_a_live_tensor_input(tiny_model):
    sga = SGAUNet(tiny_model.unet)
    x = _inputs(tiny_model.unet)
    with torch.no_grad():
        a = sga(**x, semantic_scale=torch.tensor([1.0]))
        b = sga(**x, semantic_scale=torch.tensor([0.5]))
        c = sga(**x, semantic_scale=torch.tensor([0.5]))
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(b, c)


def test_semantic_tokens_matter_only_through_sga(tiny_model):
    sga = SGAUNet(tiny_model.unet)
    x = _inputs(tiny_model.unet)
    y = dict(x, semantic_tokens=x["semantic_tokens"] * -1.0)
    with torch.no_grad():
        one = torch.ones(1)
        assert (sga(**x, semantic_scale=one) - sga(**y, semantic_scale=one)).abs().max() > 1e-4
        zero = torch.zeros(1)
        assert torch.equal(sga(**x, semantic_scale=zero), sga(**y, semantic_scale=zero))
