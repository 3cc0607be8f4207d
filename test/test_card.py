"""Model cards: one file read by everything; malformed cards give one clear error."""
import pytest

from seg_perception.card import CardError, card_for_table, load_card
from seg_perception.data.classes import CAMVID


def test_roundtrip(tmp_path):
    card = card_for_table("m", "essnet_d", CAMVID, 480, 360, files={"weights": "m.pt"},
                          metrics={"val_miou": 61.2})
    card.save(tmp_path / "m.yaml")
    back = load_card(tmp_path / "m.pt")  # the card beside a weights file
    assert back.class_names == list(CAMVID.names)
    assert back.class_colors[3] == (128, 64, 128)
    assert back.drivable_classes == [3] and back.ignore_index == 11
    assert (back.input_width, back.input_height) == (480, 360)
    assert back.file("weights") == (tmp_path / "m.pt").resolve()
    assert back.metrics["val_miou"] == 61.2
    assert back.palette.shape == (256, 3) and tuple(back.palette[8]) == (64, 0, 128)


def test_missing_card_names_the_file(tmp_path):
    with pytest.raises(CardError, match="m.yaml not found"):
        load_card(tmp_path / "m.onnx")


@pytest.mark.parametrize("text,msg", [
    ("name: x\n", "malformed"),
    ("[1, 2]\n", "not a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_malformed_cards(tmp_path, text, msg):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(CardError, match=msg):
        load_card(tmp_path / "bad.yaml")


def test_bad_drivable_class_and_resolution(tmp_path):
    card = card_for_table("m", "essnet_d", CAMVID, 480, 360)
    card.drivable_classes = [42]
    card.save(tmp_path / "m.yaml")
    with pytest.raises(CardError, match="drivable class 42"):
        load_card(tmp_path / "m.yaml")
    card.drivable_classes = [3]
    card.input_width = 481
    card.save(tmp_path / "m.yaml")
    with pytest.raises(CardError, match="multiple of 8"):
        load_card(tmp_path / "m.yaml")


def test_a_run_folder_names_its_card(tmp_path, monkeypatch):
    """`--model RUN_FOLDER` (what train, adapt and release write) finds the one card in it; a
    folder with none or several says so; a shipped model's name still wins over a folder of
    that name in the current directory."""
    from seg_perception.paths import DEFAULT_MODEL, resolve_model
    run = tmp_path / "run"
    run.mkdir()
    card_for_table("m", "essnet_d", CAMVID, 96, 72).save(run / "m.yaml")
    (run / "log.csv").write_text("epoch\n")
    assert resolve_model(str(run)) == run / "m.yaml"
    card_for_table("n", "essnet_d", CAMVID, 96, 72).save(run / "n.yaml")
    with pytest.raises(FileNotFoundError, match=r"folder with 2 model cards \(m.yaml, n.yaml\): pass the card"):
        resolve_model(str(run))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder with 0 model cards: pass the card"):
        resolve_model(str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_MODEL).mkdir()
    assert resolve_model(DEFAULT_MODEL).parent.name == "models"


def test_a_run_without_a_model_yet_says_so(tmp_path):
    from seg_perception.paths import resolve_model
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="a training run with no model yet \\(only its checkpoint last.pt\\)"):
        resolve_model(str(tmp_path))


def test_empty_keys_of_a_hand_edited_card_take_their_defaults(tmp_path, capsys):
    """`normalization:` or `dataset:` left empty (null) in a hand-edited card, or a card without
    params: the card loads with the defaults and `models --shipped` lists it."""
    from seg_perception.card import IMAGENET_MEAN
    from seg_perception.cli import main
    card = card_for_table("hand", "essnet_d", CAMVID, 96, 72, files={"weights": "hand.pt"})
    card.save(tmp_path / "hand.yaml")
    text = (tmp_path / "hand.yaml").read_text()
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(("  mean:", "  std:", "  applies_to:")))
    text = text.replace("dataset: ", "dataset: null #", 1)  # and normalization: is left empty (null)
    assert "normalization:\nfiles:" in text
    (tmp_path / "hand.yaml").write_text(text + "\n")
    loaded = load_card(tmp_path / "hand.yaml")
    assert loaded.mean == tuple(IMAGENET_MEAN) and loaded.dataset == ""
    import os
    os.environ["SEG_PERCEPTION_MODELS"] = str(tmp_path)
    try:
        capsys.readouterr()
        assert main(["models", "--shipped"]) == 0
        row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("| hand |"))
        assert "| - |" in row
    finally:
        del os.environ["SEG_PERCEPTION_MODELS"]


