import pytest
import torch

from mtl3d.data.registry import create_dataset
from mtl3d.errors import UserError
from tests.fakedata import make_fake_dataset


def test_sample_contract(tmp_path):
    root = make_fake_dataset(tmp_path / "d")
    ds = create_dataset(
        "synthrooms", root, "train", ["semseg", "depth", "normals", "edges"], train=False, multiview=True
    )
    s = ds[0]
    assert s["image"].shape == (3, 24, 32) and s["image"].dtype == torch.float32
    assert s["semseg"].dtype == torch.int64 and s["depth"].shape == (1, 24, 32)
    assert s["normals"].shape == (3, 24, 32) and set(s["edges"].unique().tolist()) <= {0.0, 1.0}
    assert s["K"].shape == (3, 3) and s["pose"].shape == (4, 4)
    assert s["neighbor"]["image"].shape == (3, 24, 32)


def test_user_errors_are_one_line_and_helpful(tmp_path):
    with pytest.raises(UserError, match="run: mtl3d data prepare synthrooms --root"):
        create_dataset("synthrooms", tmp_path / "missing", "train", ["depth"], train=True)
    with pytest.raises(UserError, match="unknown dataset 'nyu'; valid: .*synthrooms"):
        create_dataset("nyu", tmp_path, "train", ["depth"], train=True)
    root = make_fake_dataset(tmp_path / "d")
    with pytest.raises(UserError, match="no labels for task.*saliency"):
        create_dataset("synthrooms", root, "train", ["saliency"], train=True)
    with pytest.raises(UserError, match="no split 'test'"):
        create_dataset("synthrooms", root, "test", ["depth"], train=True)
    (root / "images" / "v000.png").write_bytes(b"\x89PNG garbage")
    ds = create_dataset("synthrooms", root, "train", ["depth"], train=True)
    with pytest.raises(UserError, match=r"corrupt image file .*v000\.png"):
        ds[0]


def test_normals_png_decoded_in_the_reference_order(tmp_path):
    # The loaders compute 2 * v / 255 - 1 in float32; v * (2 / 255) - 1 differs in the last bit for 111
    # of the 256 codes.
    import numpy as np

    from mtl3d.data.folder import _decode_normals_png

    codes = np.arange(256, dtype=np.uint8)
    rgb = np.stack([codes, codes[::-1], np.full(256, 7, np.uint8)], axis=-1)[None]  # [1, 256, 3]
    got = _decode_normals_png(rgb, tmp_path / "n.png")
    expected = 2 * rgb.astype(np.float32) / 255 - 1
    assert got.dtype == np.float32
    assert (got.view(np.uint32) == expected.view(np.uint32)).all()
