"""P2 tasks: canvas generator, mAP@0.5 and mIoU on hand-made cases, detector/segmenter, training, P2 evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xbarlab.papers.p2.canvas import CanvasConfig, generate_canvas, generate_canvases, source_images
from xbarlab.papers.p2.detection import (
    STRIDE,
    Detections,
    TinyCenterNet,
    average_precision,
    box_iou,
    decode,
    encode_targets,
    mean_average_precision,
    nms,
)
from xbarlab.papers.p2.segmentation import TinySegNet, confusion_matrix, iou_per_class, miou

MINI = "fashion-mnist-mini"


@pytest.fixture(scope="module")
def source() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    return source_images(MINI, "train")


# ------------------------------------------------------------------------------------------------ canvases


def test_canvas_deterministic_per_seed_and_index(source: tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]) -> None:
    images, labels, classes = source
    a = generate_canvas(images, labels, 3, seed=5)
    b = generate_canvas(images, labels, 3, seed=5)
    c = generate_canvas(images, labels, 3, seed=6)
    assert torch.equal(a.image, b.image) and torch.equal(a.boxes, b.boxes) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.image, c.image)
    small = generate_canvases(images, labels, 4, seed=5, classes=classes)
    large = generate_canvases(images, labels, 9, seed=5, classes=classes)
    assert torch.equal(small.images, large.images[:4]) and torch.equal(small.labels, large.labels[:4])
    assert torch.equal(small.images[3], a.image) and small.num_classes == 10
    assert small.images.dtype == torch.uint8 and small.images.shape == (4, 1, 64, 64)


def test_boxes_match_masks(source: tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]) -> None:
    images, labels, _ = source
    cfg = CanvasConfig(size=64, min_objects=2, max_objects=5)
    n_objects = 0
    for i in range(12):
        c = generate_canvas(images, labels, i, seed=0, config=cfg)
        n = c.labels.numel()
        n_objects += n
        assert c.boxes.shape == (n, 4) and 1 <= n <= 5
        assert torch.equal(c.mask > 0, c.instances > 0)
        assert set(torch.unique(c.instances).tolist()) == set(range(n + 1))
        for j in range(n):
            ys, xs = torch.nonzero(c.instances == j + 1, as_tuple=True)
            tight = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            assert c.boxes[j].tolist() == tight
            assert torch.all(c.mask[ys, xs] == c.labels[j] + 1)
            assert int(c.labels[j]) == int(labels[c.sources[j]])
        if n > 1:
            iou = box_iou(c.boxes, c.boxes)
            assert torch.equal(iou, torch.eye(n))  # boxes never overlap
    assert n_objects >= 24


def test_canvas_config_errors() -> None:
    with pytest.raises(ValueError, match="max_scale"):
        CanvasConfig(size=32, max_scale=1.5)
    with pytest.raises(ValueError, match="min_objects"):
        CanvasConfig(min_objects=5, max_objects=4)


# ------------------------------------------------------------------------------------------------ mAP


def _det(boxes: list[list[float]], scores: list[float], labels: list[int]) -> Detections:
    return Detections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores),
        torch.tensor(labels, dtype=torch.int64),
    )


def _gt(boxes: list[list[float]], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64)


def test_average_precision_all_point_interpolation() -> None:
    # TP, FP, TP over 2 ground-truth boxes: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    ap = average_precision(torch.tensor([0.5, 0.5, 1.0]), torch.tensor([1.0, 0.5, 2 / 3]))
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert average_precision(torch.tensor([0.25, 0.5]), torch.tensor([1.0, 1.0])) == pytest.approx(0.5)


def test_map_hand_made_cases() -> None:
    gt = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]), _gt([[5, 5, 15, 25]], [1])]
    perfect = [_det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 0]), _det([[5, 5, 15, 25]], [0.7], [1])]
    m, aps = mean_average_precision(perfect, gt, 3)
    assert m == pytest.approx(1.0) and aps == [pytest.approx(1.0), pytest.approx(1.0), None]
    # class 0: a duplicate of box A (scored above box B) is a false positive → TP, FP, TP → AP 5/6;
    # class 1: predicted as class 2 → AP 0; class 2 has no ground truth and is left out of the mean
    dup = [
        _det([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0]),
        _det([[5, 5, 15, 25]], [0.95], [2]),
    ]
    m, aps = mean_average_precision(dup, gt, 3)
    assert aps[0] == pytest.approx(5 / 6) and aps[1] == 0.0 and aps[2] is None
    assert m == pytest.approx((5 / 6 + 0.0) / 2)
    # IoU exactly 0.5 is a match, 0.49 is not; a detection in an image without that class is a false positive
    half = [_det([[0, 0, 10, 20]], [0.5], [0]), _det([], [], [])]
    assert mean_average_precision(half, [_gt([[0, 0, 10, 10]], [0]), _gt([], [])], 1)[0] == pytest.approx(1.0)
    below = [_det([[0, 0, 10, 20.5]], [0.5], [0]), _det([[0, 0, 4, 4]], [0.9], [0])]
    assert mean_average_precision(below, [_gt([[0, 0, 10, 10]], [0]), _gt([], [])], 1)[0] == 0.0
    # a higher-scored false positive in another image halves the precision at full recall
    fp_first = [_det([[0, 0, 10, 10]], [0.5], [0]), _det([[0, 0, 4, 4]], [0.9], [0])]
    assert mean_average_precision(fp_first, [_gt([[0, 0, 10, 10]], [0]), _gt([], [])], 1)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lengths differ"):
        mean_average_precision(perfect, gt[:1], 3)


def test_box_iou_and_nms() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [30.0, 30.0, 40.0, 40.0]])
    iou = box_iou(a, a)
    assert float(iou[0, 1]) == pytest.approx(50 / 150) and float(iou[0, 2]) == 0.0
    keep = nms(a, torch.tensor([0.9, 0.95, 0.5]), 0.3)
    assert keep.tolist() == [1, 2]
    assert nms(a, torch.tensor([0.9, 0.95, 0.5]), 0.5).tolist() == [1, 0, 2]


def test_encode_decode_roundtrip_gives_perfect_map() -> None:
    boxes = torch.tensor([[[4.0, 8.0, 28.0, 30.0], [36.0, 40.0, 60.0, 62.0]], [[10.0, 10.0, 30.0, 22.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[3, 7], [1, -1]])
    t = encode_targets(boxes, labels, 10, (16, 16))
    assert float(t.heat.max()) == 1.0 and int(t.valid.sum()) == 3
    assert t.size[0, 0].tolist() == [6.0, 5.5] and t.offset[0, 0].tolist() == pytest.approx([0.0, 0.75])
    out = torch.full((2, 14, 16, 16), -20.0)
    for i in range(2):
        for j in range(2):
            if labels[i, j] < 0:
                continue
            cell = int(t.index[i, j])
            py, px = divmod(cell, 16)
            out[i, int(labels[i, j]), py, px] = 5.0
            out[i, 10:12, py, px] = t.size[i, j]
            out[i, 12:14, py, px] = t.offset[i, j]
    dets = decode(out, 10)
    assert [d.labels.tolist() for d in dets] == [[3, 7], [1]]
    assert torch.allclose(dets[0].boxes, boxes[0], atol=1e-4) and STRIDE == 4
    gts = [(boxes[0], labels[0]), (boxes[1, :1], labels[1, :1])]
    assert mean_average_precision(dets, gts, 10)[0] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ mIoU / models


def test_miou_hand_made() -> None:
    target = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    conf = confusion_matrix(pred, target, 4)
    assert conf[:3, :3].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    iou = iou_per_class(conf)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and torch.isnan(iou[3])
    assert miou(conf) == pytest.approx(0.5)  # class 3 (absent everywhere) is left out
    assert miou(confusion_matrix(target, target, 3)) == 1.0
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix(pred, target, 2)


def test_model_shapes_and_sizes() -> None:
    det, seg = TinyCenterNet(10), TinySegNet(11)
    x = torch.zeros(2, 1, 64, 64)
    assert det.eval()(x).shape == (2, 14, 16, 16) and seg.eval()(x).shape == (2, 11, 64, 64)
    assert sum(p.numel() for p in det.parameters()) == 42430
    assert sum(p.numel() for p in seg.parameters()) == 30571


# ------------------------------------------------------------------------------------------------ training / eval


def test_training_resume_is_identical(tmp_path: Path) -> None:
    from xbarlab.papers.p2.train_tasks import TaskTrainConfig, load_task_model, make_canvases, train_task

    torch.set_num_threads(1)
    tr = make_canvases("train", 16, 0, dataset=MINI)
    te = make_canvases("test", 8, 1, dataset=MINI)
    cfg = TaskTrainConfig(task="segmenter", epochs=2, batch_size=8, width=8, dataset=MINI)
    full = train_task(cfg, tmp_path / "full", train_data=tr, test_data=te, progress=False)
    assert full is not None
    assert train_task(cfg, tmp_path / "split", train_data=tr, test_data=te, progress=False, stop_after=1) is None
    assert not (tmp_path / "split" / "model.json").exists()
    resumed = train_task(cfg, tmp_path / "split", train_data=tr, test_data=te, progress=False)
    assert resumed is not None and [h["epoch"] for h in resumed["history"]] == [1, 2]
    a, _ = load_task_model(tmp_path / "full" / "model")
    b, meta = load_task_model(tmp_path / "split" / "model")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert resumed["test_metric"] == full["test_metric"] and meta["task"] == "segmenter"


def test_p2_noise_hardware_gives_eta_max_w() -> None:
    import xbarlab
    from xbarlab.papers.p2.noise import measured_noise_ratio, p2_noise_hardware

    torch.manual_seed(0)
    net = TinySegNet(11)
    for eta in (0.05, 0.2):
        chip = xbarlab.program(xbarlab.convert(net, p2_noise_hardware(eta)), 0)
        assert measured_noise_ratio(chip, eta) == pytest.approx(1.0, abs=0.03)
    clean = xbarlab.program(xbarlab.convert(net, p2_noise_hardware(0.0)), 0)
    x = torch.rand(1, 1, 64, 64)
    assert torch.allclose(clean.eval()(x), net.eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match="eta"):
        p2_noise_hardware(0.5)


def test_shipped_models_and_p2_pipeline(tmp_path: Path) -> None:
    from xbarlab.experiments import Store
    from xbarlab.papers.p2.experiments import drift_sweeps, noise_sweeps, parse_models, run_p2_sweeps
    from xbarlab.papers.p2.train_tasks import load_shipped, shipped_path

    for task in ("detector", "segmenter"):
        if not shipped_path(task).with_suffix(".json").is_file():
            pytest.skip("shipped task weights missing")
        model, meta = load_shipped(task)
        assert shipped_path(task).with_suffix(".safetensors").stat().st_size < 2e6
        assert sum(p.numel() for p in model.parameters()) <= 100_000
        assert meta["test_metric"] > 0.5
    small = {"chips": 1, "test_count": 16, "calib_batches": 2, "calib_batch_size": 8, "dataset": MINI}
    texts = noise_sweeps(parse_models(["segmenter"]), [0.1], **small)
    texts += drift_sweeps(parse_models(["detector"]), [1e6], **{**small, "test_count": 8, "converter_batches": 1})
    report = run_p2_sweeps(texts, tmp_path / "p2.sqlite", tmp_path / "report", progress=False)
    with Store(tmp_path / "p2.sqlite") as db:
        noise = db.rows("p2-segmenter-noise")
        small_batch = db.rows("p2-segmenter-noise-batch4")
        drift = db.rows("p2-detector-drift")
    assert {r.mitigation for r in noise} == {"none", "bn_adapt", "bn_online"}
    assert [r.mitigation for r in small_batch] == ["bn_online"]
    assert small_batch[0].config["data"]["batch_size"] == 4
    assert all(r.metrics["weight_noise_rel_std"] / 0.1 == pytest.approx(1.0, abs=0.05) for r in noise)
    assert noise[0].metrics["clean_mIoU_pct"] > 40.0
    assert {r.mitigation for r in drift} == {"none", "drift_comp_global", "drift_comp_column", "bn_adapt", "bn_online"}
    assert drift[0].config["hardware"]["keep_digital"] == []  # every conv on crossbars, the head too
    text = report.markdown.read_text()
    assert "mIoU_pct mean" in text and "mAP50_pct mean" in text
    assert any(p.name.endswith("mIoU-pct.png") and p.stat().st_size > 10_000 for p in report.plots)
    with pytest.raises(ValueError, match="--models: invalid value 'resnet'"):
        parse_models(["resnet"])
    with pytest.raises(ValueError, match=r"--etas: eta: invalid value 0.5; allowed: a number in \(0, 0.3\]"):
        noise_sweeps(parse_models(["segmenter"]), [0.5])
    with pytest.raises(ValueError, match=r"--etas: value 0\.1 listed twice"):
        noise_sweeps(parse_models(["segmenter"]), [0.1, 0.1])
    with pytest.raises(ValueError, match=r"--times: value 1\.0 listed twice"):
        drift_sweeps(parse_models(["segmenter"]), [1.0, 1.0])


def test_p2_pipelines_refuse_an_analog_layer_that_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """P2's noise and drift experiments calibrate/verify every chip, converters or not: a converted layer that the
    model never calls is a CoverageError naming it, not a silently digital number."""
    from xbarlab.papers.p2.train_tasks import load_shipped, shipped_path

    if not shipped_path("segmenter").with_suffix(".json").is_file():
        pytest.skip("shipped task weights missing")

    def with_unused_head(task: str) -> tuple[torch.nn.Module, dict[str, object]]:
        model, meta = load_shipped(task)
        model.add_module("unused_head", torch.nn.Conv2d(1, 2, 1))  # converted to analog, never called
        return model, meta

    from xbarlab.papers.p2 import trial
    from xbarlab.papers.p2.experiments import drift_sweeps, noise_sweeps, parse_models, run_p2_sweeps

    monkeypatch.setattr(trial, "load_shipped", with_unused_head)
    monkeypatch.setattr(trial, "_CACHE", {})
    small = {"chips": 1, "test_count": 8, "calib_batches": 1, "calib_batch_size": 8, "dataset": MINI}
    for texts in (
        noise_sweeps(parse_models(["segmenter"]), [0.1], **small, small_batch_size=None),
        drift_sweeps(parse_models(["segmenter"]), [1e6], **small),
    ):
        with pytest.raises(RuntimeError, match=r"CoverageError.*unused_head"):
            run_p2_sweeps(texts, tmp_path / "p2.sqlite", tmp_path / "report", progress=False)
