"""ATRC: context operations against naive formulas, genotypes, the search's rules, the label-space heads."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mtl3d.errors import UserError
from mtl3d.losses import multitask_loss
from mtl3d.models import AUX_KEY, create_model, split_outputs
from mtl3d.models.atrc.contexts import (
    ContextBlock,
    global_context_attention,
    label_prototypes,
    local_context_attention,
    spatial_softmax,
)
from mtl3d.models.atrc.genotype import load_genotype, parse_genotype, uniform_genotype
from mtl3d.models.atrc.search import (
    MixedContext,
    entropy,
    fix_settled,
    linear_schedule,
    should_fix,
    vote,
    vote_files,
    write_genotype,
)

TASKS = ["semseg", "depth", "normals", "edges"]


def atrc(**opts) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("atrc", TASKS, 5, backbone="resnet18", widths=[8, 8, 16, 16], **opts)


def batch(b: int = 2, h: int = 32, w: int = 48) -> dict:
    g = torch.Generator().manual_seed(3)
    return {
        "image": torch.randn(b, 3, h, w, generator=g),
        "semseg": torch.randint(0, 5, (b, h, w), generator=g),
        "depth": torch.rand(b, 1, h, w, generator=g) * 5 + 0.8,
        "normals": F.normalize(torch.randn(b, 3, h, w, generator=g), dim=1),
        "edges": (torch.rand(b, 1, h, w, generator=g) > 0.9).float(),
    }


# ------------------------------------------------------------------------------------------- context ops


def test_global_linear_attention_equals_naive_quadratic_formula():
    g = torch.Generator().manual_seed(0)
    q, k = torch.rand(2, 4, 30, generator=g), torch.rand(2, 4, 30, generator=g)
    v = torch.randn(2, 5, 30, generator=g)
    sim = torch.einsum("bdi,bdj->bij", q, k)  # [B, L_query, L_key] = q_i · k_j
    naive = torch.einsum("bij,bmj->bmi", sim / sim.sum(-1, keepdim=True), v)
    torch.testing.assert_close(global_context_attention(q, k, v), naive, rtol=1e-5, atol=1e-6)


def _dense_local_reference(q, k, v, kernel, border):
    """O(L²) attention over every pixel pair, restricted to the window by a mask. ``zero_pad``: the
    window positions outside the map are extra keys with k = v = 0 (the released CUDA kernel)."""
    b, d, h, w = q.shape
    r = kernel // 2
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    inside = ((ys[:, None] - ys[None]).abs() <= r) & ((xs[:, None] - xs[None]).abs() <= r)  # [L, L]
    scores = torch.einsum("bdi,bdj->bij", q.flatten(2), k.flatten(2)) / math.sqrt(d)
    scores = scores.masked_fill(~inside, float("-inf"))
    if border == "zero_pad":
        # Outside-the-map window positions: score 0, value 0 — count them as extra zero logits.
        cy = torch.minimum(ys + r, torch.tensor(h - 1)) - torch.maximum(ys - r, torch.tensor(0)) + 1
        cx = torch.minimum(xs + r, torch.tensor(w - 1)) - torch.maximum(xs - r, torch.tensor(0)) + 1
        n_out = (kernel * kernel - cy * cx).float()  # [L]
        m = scores.amax(-1, keepdim=True).clamp_min(0)
        e = (scores - m).exp()
        denom = e.sum(-1) + n_out * (-m.squeeze(-1)).exp()
        attn = e / denom[..., None]
    else:
        attn = scores.softmax(-1)
    return torch.einsum("bij,bmj->bmi", attn, v.flatten(2)).view(b, -1, h, w)


@pytest.mark.parametrize("border", ["zero_pad", "mask"])
@pytest.mark.parametrize("kernel", [3, 9])
def test_local_attention_equals_dense_masked_reference(border, kernel):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 6, 11, 13, generator=g), torch.randn(2, 6, 11, 13, generator=g)
    v = torch.randn(2, 3, 11, 13, generator=g)
    got = local_context_attention(q, k, v, kernel, border)
    torch.testing.assert_close(got, _dense_local_reference(q, k, v, kernel, border), rtol=1e-4, atol=1e-5)


def test_local_attention_memory_is_linear_in_pixels():
    """At ATRC's NYUD feature size (107×140, 33 channels) the largest tensor is the 81-offset score map."""
    q = torch.randn(1, 33, 107, 140)
    with torch.no_grad():
        out = local_context_attention(q, q, q, 9)
    assert out.shape == q.shape  # O(L²) would need 107·140 squared ≈ 2.2e8 scores per image


