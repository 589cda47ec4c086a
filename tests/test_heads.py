"""Heads own their targets and their decoding: the PIP head (Pixel-in-Pixel) on
hand-made grids, its neighbour table, loss, file round trip and ONNX parity."""

import numpy as np
import pytest
import torch

from facepoints.models.losses import build_loss
from facepoints.models.network import PIPHead, bilinear_at, build_model, crop_coordinates, grid_coordinates

S = 64  # input size: a 4 x 4 grid of 16 px cells at stride 16 over a 64 px crop


def crop_units(px):
    return torch.tensor(px, dtype=torch.float64) / (S - 1)


def pip(num_points=3, k=1, **kw):
    return PIPHead(8, num_points, S, neighbours=k, stride=32, **kw).double()


def perfect_raw(head, target, h=4, w=4):
    """Raw outputs that say exactly what encode() asks for, at the target cells only."""
    b, p, _ = target.shape
    idx, off, nb = head.encode(target, h, w)
    score = torch.zeros(b, p, h * w, dtype=torch.float64).scatter_(2, idx.unsqueeze(-1), 1.0)
    offset = torch.zeros(b, p, 2, h * w, dtype=torch.float64)
    offset.scatter_(3, idx.view(b, p, 1, 1).expand(b, p, 2, 1), off.unsqueeze(-1))
    nbo = torch.zeros(b, p, head.k, 2, h * w, dtype=torch.float64)
    nbo.scatter_(4, idx.view(b, p, 1, 1, 1).expand(b, p, head.k, 2, 1), nb.unsqueeze(-1))
    return score.view(b, p, h, w), offset.view(b, p, 2, h, w), nbo.view(b, p, head.k, 2, h, w)


def test_grid_units_round_trip_and_place_cells_by_pixel():
    pts = crop_units([[[0.0, 63.0], [20.0, 40.0]]])
    g = grid_coordinates(pts, S, 4, 4)
    # pixel 20 lies in cell 1 (pixels 16..31): (20 + 0.5) / 16 = 1.28125
    torch.testing.assert_close(g[0, 1], torch.tensor([20.5 / 16, 40.5 / 16], dtype=torch.float64))
    torch.testing.assert_close(crop_coordinates(g, S, 4, 4), pts)


def test_pip_encode_on_a_hand_made_face():
    head = pip()
    head.neighbours.copy_(torch.tensor([[1], [0], [1]]))
    target = crop_units([[[20.0, 40.0], [50.0, 5.0], [63.0, 70.0]]])  # the last is below the crop
    idx, off, nb = head.encode(target, 4, 4)
    # (20, 40) -> cell (1, 2) -> flat 2 * 4 + 1; (50, 5) -> cell (3, 0); (63, 70) -> clamped to (3, 3)
    assert idx.tolist() == [[9, 3, 15]]
    torch.testing.assert_close(off[0, 0], torch.tensor([20.5 / 16 - 1, 40.5 / 16 - 2], dtype=torch.float64))
    assert off[0, 2, 1].item() == pytest.approx(70.5 / 16 - 3)  # beyond its cell, not clipped
    # landmark 0's neighbour is landmark 1, seen from landmark 0's cell (1, 2)
    torch.testing.assert_close(nb[0, 0, 0], torch.tensor([50.5 / 16 - 1, 5.5 / 16 - 2], dtype=torch.float64))


def test_pip_decode_inverts_encode_and_its_loss_is_zero_there():
    torch.manual_seed(0)
    head = pip(num_points=5, k=3)
    target = torch.rand(2, 5, 2, dtype=torch.float64)
    head.init_mean_shape(target[0])
    raw = perfect_raw(head, target)
    torch.testing.assert_close(head.decode(raw), target)
    assert head.loss(raw, target, build_loss("l1")).item() == pytest.approx(0.0, abs=1e-6)  # the loss runs in float32
    wrong = (raw[0], raw[1] + 0.25, raw[2])  # every offset a quarter cell off
    # L1 over (B, P, 2) offsets at the target cells: 0.25 exactly
    assert head.loss(wrong, target, build_loss("l1")).item() == pytest.approx(0.25, abs=1e-6)


