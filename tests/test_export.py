"""export.py on a tiny trained lego run: ONNX + int8, parity.json/latency.json, Pi bundle, the fp32 fallback,
loud failures, options refused before any work, the export folder written as a unit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from omegaconf import OmegaConf

import export
from suite.training import train
from tests.conftest import train_run

FAST_EXPORT = ["quant=qdq_channel", "latency_runs=2", "threads=1", "calib_images=8", "parity_images=32"]
# a two-batch network has near-tied logits: any agreement is accepted where the test is about the int8 path
INT8_ANY = [*FAST_EXPORT, "int8_min_agreement=0"]


@pytest.fixture(scope="session")
def lego_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A lego_multitask run of two batches on 32 px synthetic images, with the .hydra/config.yaml Hydra writes."""
    run_dir = tmp_path_factory.mktemp("lego_export") / "run"
    overrides = ["experiment=lego_multitask", "debug=fast", "model.pretrained=false", "trainer.accelerator=cpu",
                 "data.image_size=32", "data.batch_size=16"]
    train_run(overrides, run_dir, shared_data_dir)
    return run_dir


def test_export_writes_parity_latency_and_bundle(lego_run: Path) -> None:
    export.main([str(lego_run), *INT8_ANY])
    out = lego_run / "export"
    # the task's bundle (suite.exporting), which predict.py and the service read
    for name in ("model.onnx", "preprocessing.json", "parity.json", "spec.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "parity.json").read_text())["graphs"]["model"]["passed"] is True
    parity = json.loads((out / "int8" / "parity.json").read_text())
    latency = json.loads((out / "int8" / "latency.json").read_text())
    assert parity["passed"] and parity["split"] == "test" and parity["sources"] == ["real"]
    for name in ("part_logits", "color_logits"):
        assert parity["fp32"]["outputs"][name]["max_abs_diff"] < 1e-3
        assert parity["fp32"]["outputs"][name]["top1_agreement"] == 1.0
    assert parity["int8"]["chosen"] == "qdq_channel" and parity["int8"]["shipped"] is True
    assert {"torch_fp32", "ort_fp32", "ort_int8_qdq_channel"} <= set(latency["models"])
    assert all(v["1"] > 0 for v in latency["models"].values())
    assert latency["compute_floor_ms_1thread"] > 0
    model = onnx.load(str(out / "int8" / "lego_classifier_fp32.onnx"))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["part_logits", "color_logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert not list(out.rglob("*.data"))  # one file, no external data
    bundle = out / "pi_bundle"
    for rel in ("models/lego_classifier.onnx", "config/part_names.json", "config/color_names.json",
                "config/preprocessing.json", "lego_predictor.py"):
        assert (bundle / rel).is_file(), rel
    names = json.loads((bundle / "config" / "part_names.json").read_text())
    assert names == json.loads((lego_run / "part_names.json").read_text())
    assert json.loads((bundle / "config" / "preprocessing.json").read_text())["precision"] == "int8"
    assert (bundle / "models" / "lego_classifier.onnx").read_bytes() == (out / "int8" / "qdq_channel.onnx").read_bytes()
    assert not (lego_run / "export.partial").exists()


def test_bundle_predictor_matches_torch_on_a_real_split_image(lego_run: Path) -> None:
    import cv2
    import torch

    from deploy.onnx_predictor import ClassifierLoader, preprocess

    if not (lego_run / "export" / "pi_bundle").is_dir():
        export.main([str(lego_run), *INT8_ANY])
    cfg, datamodule, module = export.load_run(lego_run, "best", ["data.batch_size=4"])
    assert cfg.data.batch_size == 4 and cfg.model.pretrained is False  # overrides reach the run's config
    item = datamodule.splits["test"][0]
    loader = ClassifierLoader(lego_run / "export" / "pi_bundle", model_path=lego_run / "export" / "int8" /
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

    def broken_export(net, path, example, opset=export.DEFAULT_OPSET):  # an exporter bug: wrong weights
        real_export(net, path, example, opset)
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
    assert exit_info.value.code == 2
    assert not out.exists()  # nothing is shipped from a failed export
    failed = lego_run / "broken_export.failed"  # its reports are kept apart for the user to read
    parity = json.loads((failed / "int8" / "parity.json").read_text())
    assert parity["passed"] is False and parity["fp32"]["passed"] is False
    assert not (failed / "pi_bundle").exists()


def _disagreeing_quantize(fp32, out, recipe, calibration, method=None):
    """An int8 model whose logits are permuted: it never keeps the top-1 agreement."""
    model = onnx.load(str(fp32))
    for init in model.graph.initializer:
        array = onnx.numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.ndim == 2:
            init.CopyFrom(onnx.numpy_helper.from_array(array[::-1].copy() * 3.0, init.name))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def test_no_int8_ships_fp32_loudly_and_exits_0(lego_run: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(export, "quantize", _disagreeing_quantize)
    out = lego_run / "fp32_fallback"
    export.main([str(lego_run), "--out", str(out), *FAST_EXPORT, "opset=11"])  # returns: exit status 0
    assert "INT8 NOT SHIPPED" in capsys.readouterr().err
    parity = json.loads((out / "int8" / "parity.json").read_text())
    assert parity["passed"] is True and parity["int8"]["chosen"] is None and parity["int8"]["shipped"] is False
    assert parity["int8"]["variants"]["qdq_channel"]["min_top1_agreement"] < 0.99
    bundle = out / "pi_bundle"
    fp32 = out / "int8" / "lego_classifier_fp32.onnx"
    assert (bundle / "models" / "lego_classifier.onnx").read_bytes() == fp32.read_bytes()
    assert json.loads((bundle / "config" / "preprocessing.json").read_text())["precision"] == "fp32"
    for path in (fp32, out / "model.onnx"):  # the seed's opset, through the TorchScript exporter
        assert [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")] == [11]


def test_require_int8_true_is_strict(lego_run: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(export, "quantize", _disagreeing_quantize)
    out = lego_run / "strict"
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(lego_run), "--out", str(out), *FAST_EXPORT, "require_int8=true"])
    assert exit_info.value.code == 2
    assert "require_int8=true: no int8 recipe keeps" in capsys.readouterr().err
    assert not out.exists()
    assert json.loads((lego_run / "strict.failed" / "int8" / "parity.json").read_text())["passed"] is False


def test_export_folder_is_written_as_a_unit(lego_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = lego_run / "unit"
    export.main([str(lego_run), "--out", str(out), *FAST_EXPORT, "quant=none"])
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert (out / "int8" / "lego_classifier_fp32.onnx").is_file() and not (out / "int8" / "stale.onnx").exists()
    (out / "int8" / "stale.onnx").write_bytes(b"from an earlier export")
    before[Path("int8/stale.onnx")] = b"from an earlier export"

    def crash(*args, **kwargs):  # the re-export dies after writing its new models
        raise RuntimeError("killed while timing")

    monkeypatch.setattr(export, "latency", crash)
    with pytest.raises(SystemExit):
        export.main([str(lego_run), "--out", str(out), *INT8_ANY])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the earlier export, whole: no new model beside the old parity.json
    assert not (lego_run / "unit.partial").exists()
    monkeypatch.undo()
    export.main([str(lego_run), "--out", str(out), *INT8_ANY])
    assert not (out / "int8" / "stale.onnx").exists()  # a new export replaces the folder, not file by file
    assert (out / "int8" / "qdq_channel.onnx").is_file()


def test_export_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv in ([str(tmp_path / "missing")], ["nonsense"], [str(tmp_path), "qant=auto"],
                 [str(tmp_path), "latency_runs=many"]):
        with pytest.raises(SystemExit) as exit_info:
            export.main(argv)
        assert exit_info.value.code == 2, argv
    errors = capsys.readouterr().err
    assert "missing is not a run directory" in errors
    assert "unknown option 'qant' (did you mean quant?)" in errors and "latency_runs=many" in errors


@pytest.mark.parametrize("item", ["require_int8=treu", "threads=0", "threads=1,x", "latency_runs=0", "calib_images=0",
                                  "parity_images=-1", "int8_min_agreement=1.5", "opset=9", "quant=qdq_bogus",
                                  "calibration=median"])
def test_bad_option_values_exit_2_before_any_work(lego_run: Path, item: str, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("the run was loaded before the options were checked")

    monkeypatch.setattr(export, "load_run", no_work)
    out = lego_run / "never"
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(lego_run), "--out", str(out), item])
    assert exit_info.value.code == 2
    assert item.split("=")[0] in capsys.readouterr().err  # the message names the key
    assert not out.exists() and not (lego_run / "never.partial").exists()


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


@pytest.mark.slow
def test_export_of_another_task_writes_its_bundle_only(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "segmentation_run"
    cfg = make_cfg(["debug=fast", "data.synthetic_images=12", "data.synthetic_size=32", "model.log_images=0"],
                   run_dir)
    train(cfg)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), run_dir / ".hydra" / "config.yaml")
    export.main([str(run_dir), "latency_runs=1", "parity_images=4"])
    out = run_dir / "export"
    assert json.loads((out / "preprocessing.json").read_text())["task"] == "segmentation"
    assert json.loads((out / "parity.json").read_text())["passed"] is True
    assert not (out / "int8").exists() and not (out / "pi_bundle").exists()  # int8 and the Pi bundle are LEGO's
