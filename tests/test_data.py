import gzip

import numpy as np
import pytest
import torch

from reuse.study.training import data


def test_read_idx_roundtrip_gz_and_raw(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz, name in ((True, "a.gz"), (False, "a.idx")):
        data.write_idx(tmp_path / name, a, gz=gz)
        np.testing.assert_array_equal(data.read_idx(tmp_path / name), a)


def test_read_idx_truncated_names_the_file(tmp_path):
    path = tmp_path / "t.gz"
    data.write_idx(path, np.zeros((5, 28, 28), np.uint8))
    raw = gzip.open(path).read()
    gzip.open(path, "wb").write(raw[:-10])
    with pytest.raises(ValueError, match=r"t\.gz.*size mismatch"):
        data.read_idx(path)
    path.write_bytes(path.read_bytes()[:20])  # a cut gzip stream
    with pytest.raises(ValueError, match=r"t\.gz"):
        data.read_idx(path)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="bad magic"):
        data.read_idx(path)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("REUSE_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.find_fashion_mnist()


def test_an_explicit_folder_without_the_files_is_an_error_naming_it(fake_fashion, tmp_path):
    # the system copy (here: $REUSE_DATA_DIR's fake files) is never a silent fallback
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DataNotFoundError, match=f"not found in {empty} \\(--data-dir; missing"):
        data.find_fashion_mnist(empty)
    assert data.find_fashion_mnist() == fake_fashion  # $REUSE_DATA_DIR is explicit too


def test_data_provenance_hashes_every_file(fake_fashion):
    import hashlib
    record = data.data_provenance()
    assert record["fashion_mnist"] == str(fake_fashion) and len(record["sha256"]) == 4
    name = next(iter(record["sha256"]))
    assert record["sha256"][name] == hashlib.sha256((fake_fashion / name).read_bytes()).hexdigest()
    assert record["digits"].startswith("scikit-learn ")


def test_check_cli(fake_fashion, tmp_path, monkeypatch, capsys):
    assert data.main(["check"]) == 0
    assert str(fake_fashion) in capsys.readouterr().out
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("REUSE_DATA_DIR")
    assert data.main(["check", "--data-dir", str(tmp_path)]) == 1
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_load_fashion_pads_to_32(fake_fashion):
    x, y = data.load_fashion("train")
    assert x.shape == (400, 1, 32, 32) and y.shape == (400,)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert x[:, :, :2].abs().sum() == 0  # the padding
    small, _ = data.load_fashion("train", image_size=16)
    assert small.shape == (400, 1, 16, 16) and small[:, :, :1].abs().sum() == 0
    # area resizing keeps the mean intensity of the 28 px item (14 px, padded by 1)
    assert torch.allclose(small.sum((1, 2, 3)) * 4, x.sum((1, 2, 3)), rtol=1e-4)
    with pytest.raises(ValueError, match="image_size=18"):
        data.load_fashion("train", image_size=18)


def test_digits_are_mnist_like():
    x, y = data.load_digits()
    assert x.shape == (1797, 1, 32, 32) and set(y.tolist()) == set(range(10))
    assert x[:, :, :6].abs().sum() == 0 and x.max() <= 1
    assert data.load_digits(16)[0].shape == (1797, 1, 16, 16)


def test_twin_blocks_are_disjoint_and_block_0_is_a_prefix(fake_fashion):
    first = data.load_domain("fashion-split", "target", 40, 10, seed=2)
    second = data.load_domain("fashion-split", "target", 40, 10, seed=2, block=1)
    small = data.load_domain("fashion-split", "target", 10, 10, seed=2)
    assert torch.equal(small.train_x, first.train_x[:10])
    assert not any(torch.equal(a, b) for a in first.train_x for b in second.train_x)
    assert torch.equal(first.test_x, second.test_x)  # the block is a training matter only
    with pytest.raises(ValueError, match="block 9"):
        data.load_domain("fashion-split", "target", 40, 10, block=9)