def test_pip_decode_averages_a_landmark_with_its_neighbours_predictions():
    head = pip()
    head.neighbours.copy_(torch.tensor([[1], [0], [1]]))  # landmark 1 is the neighbour of 0 and 2
    target = crop_units([[[20.0, 40.0], [50.0, 5.0], [30.0, 30.0]]])
    score, offset, nb = perfect_raw(head, target)
    offset = offset.clone()
    offset[0, 1, 0] += 3.0  # landmark 1's own x is 3 cells right; its two neighbours' votes are exact
    got = head.decode((score, offset, nb))
    # merged x = (own + two exact votes) / 3: one cell (16 px) right
    assert (got[0, 1, 0] - target[0, 1, 0]).item() * (S - 1) == pytest.approx(16.0)
    torch.testing.assert_close(got[0, [0, 2]], target[0, [0, 2]])


def test_pip_picks_the_best_cell():
    head = pip()
    target = crop_units([[[20.0, 40.0], [50.0, 5.0], [30.0, 30.0]]])
    score, offset, nb = perfect_raw(head, target)
    score = score.clone()
    score[0, 0, 0, 0] = 0.5  # a weaker second peak elsewhere changes nothing
    torch.testing.assert_close(head.decode((score, offset, nb)), head.decode(perfect_raw(head, target)))
    score[0, 0, 0, 0] = 2.0  # a stronger one moves landmark 0 into cell (0, 0)
    assert head.decode((score, offset, nb))[0, 0].tolist() != pytest.approx(target[0, 0].tolist())


@pytest.mark.parametrize("option", [{}, {"pip_trust": True}, {"pip_trust": True, "pip_trust_kernel": 3},
                                    {"pip_trust": True, "pip_trust_points": True}])
def test_inference_reads_the_offsets_at_the_best_cells_as_decoding_the_dense_maps_does(option):
    """forward / with_trust (what exports run) gather each landmark's cell before its own
    1 x 1 weights; training decodes the dense maps: the two must agree."""
    torch.manual_seed(0)
    net = build_model("mobilenet_v2", 5, head="pip", input_size=S, pip_neighbours=3, **option).double().eval()
    with torch.no_grad():
        for m in net.head.modules():  # zero-initialised layers would make every offset equal
            for t in (getattr(m, "weight", None), getattr(m, "bias", None)):
                if isinstance(t, torch.nn.Parameter):
                    t.normal_(0, 0.3)
        x = torch.rand(3, 3, S, S, dtype=torch.float64)
        raw = net.raw(x)
        dense = net.head.decode(raw)
        torch.testing.assert_close(net(x), dense)
        assert dense.std() > 0.05  # the offsets matter: not every landmark at its cell centre
        if net.has_trust:
            scale, logit = net.head.read_trust(raw, dense)
            points, trust = net.with_trust(x)
            torch.testing.assert_close(points, dense)
            torch.testing.assert_close(trust[..., 0], scale)
            torch.testing.assert_close(trust[..., 1], torch.sigmoid(logit))


@pytest.mark.parametrize("h, w", [(4, 4), (7, 5)])
def test_bilinear_at_is_grid_sample_with_border_padding(h, w):
    torch.manual_seed(0)
    fmap = torch.randn(2, 3, h, w, dtype=torch.float64)
    pts = torch.rand(2, 9, 2, dtype=torch.float64) * 1.6 - 0.3  # some off the crop: edges repeat
    grid = ((pts * (S - 1) + 0.5) * (2 / S) - 1).unsqueeze(2)
    want = torch.nn.functional.grid_sample(fmap, grid, mode="bilinear", padding_mode="border",
                                           align_corners=False).squeeze(-1)
    torch.testing.assert_close(bilinear_at(fmap, pts, S), want)
    if (h, w) == (4, 4):  # a point on a cell's centre reads that cell alone: cell (1, 2) is centred on pixel (23.5, 39.5)
        centre = crop_units([[[16 * 1 + 7.5, 16 * 2 + 7.5]]]).expand(2, 1, 2)
        torch.testing.assert_close(bilinear_at(fmap, centre, S)[:, :, 0], fmap[:, :, 2, 1])