def test_label_prototypes_on_planted_regions():
    """Peaked auxiliary logits: each region's spatial softmax is uniform over its pixels, so the
    prototype is the mean source feature of that region."""
    h, w = 4, 6
    regions = torch.zeros(1, h, w, dtype=torch.long)
    regions[:, :, 3:] = 1
    logits = F.one_hot(regions, 2).permute(0, 3, 1, 2).float() * 60.0
    feats = torch.randn(1, 3, h, w)
    protos = label_prototypes(spatial_softmax(logits), feats)
    assert protos.shape == (1, 3, 2, 1)
    torch.testing.assert_close(protos[0, :, 0, 0], feats[0, :, :, :3].mean(dim=(1, 2)))
    torch.testing.assert_close(protos[0, :, 1, 0], feats[0, :, :, 3:].mean(dim=(1, 2)))


@pytest.mark.parametrize("kind", ["tlabel", "slabel"])
def test_label_context_reads_the_target_or_the_source_label_maps(kind):
    torch.manual_seed(0)
    blk = ContextBlock(kind, 8, 4).eval()
    t, s = torch.randn(1, 8, 5, 7), torch.randn(1, 8, 5, 7)
    p_a, p_b, p_c = (spatial_softmax(torch.randn(1, r, 5, 7)) for r in (3, 2, 4))
    out = blk(t, s, p_a, p_b)
    assert out.shape == (1, 4, 5, 7)
    if kind == "tlabel":  # only the target's maps matter
        torch.testing.assert_close(out, blk(t, s, p_a, p_c))
        assert not torch.allclose(out, blk(t, s, p_c, p_b))
    else:
        torch.testing.assert_close(out, blk(t, s, p_c, p_b))
        assert not torch.allclose(out, blk(t, s, p_a, p_c))


# -------------------------------------------------------------------------------------------- the model


def test_all_none_genotype_is_the_multitask_baseline_path():
    m = atrc(genotype="none").eval()
    assert not m.label_heads and all(not f.blocks for f in m.fusion.values())
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        out = m(x)
        shared = torch.cat(
            [
                F.interpolate(f, size=m.adapter(m.encode(x))[0].shape[-2:], mode="bilinear")
                for f in m.adapter(m.encode(x))
            ],
            1,
        )
        for t in TASKS:
            ref = m.classifiers[t](m.fusion[t].fuse(m.task_features[t](shared)))
            torch.testing.assert_close(out[t], F.interpolate(ref, size=(40, 56), mode="bilinear"))


def test_context_contribution_starts_at_zero():
    """The zero-initialised BN of the CP projection: at initialisation every CP block adds exactly 0."""
    m = atrc(genotype="nyud_hrnet18")
    for f in m.fusion.values():
        assert f.project is not None
        assert torch.count_nonzero(f.project[1].weight) == 0 and torch.count_nonzero(f.project[1].bias) == 0


def test_published_genotypes_ship_and_match_the_paper_appendix():
    g = load_genotype("nyud_hrnet18", TASKS)
    assert g["semseg"] == {"semseg": "tlabel", "depth": "tlabel", "normals": "slabel", "edges": "slabel"}
    assert g["edges"]["normals"] == "global"
    p = load_genotype("pascal_hrnet18", ["semseg", "human_parts", "saliency", "normals", "edges"])
    assert p["semseg"]["normals"] == "none" and p["edges"]["normals"] == "global"
    # Restricted to a subset of the tasks.
    assert load_genotype("nyud_hrnet48", ["semseg", "depth"]) == {
        "semseg": {"semseg": "tlabel", "depth": "none"},
        "depth": {"semseg": "slabel", "depth": "global"},
    }


def test_genotype_errors_name_the_valid_choices(tmp_path):
    with pytest.raises(UserError, match="nyud_hrnet18"):
        load_genotype("nyud_hrnet99", TASKS)
    with pytest.raises(UserError, match="no block"):
        load_genotype("nyud_hrnet18", ["semseg", "saliency"])
    bad = tmp_path / "g.json"
    bad.write_text(json.dumps({"genotype": {"semseg": {"semseg": "spatial"}}}))
    with pytest.raises(UserError, match="tlabel"):
        load_genotype(str(bad), ["semseg"])
    with pytest.raises(UserError, match="needs a genotype for tasks depth, saliency"):
        create_model("atrc", ["depth", "saliency"], 5)


