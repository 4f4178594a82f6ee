"""LEGO predictor: export hooks (softmax per head), images and folders -> part and colour top-k, the
service's answer, and a tiny trained run served through its checkpoint and its bundle (slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deploy.backends import TorchBackend
from deploy.onnx_predictor import preprocess
from deploy.predictors.lego import LegoPredictor
from suite.errors import ConfigError, DataError
from suite.inference import bundle_metadata
from tests.lightning_modules.test_lego import COLOR_NAMES, PART_NAMES, make_module, make_spec

SIZE = 16  # make_spec's input


class ModuleBackend(TorchBackend):
    """A configured module's export graphs in memory (what TorchBackend builds from a checkpoint)."""

    def __init__(self, module):  # noqa: ANN001 - a LegoModule
        graphs = module.export_graphs()
        self.networks = {g.name: g for g in graphs}
        self.meta = bundle_metadata(module.spec, graphs, module.inference_options())
        self.hashes = {}


def lego_module(heads: tuple[str, ...] = ("part", "color")):  # noqa: ANN201
    torch.manual_seed(0)
    module = make_module()
    module.configure(make_spec(heads))
    return module.eval()


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_export_hooks_give_probabilities_per_head() -> None:
    module = lego_module()
    [graph] = module.export_graphs()
    assert (graph.name, graph.input_name, graph.output_names) == ("model", "image", ("part_prob", "color_prob"))
    assert tuple(graph.example.shape[1:]) == (3, SIZE, SIZE)
    images = torch.rand(3, 3, SIZE, SIZE) * 255
    with torch.no_grad():
        part, color = graph.network(images)
        logits = module(images)
    torch.testing.assert_close(part.sum(1), torch.ones(3))
    torch.testing.assert_close(part, logits["part"].softmax(1))
    torch.testing.assert_close(color, logits["color"].softmax(1))
    assert torch.equal(module.export_inputs({"image": images})["model"], images)  # already raw 0-255
    options = module.inference_options()
    assert options["image_size"] == SIZE and options["top_k"] == 5 and options["heads"] == ["part", "color"]
    json.dumps(options)
    [color_only] = lego_module(("color",)).export_graphs()
    assert color_only.output_names == ("color_prob",)


def test_images_and_folders_give_top_k_parts_and_colours(tmp_path: Path) -> None:
    module = lego_module()
    paths = write_images(tmp_path / "imgs" / "sub", 3)
    single = write_images(tmp_path / "one", 1, seed=1)[0]
    predictor = LegoPredictor(ModuleBackend(module), {"top_k": "2"})
    summary = predictor.run([tmp_path / "imgs", single], tmp_path / "out", progress=False)
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = {r["item_id"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"sub/img0.png", "sub/img1.png", "sub/img2.png", "img0.png"}
    for path in [*paths, single]:
        row = rows["img0.png" if path == single else f"sub/{path.name}"]
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        with torch.no_grad():
            logits = module(torch.from_numpy(preprocess(rgb, {"size": SIZE})))
        part = logits["part"].softmax(1)[0]
        assert row["pred"] == row["part_pred"] == PART_NAMES[int(part.argmax())]
        assert float(row["part_confidence"]) == pytest.approx(float(part.max()), abs=1e-5)
        assert row["color_pred"] == COLOR_NAMES[int(logits["color"].argmax())]
        top = row["part_top_k"].split(";")
        assert len(top) == 2 and top[0].split(":")[0] == row["part_pred"]
        assert float(top[0].split(":")[1]) >= float(top[1].split(":")[1])
        assert sum(float(row[f"score_{name}"]) for name in PART_NAMES) == pytest.approx(1.0, abs=1e-4)
    assert summary["images"] == 4 and summary["top_k"] == 2 and 0 < summary["part_mean_confidence"] <= 1


def test_service_answer_and_refusals(tmp_path: Path) -> None:
    predictor = LegoPredictor(ModuleBackend(lego_module()))
    image = write_images(tmp_path, 1)[0]
    answer = predictor.predict_bytes(image.read_bytes(), image.name)
    # the Pi service's keys, plus the top-k lists
    assert {"part_id", "part_confidence", "color_id", "color_confidence"} <= set(answer)
    assert [c["id"] for c in answer["part_top_k"]][0] == answer["part_id"] and len(answer["part_top_k"]) == 3
    assert answer["color_top_k"][0]["confidence"] == answer["color_confidence"]
    json.dumps(answer)
    with pytest.raises(DataError, match="bad.jpg"):
        predictor.predict_bytes(b"not an image", "bad.jpg")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not an image"):
        predictor.discover([tmp_path / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images under"):
        predictor.discover([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="top_k"):
        LegoPredictor(ModuleBackend(lego_module()), {"top_k": "0"})
    colour_only = LegoPredictor(ModuleBackend(lego_module(("color",))))
    assert set(colour_only.predict_bytes(image.read_bytes(), image.name)) == {"color_id", "color_confidence",
                                                                              "color_top_k"}


# -- a tiny trained run: checkpoint and bundle (slow: minutes of training on a loaded 2-core machine) -------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    from tests.conftest import train_run

    run_dir = tmp_path_factory.mktemp("lego_predict") / "run"
    overrides = ["experiment=lego_multitask", "debug=fast", "model.pretrained=false", "trainer.accelerator=cpu",
                 "data.image_size=32", "data.batch_size=16"]
    train_run(overrides, run_dir, shared_data_dir)
    return run_dir


@pytest.mark.slow
def test_checkpoint_and_bundle_agree_on_unseen_images(tiny_run: Path, tmp_path: Path) -> None:
    import predict
    from datamodules.synthetic.lego import GENERATOR
    from suite.exporting import export_run

    parity = export_run(tiny_run, latency_runs=0)
    assert parity["passed"]
    unseen = GENERATOR.ensure(tmp_path / "unseen", 7, size=32, legacy_per_combo=1, b200c_views=1, real_captures=4)
    images = sorted(unseen.glob("real/*/*.jpg"))[:12]  # the camera-like captures
    assert len(images) == 12
    outs = {}
    for source, name in ((tiny_run, "torch"), (Path(parity["bundle"]), "onnx")):
        summary = predict.predict([str(source), *map(str, images), "--out", str(tmp_path / name), "--no-progress"])
        assert summary["backend"] == name and summary["images"] == len(images)
        with open(tmp_path / name / "predictions.csv", newline="") as fh:
            outs[name] = list(csv.DictReader(fh))
    for a, b in zip(outs["torch"], outs["onnx"], strict=True):
        assert a["item_id"] == b["item_id"]
        assert (a["part_pred"], a["color_pred"]) == (b["part_pred"], b["color_pred"])
        assert float(a["part_confidence"]) == pytest.approx(float(b["part_confidence"]), abs=1e-4)


def test_the_onnx_path_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys; import deploy.predictors.lego; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