def test_autoencoding_is_denoising_with_fixed_noise(fake_fashion):
    d = data.load_domain("fashion-split", "target", 20, 10, seed=1)
    x, y = data.task_targets(d, "autoencoder", "train")
    assert torch.equal(y, d.train_x) and not torch.equal(x, y) and 0 <= x.min() and x.max() <= 1
    assert float((x - y).std()) == pytest.approx(data.AE_NOISE, rel=0.35)  # clipping shrinks it
    again, _ = data.task_targets(d, "autoencoder", "train")
    assert torch.equal(x, again)


def test_random_labels_keep_shapes_and_shuffle_classes(fake_fashion):
    split = data.load_domain("fashion-split", "source", None, 5, seed=0)
    shuffled = data.load_domain("fashion-random-labels", "source", None, 5, seed=0)
    assert torch.equal(split.train_x, shuffled.train_x)
    assert sorted(split.train_y.tolist()) == sorted(shuffled.train_y.tolist())
    assert not torch.equal(split.train_y, shuffled.train_y)
    target = data.load_domain("fashion-random-labels", "target", 20, 5, seed=0)
    assert torch.equal(target.train_x, data.load_domain("fashion-split", "target", 20, 5, seed=0).train_x)


def test_shift_identity_at_zero_and_bounded():
    x = torch.rand(4, 1, 32, 32)
    assert torch.equal(data.shift_images(x, 0.0, seed=0), x)
    y = data.shift_images(x, 1.0, seed=0)
    assert 0 <= y.min() and y.max() <= 1 and not torch.allclose(x, y)
    with pytest.raises(ValueError, match="strength=1.5"):
        data.shift_images(x, 1.5, seed=0)


def test_segmentation_masks():
    images = torch.zeros(2, 1, 4, 4)
    images[0, 0, 1, 1] = 0.9
    images[1, 0, 2, 3] = 0.5
    masks = data.segmentation_masks(images, torch.tensor([3, 0]))
    assert masks[0, 1, 1] == 4 and masks[1, 2, 3] == 1 and masks.sum() == 5


@pytest.mark.parametrize("pair", [f"{p}@0.25" if p in data.DOSED else p for p in data.PAIRS])
def test_pairs(fake_fashion, pair):
    src, tgt = data.load_pair(pair, 50, 40, 30, seed=3)
    assert len(src.train_x) == 50 and len(tgt.train_x) == 40 and len(tgt.test_x) == 30
    if pair == "fashion-split":
        assert src.n_classes == tgt.n_classes == 5
        assert int(src.train_y.max()) <= 4 and int(tgt.train_y.max()) <= 4
    again = data.load_pair(pair, 50, 40, 30, seed=3)[1]
    assert torch.equal(again.train_x, tgt.train_x)  # seeded
    for task in data.DENSE_TASKS:
        x, y = data.task_targets(tgt, task, "test")
        assert len(x) == len(y) == 30


def test_ladder_shares_one_target_and_keeps_the_shifted_source_apart(fake_fashion):
    """Every rung's target is fashion-split's; the shifted source is drawn from the target's
    own classes but never from the target's or the twin's block (unshifted at dose 0)."""
    target = data.load_domain("fashion-split", "target", 40, 30, seed=3)
    twin = data.load_domain("fashion-split", "target", 40, 30, seed=3, block=1)
    for pair in ("fashion-shifted@0.5", "digits-to-fashion", "fashion-scrambled"):
        assert data.target_pair(pair) == "fashion-split"
        assert torch.equal(data.load_pair(pair, 50, 40, 30, seed=3)[1].train_x, target.train_x)
    source = data.load_domain("fashion-shifted@0", "source", 120, 30, seed=3)  # 2 x 40 + 120 = all 200
    assert source.n_classes == 5 and int(source.train_y.min()) == 0
    seen = {tuple(x.flatten().tolist()) for x in torch.cat([target.train_x, twin.train_x])}
    assert not any(tuple(x.flatten().tolist()) in seen for x in source.train_x)