def test_released_code_format_parses_with_our_task_names():
    code = {"data": {"semseg": {"semseg": 3, "edge": 4}, "edge": {"semseg": 1, "edge": 2}}, "step": 40000}
    assert parse_genotype(code, "x") == {
        "semseg": {"semseg": "tlabel", "edges": "slabel"},
        "edges": {"semseg": "global", "edges": "local"},
    }


def test_uniform_slabel_is_tlabel_on_the_diagonal():
    g = uniform_genotype(["semseg", "depth"], "slabel")
    assert g == {
        "semseg": {"semseg": "tlabel", "depth": "slabel"},
        "depth": {"semseg": "slabel", "depth": "tlabel"},
    }


def test_label_heads_exist_only_where_a_label_context_reads_them():
    # NYUD HRNet-48: semseg and edges rows use T-label; the S-label blocks read semseg's and edges' maps.
    m = atrc(genotype="nyud_hrnet48")
    assert set(m.label_heads) == {"semseg", "edges"}
    g = atrc(genotype="global")
    assert not g.label_heads


def test_label_heads_are_detached_and_learn_in_their_label_space():
    m = atrc(genotype="nyud_hrnet18").train()
    b = batch()
    preds, aux = split_outputs(m(b["image"]))
    assert set(aux["label"]) == set(TASKS)
    assert aux["label"]["depth"].shape[1] == 40 and aux["label"]["normals"].shape[1] == 40
    assert aux["label"]["edges"].shape[1] == 2

    def hook(name, task, pred, target):
        return m.aux_loss(name, task, pred, target, 0.8)

    out = multitask_loss(preds, b, dict.fromkeys(TASKS, 1.0), aux=aux, aux_loss=hook)
    ref = m.label_spaces["depth"].loss(aux["label"]["depth"], b["depth"])
    torch.testing.assert_close(out["ds/label/depth"], ref)
    # Only the label-space loss reaches the label heads, and none of it reaches the encoder.
    m.zero_grad()
    out["ds/label/depth"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.encoder.parameters())
    assert m.label_heads["depth"][-1].weight.grad.abs().sum() > 0


def test_fpm_variant_adds_mtinet_propagation_and_its_deep_supervision():
    m = atrc(genotype="nyud_hrnet18", fpm=True).train()
    out = m(torch.randn(2, 3, 45, 61))
    assert set(out[AUX_KEY]) == {"scale0", "scale1", "scale2", "scale3", "label"}
    assert out["semseg"].shape == (2, 5, 45, 61)


# ------------------------------------------------------------------------------------------- the search


def test_schedules_are_linear_and_entropy_weight_is_negative_for_the_first_quarter():
    assert linear_schedule(1.0, 0.05, 0, 100) == 1.0
    assert linear_schedule(1.0, 0.05, 100, 100) == pytest.approx(0.05)
    assert linear_schedule(-0.02, 0.06, 25, 100) == pytest.approx(0.0)
    assert linear_schedule(-0.02, 0.06, 10, 100) < 0 < linear_schedule(-0.02, 0.06, 30, 100)
    m = atrc(search=True)
    m.training_hooks().before_step(50, 100)
    assert m.entropy_weight == pytest.approx(0.02)
    assert all(
        blk.temperature == pytest.approx(0.525) for f in m.fusion.values() for blk in f.blocks.values()
    )


def test_entropy_of_planted_alpha():
    assert float(entropy(torch.zeros(5))) == pytest.approx(math.log(5))
    assert float(entropy(torch.tensor([100.0, 0, 0, 0]))) == pytest.approx(0.0, abs=1e-6)


def test_early_fixing_rule_on_planted_alpha():
    # softmax([log .6, log .3, log .1]) = [.6, .3, .1]: margin .3 -> fixed; [.5, .3, .2] -> not.
    assert should_fix(torch.tensor([0.6, 0.3, 0.1]).log())
    assert not should_fix(torch.tensor([0.5, 0.3, 0.2]).log())
    torch.manual_seed(0)
    blk = MixedContext(False, 8, 4, 3, "zero_pad").train()
    t = torch.randn(1, 8, 5, 6)
    p = spatial_softmax(torch.randn(1, 3, 5, 6))
    fix_settled([blk])  # what the search's before_step hook does before each training forward
    blk(t, t, p, p)
    assert int(blk.fixed) == -1  # α = 0: uniform, keep searching
    with torch.no_grad():
        blk.alpha.copy_(torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0]))  # "local" well ahead
    fix_settled([blk])
    assert int(blk.fixed) == 2 and blk.choice() == "local"
    with torch.no_grad():
        blk.alpha.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0, 0.0]))  # later α changes do not unfix it
    fix_settled([blk])
    out = blk(t, t, p, p)
    assert blk.choice() == "local"
    torch.testing.assert_close(out, blk.ops["local"](t, t, p, p))


