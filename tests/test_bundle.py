"""The model bundle: round trip, and a clear ModelFileError for every kind of broken folder."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from lstm_trading.core.errors import ModelFileError
from lstm_trading.models.bundle import FORMAT_VERSION, load_bundle


@pytest.fixture
def bundle_dir(tiny_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_run / "model", target)
    return target


def _edit_json(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = folder / "bundle.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def test_bundle_json_documents_the_model(tiny_run: Path) -> None:
    document = json.loads((tiny_run / "model" / "bundle.json").read_text())
    assert document["format_version"] == FORMAT_VERSION
    assert document["model"] == {"input_size": 13, "hidden_size": 16, "num_layers": 1, "output_size": 3}
    assert len(document["features"]["names"]) == 13 and document["features"]["config"]["rsi"] == 840
    assert document["targets"]["max_len"] == 60
    assert document["feature_scaler"]["kind"] == "standard" and len(document["feature_scaler"]["scale"]) == 13
    assert set(document["target_scaler"]) == {"data_min", "data_range"}
    assert document["class_names"] == ["Buy", "Sell", "Invalid"]
    data = document["training"]["data"]
    assert data["symbol"] == "ETHUSDT" and data["rows"] > 0 and data["first_timestamp"] < data["last_timestamp"]
    assert document["validation"]["best_val_loss"] > 0


def test_round_trip_gives_the_same_outputs(tiny_run: Path) -> None:
    bundle = load_bundle(tiny_run)  # the run folder or its model/ folder
    again = load_bundle(tiny_run / "model")
    features, lengths = torch.randn(3, 20, 13), torch.tensor([20, 5, 11])
    for a, b in zip(bundle.model.model(features, lengths), again.model.model(features, lengths), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_newer_format_version_is_refused(bundle_dir: Path) -> None:
    _edit_json(bundle_dir, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="format version 2 is newer than this lstm-trading reads"):
        load_bundle(bundle_dir)


def test_missing_key_is_named(bundle_dir: Path) -> None:
    _edit_json(bundle_dir, lambda d: d.pop("target_scaler"))
    with pytest.raises(ModelFileError, match="missing key 'target_scaler'"):
        load_bundle(bundle_dir)


def test_wrong_shapes_are_named(bundle_dir: Path) -> None:
    _edit_json(bundle_dir, lambda d: d["model"].update(hidden_size=32))
    with pytest.raises(ModelFileError, match=r"tensor 'lstm.weight_ih_l0' has shape \(64, 13\)"):
        load_bundle(bundle_dir)


def test_truncated_weights_are_detected(bundle_dir: Path) -> None:
    weights = bundle_dir / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="truncated or was replaced"):
        load_bundle(bundle_dir)
    _edit_json(bundle_dir, lambda d: d["weights"].pop("sha256"))  # even without the checksum
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_bundle(bundle_dir)


class _WritesAFile:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (Path(self.target), "pwned"))  # type: ignore[attr-defined]


def test_a_pickle_renamed_to_safetensors_never_runs(bundle_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled.txt"
    payload = _WritesAFile()
    payload.target = str(marker)  # type: ignore[attr-defined]
    (bundle_dir / "weights.safetensors").write_bytes(pickle.dumps({"state": payload}))
    _edit_json(bundle_dir, lambda d: d["weights"].pop("sha256"))
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_bundle(bundle_dir)
    assert not marker.exists()


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"bundle.json: missing"):
        load_bundle(tmp_path)
    # regression: a mistyped run folder was reported as "nowhere/bundle.json: missing"
    with pytest.raises(ModelFileError, match=f"^{tmp_path / 'nowhere'}: no such run folder$"):
        load_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ("x", '"training" must be an object, not str'),
        ({"test_start_times": "soon"}, '"training.test_start_times" must be list, not str'),
        ({"test_start_times": [1.5]}, '"training.test_start_times" must be a list of whole numbers (UTC seconds)'),
        ({"class_counts": {"Buy": "many"}}, '"training.class_counts" must map names to whole numbers'),
        ({"sources": {"database": "x.db"}}, "\"training.sources\" has unknown keys ['database']"),
        ({"train_period": [1, 2, 3]}, '"training.train_period" must be [first, last]'),
    ],
)
def test_a_tampered_training_record_is_named_on_load(tiny_run: Path, tmp_path: Path, training, message) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "model"
    shutil.copytree(tiny_run / "model", folder)
    document = json.loads((folder / "bundle.json").read_text())
    document["training"] = training
    (folder / "bundle.json").write_text(json.dumps(document))
    with pytest.raises(ModelFileError) as caught:
        load_bundle(folder)
    assert str(caught.value) == f"{folder / 'bundle.json'}: {message}"


def test_the_training_record_reads_back_as_written(tiny_run: Path) -> None:
    bundle = load_bundle(tiny_run)
    document = json.loads((tiny_run / "model" / "bundle.json").read_text())
    assert bundle.training.to_json() == document["training"]
    assert bundle.training.class_counts == document["training"]["class_counts"]
    assert len(bundle.training.test_start_times) == bundle.training.split_sizes["test"]