def test_neighbour_table_from_the_mean_shape():
    head = pip(num_points=4, k=2)
    mean = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.3, 0.0], [1.0, 0.0]])
    head.init_mean_shape(mean)
    assert head.neighbours.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert PIPHead(8, 3, S, neighbours=10).k == 2  # at most P - 1 others


@pytest.mark.parametrize("trunk_stride", [32, 16])  # the stride-16 grid after a deconvolution, or on the cut trunk
def test_pip_model_file_round_trip_keeps_the_neighbour_table_and_exports_to_onnx(tmp_path, trunk_stride):
    import onnxruntime as ort

    from facepoints.deploy.export import write_onnx
    from facepoints.models.package import ModelInfo, load_model, save_model
    from facepoints.schemes import get_scheme

    torch.manual_seed(0)
    kw = {"input_size": 64, "pip_neighbours": 4, "pip_stride": 16, "trunk_stride": trunk_stride}
    model = build_model("mobilenet_v3_small", 68, head="pip", **kw).eval()
    model.head.init_mean_shape(torch.rand(68, 2))
    info = ModelInfo(scheme=get_scheme("ibug68").to_dict(), backbone="mobilenet_v3_small", head="pip",
                     input_size=64, crop_scale=1.25, recipe={"model_kwargs": kw})
    save_model(model, info, tmp_path / "pip.safetensors")
    loaded, _ = load_model(tmp_path / "pip.safetensors")
    assert torch.equal(loaded.head.neighbours, model.head.neighbours)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(loaded(x), want)
    assert len(loaded.trunk) == (9 if trunk_stride == 16 else 13) and len(loaded.head.up) == (trunk_stride == 32) * 3
    write_onnx(loaded, info, tmp_path / "pip.onnx")
    got = ort.InferenceSession(str(tmp_path / "pip.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()})[0]
    assert got.shape == (3, 68, 2)
    assert np.abs(got - want.numpy()).max() * 63 < 1e-3  # pixels of the 64 px crop


def test_pip_head_refuses_losses_that_do_not_fit_grid_offsets(tmp_path):
    from facepoints.training.config import ConfigError, load_config
    from test_training import tiny_config

    with pytest.raises(ConfigError, match="PIP"):
        load_config(tiny_config(tmp_path), {"model.head": "pip", "loss.name": "wing"})


def test_a_pip_run_trains_and_saves_its_mean_shape_neighbours(tmp_path):
    from facepoints.models.package import load_model
    from facepoints.training.config import load_config
    from facepoints.training.loop import train
    from test_training import tiny_config

    cfg = load_config(tiny_config(tmp_path), {"model.head": "pip", "model.pip_neighbours": 5, "optim.epochs": 1})
    model, info = load_model(train(cfg, progress=False))
    assert info.head == "pip" and info.recipe["model_kwargs"]["pip_neighbours"] == 5
    ring = [[(i + 1 + j) % 68 for j in range(5)] for i in range(68)]  # the table before init_mean_shape
    assert model.head.neighbours.tolist() != ring
    # the nose tip's (30) neighbours in a mean face are nose points
    assert set(model.head.neighbours[30].tolist()) <= set(range(27, 36))


def test_last_conv_false_puts_the_head_on_the_channels_before_the_final_expansion():
    from facepoints.models.network import ModelBuildError, backbone_features

    full, c_full = backbone_features("mobilenet_v3_small", False)
    cut, c_cut = backbone_features("mobilenet_v3_small", False, last_conv=False)
    assert (c_full, c_cut) == (576, 96) and len(cut) == len(full) - 1
    x = torch.rand(1, 3, 64, 64)
    assert cut(x).shape == (1, 96, 2, 2) and full(x).shape == (1, 576, 2, 2)
    model = build_model("mobilenet_v3_small", 68, head="pip", input_size=64, last_conv=False).eval()
    assert model.head.score.in_channels == 96 and model(x).shape == (1, 68, 2)
    with pytest.raises(ModelBuildError, match="MobileNets"):
        backbone_features("resnet18", False, last_conv=False)


def test_a_stride_16_trunk_ends_after_its_last_stride_16_block():
    from facepoints.models.network import ModelBuildError, backbone_features

    x = torch.rand(1, 3, 64, 64)
    full, _ = backbone_features("mobilenet_v2", False)
    before = full[13].conv[0][1].running_mean.clone()
    for name, channels, blocks in (("mobilenet_v2", 96, 14), ("mobilenet_v3_small", 48, 9), ("resnet18", 256, 7)):
        trunk, c = backbone_features(name, False, stride=16)
        assert (c, len(trunk)) == (channels, blocks), name
        assert trunk.training and trunk(x).shape == (1, channels, 4, 4), name
    cut, _ = backbone_features("mobilenet_v2", False, stride=16)
    assert torch.equal(cut[13].conv[0][1].running_mean, before)  # finding the cut leaves BatchNorm as it was
    with pytest.raises(ModelBuildError, match="stride 8"):
        backbone_features("mobilenet_v2", False, stride=8)
    pip = build_model("mobilenet_v2", 68, head="pip", input_size=112, trunk_stride=16, pip_stride=16).eval()
    score, _, _ = pip.raw(torch.rand(1, 3, 112, 112))
    assert score.shape == (1, 68, 7, 7) and len(pip.head.up) == 0 and pip.head.score.in_channels == 96
    heat = build_model("mobilenet_v2", 68, head="heatmap", input_size=64, trunk_stride=16).eval()
    assert heat.raw(x).shape == (1, 68, 16, 16)  # still 1/4 of the input: two deconvolutions, not three
    with pytest.raises(ModelBuildError, match="stride-16 trunk"):
        build_model("mobilenet_v2", 68, head="pip", input_size=112, trunk_stride=16)


def test_a_pip_grid_coarser_than_the_trunk_is_refused_in_the_config(tmp_path):
    from facepoints.training.config import ConfigError, load_config
    from test_training import tiny_config

    with pytest.raises(ConfigError, match="pip_stride: 16"):
        load_config(tiny_config(tmp_path), {"model.head": "pip", "loss.name": "l1", "model.trunk_stride": 16})


@pytest.mark.parametrize("option,blocks_left_out", [({"model.last_conv": False}, 1),
                                                    ({"model.trunk_stride": 16, "model.pip_stride": 16}, 4)])
def test_a_shorter_trunk_starts_from_a_full_one_and_saves_the_option(tmp_path, option, blocks_left_out):
    from facepoints.models.package import load_model
    from facepoints.training.config import load_config
    from facepoints.training.loop import train
    from test_training import tiny_config

    pip = {"model.head": "pip", "loss.name": "l1", "max_steps": 1}
    train(load_config(tiny_config(tmp_path), pip), progress=False)
    start, _ = load_model(tmp_path / "run" / "final.safetensors")
    cfg = load_config(tiny_config(tmp_path), {**pip, **option, "output": str(tmp_path / "cut"),
                                              "optim.lr": 1e-12, "optim.weight_decay": 0.0,
                                              "model.init_from": str(tmp_path / "run" / "final.safetensors")})
    train(cfg, progress=False)
    cut, info = load_model(tmp_path / "cut" / "final.safetensors")  # rebuilt from the file alone
    (key, value), = [(k, v) for k, v in option.items() if k != "model.pip_stride"]
    assert info.architecture().kwargs[key.split(".")[1]] == value
    assert len(cut.trunk) == len(start.trunk) - blocks_left_out
    for (k, a), b in zip(start.trunk[:len(cut.trunk)].named_parameters(), cut.trunk.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    back = load_config(tiny_config(tmp_path), {**pip, "output": str(tmp_path / "back"),
                                               "model.init_from": str(tmp_path / "cut" / "final.safetensors")})
    with pytest.raises(ValueError, match="ends earlier"):
        train(back, progress=False)
