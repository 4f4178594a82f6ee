"""export.py on a tiny trained lego run: ONNX + int8, parity.json/latency.json, Pi bundle, loud failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import export
from suite.training import train
from tests.conftest import compose_train_config

FAST_EXPORT = ["quant=qdq_channel", "latency_runs=2", "threads=1", "calib_images=8", "parity_images=32"]


@pytest.fixture(scope="session")
def lego_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A lego_multitask run of two batches on 32 px synthetic images, with the .hydra/config.yaml Hydra writes."""
    run_dir = tmp_path_factory.mktemp("lego_export") / "run"
    overrides = ["experiment=lego_multitask", "debug=fast", "model.pretrained=false", "trainer.accelerator=cpu",
                 "data.image_size=32", "data.batch_size=16"]
    cfg = compose_train_config(overrides, run_dir, shared_data_dir)
    try:
        train(cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved.pop("hydra", None)
        (run_dir / ".hydra").mkdir(exist_ok=True)
        OmegaConf.save(OmegaConf.create(resolved), run_dir / ".hydra" / "config.yaml")
    finally:
        GlobalHydra.instance().clear()
    return run_dir


def test_export_writes_parity_latency_and_bundle(lego_run: Path) -> None:
    export.main([str(lego_run), *FAST_EXPORT])
    out = lego_run / "export"
    parity = json.loads((out / "parity.json").read_text())
    latency = json.loads((out / "latency.json").read_text())
    assert parity["passed"] and parity["split"] == "test" and parity["sources"] == ["real"]
    for name in ("part_logits", "color_logits"):
        assert parity["fp32"]["outputs"][name]["max_abs_diff"] < 1e-3
        assert parity["fp32"]["outputs"][name]["top1_agreement"] == 1.0
    assert parity["int8"]["chosen"] == "qdq_channel"
    assert {"torch_fp32", "ort_fp32", "ort_int8_qdq_channel"} <= set(latency["models"])
    assert all(v["1"] > 0 for v in latency["models"].values())
    assert latency["compute_floor_ms_1thread"] > 0
    model = onnx.load(str(out / "lego_classifier_fp32.onnx"))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["part_logits", "color_logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert not list(out.glob("*.data"))  # one file, no external data
    bundle = out / "pi_bundle"
    for rel in ("models/lego_classifier.onnx", "config/part_names.json", "config/color_names.json",
                "config/preprocessing.json", "lego_predictor.py"):
        assert (bundle / rel).is_file(), rel
    names = json.loads((bundle / "config" / "part_names.json").read_text())
    assert names == json.loads((lego_run / "part_names.json").read_text())


def test_bundle_predictor_matches_torch_on_a_real_split_image(lego_run: Path) -> None:
    import cv2
    import torch

    from deploy.onnx_predictor import ClassifierLoader, preprocess

    if not (lego_run / "export" / "pi_bundle").is_dir():
        export.main([str(lego_run), *FAST_EXPORT])
    cfg, datamodule, module = export.load_run(lego_run, "best", ["data.batch_size=4"])
    assert cfg.data.batch_size == 4 and cfg.model.pretrained is False  # overrides reach the run's config
    item = datamodule.splits["test"][0]
    loader = ClassifierLoader(lego_run / "export" / "pi_bundle", model_path=lego_run / "export" /
                              "lego_classifier_fp32.onnx")
    rgb = cv2.cvtColor(cv2.imread(str(item["path"])), cv2.COLOR_BGR2RGB)
    batch = preprocess(rgb, loader.config)
    expected = datamodule.dataset("test").__getitem__(0)["image"]
    assert np.abs(batch[0] - expected.numpy()).max() < 1e-4  # predictor preprocessing == evaluation transform
    with torch.no_grad():
        part, color = module.net(torch.from_numpy(batch))
    result = loader.predict(item["path"].read_bytes())
    assert result["part_id"] == module.part_names[int(part.argmax())]
    assert result["color_id"] == module.color_names[int(color.argmax())]
    assert 0 < result["part_confidence"] <= 1


def test_export_fails_loudly_when_the_graph_is_broken(lego_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_export = export.export_onnx

    def broken_export(net, path, example):  # an exporter bug: the graph's weights come out wrong
        real_export(net, path, example)
        model = onnx.load(str(path))
        for init in model.graph.initializer:
            array = onnx.numpy_helper.to_array(init)
            if array.dtype == np.float32 and array.ndim == 2:  # the heads' Gemm weights
                init.CopyFrom(onnx.numpy_helper.from_array(array[::-1].copy() * 3.0, init.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(export, "export_onnx", broken_export)
    out = lego_run / "broken_export"
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(lego_run), "--out", str(out), *FAST_EXPORT])
    assert exit_info.value.code != 0
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] is False and parity["fp32"]["passed"] is False
    assert not (out / "pi_bundle").exists()  # nothing is shipped from a failed export


def test_export_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv in ([str(tmp_path / "missing")], ["nonsense"], [str(tmp_path), "qant=auto"],
                 [str(tmp_path), "latency_runs=many"]):
        with pytest.raises(SystemExit) as exit_info:
            export.main(argv)
        assert exit_info.value.code == 2, argv
    errors = capsys.readouterr().err
    assert "missing is not a run directory" in errors
    assert "unknown option 'qant' (did you mean quant?)" in errors and "latency_runs=many" in errors


def test_export_keeps_the_old_run_dir_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    calls = []
    monkeypatch.setattr(export, "export_run", lambda *args, **kwargs: calls.append((args, kwargs)))
    export.main([f"run_dir={tmp_path}", "checkpoint=last", f"out={tmp_path / 'o'}", "quant=auto"])
    (run,), kwargs = calls[0]
    assert run.path == tmp_path and kwargs["ckpt"] == "last" and kwargs["out"] == tmp_path / "o"
    assert kwargs["overrides"] == ["quant=auto"]
    message = capsys.readouterr().err
    assert "deprecated" in message and f"python export.py {tmp_path} --ckpt last --out {tmp_path / 'o'}" in message