def test_diagonal_blocks_have_no_slabel_candidate():
    m = atrc(search=True)
    assert m.fusion["depth"].blocks["depth"].candidates == ["none", "global", "local", "tlabel"]
    assert m.fusion["depth"].blocks["semseg"].candidates[-1] == "slabel"
    assert len(m.arch_parameters()) == 16


def test_search_step_updates_alpha_and_weights_from_one_backward():
    from mtl3d import config as C
    from mtl3d.engine.optim import build_optimizer

    fixed = atrc().training_hooks()  # a trained genotype adds nothing to the loop
    assert (fixed.parameters, fixed.optimizers, fixed.find_unused_parameters) == ([], {}, False)
    m = atrc(search=True).train()
    hooks = m.training_hooks()
    assert hooks.find_unused_parameters and list(hooks.optimizers) == ["arch_optimizer"]
    assert [id(p) for p in hooks.parameters] == [id(p) for p in m.arch_parameters()]
    groups = build_optimizer(C.OptimConfig(), m, None, exclude=hooks.parameters).param_groups
    arch = {id(p) for p in m.arch_parameters()}
    assert not any(id(p) in arch for g in groups for p in g["params"])
    assert {id(p) for g in hooks.optimizers["arch_optimizer"].param_groups for p in g["params"]} == arch
    # At initialisation the zero BN of the CP projection blocks every gradient to α (as in the
    # released code: α start to move once that BN has moved); emulate a later step.
    for f in m.fusion.values():
        torch.nn.init.ones_(f.project[1].weight)
    hooks.before_step(0, 10)
    b = batch()
    preds, aux = split_outputs(m(b["image"]))
    out = multitask_loss(
        preds, b, dict.fromkeys(TASKS, 1.0), aux=aux, aux_loss=lambda *a: m.aux_loss(*a, 0.8)
    )
    total = out["total"] + sum(m.extra_losses().values())
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.arch_parameters())


def test_genotype_round_trips_through_json_and_rebuilds_the_same_network(tmp_path):
    s = atrc(search=True)
    codes = {"none": 0, "global": 1, "local": 2, "tlabel": 3, "slabel": 4}
    for f in s.fusion.values():
        for src, blk in f.blocks.items():
            pick = "slabel" if "slabel" in blk.candidates and src == "edges" else "tlabel"
            with torch.no_grad():
                blk.alpha.zero_()
                blk.alpha[codes[pick]] = 1.0
    path = write_genotype(s, tmp_path / "genotype.json")
    data = json.loads(path.read_text())
    assert data["genotype"]["semseg"]["edges"] == "slabel" and data["genotype"]["edges"]["edges"] == "tlabel"
    a, b = atrc(genotype=str(path)), atrc(genotype=str(path))
    assert a.current_genotype() == s.current_genotype()
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict())  # same network, so the weights of one load into the other


def test_vote_takes_the_majority_per_block(tmp_path):
    g1 = uniform_genotype(["semseg", "depth"], "tlabel")
    g2 = uniform_genotype(["semseg", "depth"], "tlabel")
    g3 = uniform_genotype(["semseg", "depth"], "global")
    g2["semseg"]["depth"] = "none"
    voted, stats = vote([g1, g2, g3])
    assert voted == g1
    assert stats["pairwise_agreement"] == pytest.approx((3 / 4 + 0 + 0) / 3)
    paths = []
    for i, g in enumerate([g3, g1, g2]):  # semseg<-depth is a 1-1-1 tie: the first file's pick wins
        p = tmp_path / f"g{i}.json"
        p.write_text(json.dumps({"genotype": g}))
        paths.append(p)
    out = vote_files(paths, tmp_path / "voted.json")
    voted_file = json.loads(out.read_text())
    assert voted_file["genotype"]["semseg"]["depth"] == "global"
    assert voted_file["genotype"]["depth"] == g1["depth"] and voted_file["searches"] == 3