def test_overlap_sources_keep_the_targets_labels_and_stay_out_of_its_blocks(fake_fashion):
    """fashion-overlap@0.6: 3 of the target's 5 classes with the target's own labels, 2 of
    classes 0-4 with the rest; its target-class images never come from the target's or the
    twin's block. fashion-split-shifted: fashion-split's source images, shifted."""
    raw_x, raw_y = data.load_fashion("train", None, 32)
    label_of = {tuple(x.flatten().tolist()): int(y) for x, y in zip(raw_x, raw_y)}
    source = data.load_domain("fashion-overlap@0.6", "source", 100, 30, seed=3)
    pairs = {(int(y), label_of[tuple(x.flatten().tolist())]) for x, y in zip(source.train_x, source.train_y)}
    assert pairs == {(0, 5), (1, 6), (2, 7), (3, 0), (4, 1)} and source.n_classes == 5
    assert 50 <= int((source.train_y < 3).sum()) <= 70  # about 3/5 of the images from shared classes
    target = data.load_domain("fashion-split", "target", 40, 30, seed=3)
    twin = data.load_domain("fashion-split", "target", 40, 30, seed=3, block=1)
    seen = {tuple(x.flatten().tolist()) for x in torch.cat([target.train_x, twin.train_x])}
    assert not any(tuple(x.flatten().tolist()) in seen for x in source.train_x)
    split = data.load_domain("fashion-split", "source", 30, 10, seed=3)
    shifted = data.load_domain("fashion-split-shifted@0.5", "source", 30, 10, seed=3)
    assert torch.equal(split.train_y, shifted.train_y) and not torch.equal(split.train_x, shifted.train_x)
    assert torch.equal(shifted.mask_train, data.rotate(split.train_x, 22.5))  # masks: the rotated clean item
    assert data.rung_coordinates("fashion-overlap@0.6") == {"label_overlap": 0.6, "shift": 0.0,
                                                            "other_data": False, "scrambled": False}
    assert data.rung_coordinates("fashion-split-shifted@0.5")["shift"] == 0.5
    assert data.rung_coordinates("fashion-shifted@0.25")["label_overlap"] == 1.0


def test_scrambled_source_permutes_its_targets_alike_for_every_image(fake_fashion):
    split = data.load_domain("fashion-split", "source", 20, 10, seed=1)
    scrambled = data.load_domain("fashion-scrambled", "source", 20, 10, seed=1)
    assert torch.equal(split.train_x, scrambled.train_x)  # the same images
    for task in data.DENSE_TASKS:
        (x0, y0), (x1, y1) = (data.task_targets(d, task, "train") for d in (split, scrambled))
        assert torch.equal(x0, x1) and not torch.equal(y0, y1)
        perm = torch.randperm(y0.shape[-1] * y0.shape[-2],
                              generator=torch.Generator().manual_seed(data.SCRAMBLE_SEED))
        assert torch.equal(y0.flatten(-2)[..., perm], y1.flatten(-2))


@pytest.mark.parametrize("pair, message", [("fashion-shifted", "needs a dose"), ("fashion-shifted@2", "dose '2'"),
                                           ("fashion-split@0.1", "takes no dose"), ("nope", "allowed"),
                                           ("fashion-overlap@0.05", "shares 0 of the target's 5"),
                                           ("fashion-overlap@1", "shares 5 of the target's 5")])
def test_bad_pair_names_say_what_is_allowed(pair, message):
    with pytest.raises(ValueError, match=message):
        data.parse_pair(pair)


def test_bad_pair_and_too_many_samples(fake_fashion):
    with pytest.raises(ValueError, match="pair='nope'"):
        data.load_pair("nope", 1, 1, 1)
    with pytest.raises(ValueError, match="n=100000"):
        data.load_pair("fashion-split", 100000, 1, 1)


@pytest.mark.parametrize("degrees", [10.0, 22.5, 45.0])
def test_rotation_grid_matches_affine_grid_without_its_matrix_product(degrees):
    """data.rotate builds affine_grid's grid elementwise (affine_grid's bmm reaches MKL)."""
    import math

    import torch.nn.functional as F

    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    t = math.radians(degrees)
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]])
    ref = F.grid_sample(x, F.affine_grid(theta.expand(3, 2, 3), list(x.shape), align_corners=False),
                        align_corners=False)
    assert torch.allclose(data.rotate(x, degrees), ref, atol=1e-5)
    assert torch.equal(data.rotate(x, 0.0), x)
