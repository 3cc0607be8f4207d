"""Every option of every subcommand explains itself: help text, and the default where there is one."""
import argparse

from seg_perception.cli import build_parser


def _undocumented():
    parser, _ = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    bad = []
    for name, sp in subs.items():
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction) or a.help == argparse.SUPPRESS:
                continue
            flag = a.option_strings[0] if a.option_strings else a.dest
            if not a.help:
                bad.append(f"{name} {flag}: no help")
            elif (a.option_strings and not a.required and a.default not in (None, False, [], "")
                  and "default" not in a.help):
                bad.append(f"{name} {flag}: default {a.default!r} not shown")
            if a.help and not _balanced(a.help):
                bad.append(f"{name} {flag}: unbalanced parentheses")
    return bad


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0


def test_every_option_has_help_and_default():
    assert _undocumented() == []


def test_check_catches_an_undocumented_option(monkeypatch):
    from seg_perception import cli
    monkeypatch.setitem(cli.COMMANDS, "zz-test", (lambda p: p.add_argument("--runs", type=int, default=5), "t"))
    assert "zz-test --runs: no help" in _undocumented()


def test_a_misspelt_option_is_named_with_the_one_meant(capsys):
    import pytest
    from seg_perception.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "rdsnet", "--out", "/tmp/never_written", "--epocs", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "seg-perception train: error: unrecognized arguments: --epocs 1" in err
    assert "--epocs: did you mean --epochs?" in err and "usage: seg-perception train" in err


def test_a_negative_frame_count_is_refused(capsys):
    import pytest
    from seg_perception.cli import main
    for args in (["evaluate", "--limit", "-1"], ["quantize", "--onnx", "x.onnx", "--max-eval-images", "-1"]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2 and "must be 0 (all) or more, got -1" in capsys.readouterr().err


def test_dataset_class_defaults_name_a_model_card_only_where_the_command_reads_one():
    """train, make-bag, pack-dataset and bench read no model card: their --num-classes/--ignore-index
    help said "the model card's where there is one" all the same."""
    parser, _ = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("train", "make-bag", "pack-dataset", "bench", "evaluate", "release", "quantize"):
        helps = {a.dest: a.help for a in subs[name]._actions if a.dest in ("num_classes", "ignore_index")}
        assert len(helps) == 2, name
        reads_card = name in ("evaluate", "release", "quantize")
        assert all(("model card" in h) == reads_card for h in helps.values()), (name, helps)


def test_version_is_printed(capsys):
    """A pip user had no way to see the installed version (no --version; doctor did not say it)."""
    import pytest
    from seg_perception import __version__
    from seg_perception.cli import main
    from seg_perception.deploy.doctor import environment
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"seg-perception {__version__}"
    assert ("seg_perception", __version__) in environment()
