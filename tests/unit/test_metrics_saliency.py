"""Saliency metrics (MTL and InvPT protocols) on planted 1x4 images with hand-computed answers."""

from __future__ import annotations

import math

import pytest
import torch

from mtl3d.errors import UserError
from mtl3d.metrics import SaliencyMetric, create_metric


def _batch(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, 1, -1)


def test_mtl_protocol_image_averaged() -> None:
    # image 1: gt [1,1,0,0], prob [.95,.52,.32,.10]; image 2: empty GT, prob .10 everywhere.
    # thresholds .20 .. .90 (step .05), positive = prob > t:
    #   t <= .30: img1 J 2/3, P 2/3, R 1 | .35 <= t <= .50: J 1, P 1, R 1 | t >= .55: J 1/2, P 1, R 1/2
    #   img2 never predicts: J 1 (both empty), P 0, R 0.
    # mean J: 5/6, 1, 3/4 -> mIoU 100;  mean (P, R): (1/3, 1/2) F .4; (1/2, 1/2) F .5; (1/2, 1/4) F 1/3
    m = SaliencyMetric()
    m.update(_batch([[0.95, 0.52, 0.32, 0.10], [0.10] * 4]), _batch([[1, 1, 0, 0], [0, 0, 0, 0]]))
    r = m.compute()
    assert r["mIoU"] == pytest.approx(100.0)
    assert r["maxF"] == pytest.approx(50.0)
    assert r["maxF_threshold"] == pytest.approx(0.35)


def test_mtl_protocol_lower_scores() -> None:
    # image 1 only, gt [1,1,0,0], prob [.95,.32,.52,.10]:
    #   t <= .30: tp 2 fp 1 -> J 2/3, P 2/3, R 1, F .8 | .35..0.50: tp 1 fp 1 -> J 1/3, F 1/2
    #   t >= .55: tp 1 -> J 1/2, P 1, R 1/2, F 2/3
    m = SaliencyMetric(protocol="mtl")
    m.update(_batch([[0.95, 0.32, 0.52, 0.10]]), _batch([[1, 1, 0, 0]]))
    r = m.compute()
    assert r["mIoU"] == pytest.approx(200 / 3)
    assert r["maxF"] == pytest.approx(80.0)


def test_invpt_protocol_pooled_beta() -> None:
    # image 1: gt [1,1,0,0], prob [.97,.32,.52,.12]; image 2: empty GT, prob .12. Pooled, prob >= t:
    #   t <= .10: PP 8, TP 2 -> P 1/4, R 1 | .15..0.30: PP 3, TP 2 | .35..0.50: PP 2, TP 1
    #   t >= .55: PP 1, TP 1
    # F(beta^2 = .3) = 1.3PR / (.3P + R): .3023, .7222, .5, .8125 -> maxF 81.25 at t = .55
    # (with beta^2 = 1 the best would be .8 at t = .15)
    # per-image Jaccard mean: .25, (2/3 + 1)/2, (1/3 + 1)/2, (1/2 + 1)/2 -> mIoU 83.33
    m = create_metric("saliency", protocol="invpt")
    m.update(_batch([[0.97, 0.32, 0.52, 0.12], [0.12] * 4]), _batch([[1, 1, 0, 0], [0, 0, 0, 0]]))
    r = m.compute()
    assert r["maxF"] == pytest.approx(81.25)
    assert r["maxF_threshold"] == pytest.approx(0.55)
    assert r["mIoU"] == pytest.approx(250 / 3)


def test_ignore_pixels_and_all_ignore_images() -> None:
    base = SaliencyMetric()
    base.update(_batch([[0.95, 0.52, 0.32, 0.10]]), _batch([[1, 1, 0, 0]]))
    masked = SaliencyMetric()
    masked.update(
        _batch([[0.95, 0.52, 0.32, 0.10, 0.99], [0.9] * 5]),
        _batch([[1, 1, 0, 0, 255], [255] * 5]),  # an ignored pixel; an all-ignore image (skipped)
    )
    assert masked.compute() == base.compute()


def test_empty_and_errors() -> None:
    assert all(math.isnan(v) for v in SaliencyMetric().compute().values())
    with pytest.raises(UserError, match="saliency protocol"):
        SaliencyMetric(protocol="fancy")
    with pytest.raises(ValueError):
        SaliencyMetric().update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_create_metric_reports_both_protocols() -> None:
    # image 1: gt [1,1,0,0], prob [.97,.32,.52,.12]; image 2: empty GT, prob .12 everywhere.
    # Survey (prob > t, t = .20 .. .90): image 1 at t <= .30: tp 2 fp 1 -> J 2/3, P 2/3, R 1;
    #   .35..0.50: tp 1 fp 1 fn 1 -> J 1/3, P 1/2, R 1/2; t >= .55: tp 1 fn 1 -> J 1/2, P 1, R 1/2.
    #   image 2 never predicts: J 1, P 0, R 0. Mean J: 5/6, 2/3, 3/4 -> mIoU 83.33 at .20;
    #   mean (P, R): (1/3, 1/2) F .4 | (1/4, 1/4) F .25 | (1/2, 1/4) F 1/3 -> maxF 40 at .20.
    # InvPT (pooled, beta^2 .3; see test_invpt_protocol_pooled_beta): maxF 81.25 at .55; mean per-image
    #   Jaccard .25 at t <= .10 (image 2 all false positives), 5/6 at .15..0.30 -> mIoU_invpt 83.33 at .15.
    m = create_metric("saliency")
    m.update(_batch([[0.97, 0.32, 0.52, 0.12], [0.12] * 4]), _batch([[1, 1, 0, 0], [0, 0, 0, 0]]))
    r = m.compute()
    assert r["maxF"] == pytest.approx(40.0) and r["maxF_threshold"] == pytest.approx(0.2)
    assert r["mIoU"] == pytest.approx(250 / 3) and r["mIoU_threshold"] == pytest.approx(0.2)
    assert r["maxF_invpt"] == pytest.approx(81.25) and r["maxF_threshold_invpt"] == pytest.approx(0.55)
    assert r["mIoU_invpt"] == pytest.approx(250 / 3) and r["mIoU_threshold_invpt"] == pytest.approx(0.15)
    assert set(r) == {
        k + s for k in ("maxF", "mIoU", "maxF_threshold", "mIoU_threshold") for s in ("", "_invpt")
    }
    assert "MTL survey" in m.protocol and "_invpt" in m.protocol and "InvPT" in m.protocol
    m.reset()
    assert all(math.isnan(v) for v in m.compute().values())
    # a single protocol on request: only its keys, without suffix
    assert set(create_metric("saliency", protocol="mtl").compute()) == {
        "maxF",
        "mIoU",
        "maxF_threshold",
        "mIoU_threshold",
    }
