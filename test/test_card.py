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