def test_vote_over_a_folder_of_searches_orders_them_by_seed(tmp_path):
    picks = {0: "global", 2: "tlabel", 10: "local"}  # a 1-1-1 tie everywhere: the lowest seed wins
    for seed, kind in picks.items():
        d = tmp_path / "atrc" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "genotype.json").write_text(json.dumps({"genotype": uniform_genotype(["semseg"], kind)}))
    out = json.loads(vote_files([tmp_path / "atrc"], tmp_path / "atrc.json").read_text())
    assert out["genotype"] == {"semseg": {"semseg": "global"}}
    assert [p.split("/")[-2] for p in out["sources"]] == ["seed0", "seed2", "seed10"]
    with pytest.raises(UserError, match="no finished search"):
        vote_files([tmp_path], tmp_path / "x.json")


# ------------------------------------------------------------------------------------ padded pixels


def test_valid_mask_from_boxes_by_hand():
    from mtl3d.models import valid_mask

    m = valid_mask({"valid_box": torch.tensor([[1, 2, 2, 3], [0, 0, 4, 6]])}, (4, 6))
    assert m.shape == (2, 1, 4, 6) and m.dtype == torch.bool
    want = torch.zeros(4, 6, dtype=torch.bool)
    want[1:3, 2:5] = True
    assert torch.equal(m[0, 0], want) and bool(m[1].all())
    assert valid_mask({"image": torch.zeros(1, 3, 4, 6)}, (4, 6)) is None


def _probs_seen(model, monkeypatch, feats, size, **kw) -> list[torch.Tensor]:
    """The spatial probabilities the T-/S-label prototypes pool with, recorded in one decode."""
    import mtl3d.models.atrc.contexts as atrc_module

    seen: list[torch.Tensor] = []

    def record(prob, f):
        seen.append(prob.detach())
        return label_prototypes(prob, f)

    monkeypatch.setattr(atrc_module, "label_prototypes", record)
    model.decode(feats, size, **kw)
    return seen


def test_padded_pixels_leave_the_label_softmax(monkeypatch):
    """Released code: padded pixels get −∞ label logits, so prototypes pool image pixels only."""
    m = atrc(genotype="tlabel").eval()
    x = batch(h=32, w=48)["image"]
    box = torch.tensor([[0, 0, 32, 24], [4, 8, 20, 40]])  # (top, left, h, w) in input pixels
    from mtl3d.models import valid_mask

    valid = valid_mask({"valid_box": box}, (32, 48))
    with torch.no_grad():
        feats = m.encode(x)
        masked = _probs_seen(m, monkeypatch, feats, (32, 48), valid=valid)
        plain = _probs_seen(m, monkeypatch, feats, (32, 48))
        off = _probs_seen(
            atrc(genotype="tlabel", mask_padding=False).eval(), monkeypatch, feats, (32, 48), valid=valid
        )
    grid = feats[0].shape[-2:]  # label logits live at the finest level (1/4 here: 8x12)
    keep = F.interpolate(valid.float(), size=grid, mode="nearest").flatten(1) > 0.5  # [B, L]
    assert masked and len(masked) == len(plain)
    for p in masked:  # [B, R, L]
        assert torch.all(p[~keep[:, None, :].expand_as(p)] == 0)
        assert torch.allclose(p.sum(-1), torch.ones(p.shape[:2]))
    for p in (*plain, *off):  # no mask given, or masking off: padded pixels keep their mass
        assert bool((p[~keep[:, None, :].expand_as(p)] > 0).all())
    # a box with no pixel left at the label resolution keeps every pixel (never a 0/0 softmax)
    empty = torch.zeros_like(valid)
    for p in _probs_seen(m, monkeypatch, feats, (32, 48), valid=empty):
        assert torch.isfinite(p).all()


def test_fixed_choice_follows_a_loaded_checkpoint_both_ways():
    """The block keeps its fixed choice as a Python int (no device read per forward): loading a state
    dict must replace it, as a resumed search continues from the checkpoint's fixed blocks."""
    torch.manual_seed(0)
    fixed = MixedContext(False, 8, 4, 3, "zero_pad")
    fixed.fix(2)
    fresh = MixedContext(False, 8, 4, 3, "zero_pad")
    assert fresh.fixed_index() == -1
    fresh.load_state_dict(fixed.state_dict())
    assert fresh.fixed_index() == 2 and fresh.choice() == "local"
    fixed.load_state_dict(MixedContext(False, 8, 4, 3, "zero_pad").state_dict())
    assert fixed.fixed_index() == -1