def test_a_figure_that_is_not_a_table_is_a_card_error_and_models_lists_the_others(tmp_path, capsys, monkeypatch):
    """A hand-written card with 'int8_cpu: n/a' crashed `models --shipped` with an AttributeError."""
    from seg_perception.cli import main
    good = card_for_table("good", "essnet_d", CAMVID, 96, 72, files={"weights": "good.pt"})
    good.save(tmp_path / "good.yaml")
    for key, value, named in (("int8_cpu", "n/a", "metrics.int8_cpu is 'n/a'"),
                              ("cpu_latency", {"onnxruntime_fp32_ms": 12.0},
                               "metrics.cpu_latency.onnxruntime_fp32_ms")):
        hand = card_for_table("hand", "essnet_d", CAMVID, 96, 72, files={"weights": "hand.pt"},
                              metrics={"val_miou": 65.0, key: value})
        hand.save(tmp_path / "hand.yaml")
        with pytest.raises(CardError, match=f"{named}.*not a mapping"):
            load_card(tmp_path / "hand.yaml")
    monkeypatch.setenv("SEG_PERCEPTION_MODELS", str(tmp_path))
    capsys.readouterr()
    assert main(["models", "--shipped"]) == 0
    cap = capsys.readouterr()
    assert "| good |" in cap.out and "| hand |" not in cap.out
    assert "seg-perception models: skipped hand:" in cap.err and len(cap.err.strip().splitlines()) == 1


@pytest.mark.parametrize("edit,named", [
    (lambda d: d.__setitem__("ignore_idx", d.pop("ignore_index")), "unknown key 'ignore_idx': did you mean "
                                                                    "'ignore_index'?"),
    (lambda d: d.__setitem__("drivable_class", d.pop("drivable_classes")), "did you mean 'drivable_classes'"),
    (lambda d: d["normalization"].__setitem__("stds", d["normalization"].pop("std")),
     "unknown key 'normalization.stds': did you mean 'std'?"),
    (lambda d: d["input"].__setitem__("widht", 96), "unknown key 'input.widht': did you mean 'width'?"),
])
def test_a_misspelt_key_is_named_with_the_one_meant(tmp_path, edit, named):
    """A misspelt optional key (ignore_idx) was dropped and its default (255) used unseen."""
    import yaml
    card_for_table("m", "essnet_d", CAMVID, 96, 72).save(tmp_path / "m.yaml")
    d = yaml.safe_load((tmp_path / "m.yaml").read_text())
    edit(d)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(CardError, match=named.replace("(", "\\(").replace("?", "\\?")):
        load_card(tmp_path / "m.yaml")


def test_keys_far_from_every_known_one_are_kept_for_newer_versions(tmp_path):
    import yaml
    card_for_table("m", "essnet_d", CAMVID, 96, 72).save(tmp_path / "m.yaml")
    d = yaml.safe_load((tmp_path / "m.yaml").read_text())
    d["license"] = "MIT"
    d["input"]["channels"] = 3
    d["normalization"]["color_space"] = "RGB"
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(d))
    assert load_card(tmp_path / "m.yaml").ignore_index == 11


def test_every_shipped_card_loads():
    from pathlib import Path
    cards = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.yaml"))
    assert cards and all(load_card(c).name == c.stem for c in cards)
