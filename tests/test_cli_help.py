"""`hevit --help` speaks to users; every subcommand shows its defaults and lists the valid
strategies, heads, presets and layouts, taken from the code's constants."""

import argparse

from hevit.cli import main as cli


def _commands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action)


def test_top_level_description_is_a_user_facing_sentence():
    parser, commands = _commands()
    text = parser.format_help()
    assert parser.description != cli.__doc__ and "argument parsing" not in text
    assert parser.description.startswith("Hospitals train and run image classifiers")
    for name in commands:
        assert name in text


def test_every_option_with_a_default_shows_it():
    _, commands = _commands()
    for name, parser in commands.items():
        for action in parser._actions:
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
                continue
            text = _help_of(parser, action)
            assert "default" in text, (name, action.option_strings, text)
            if "(default: " in text:
                assert f"(default: {action.default})" in text


def test_valid_names_are_listed_from_the_code_constants():
    from hevit.federated.config import INFERENCE_LAYOUTS, STRATEGIES
    from hevit.federated.models import HEADS
    from hevit.he import PRESETS

    expected = {
        "--strategies": STRATEGIES,
        "--head": HEADS,
        "--inference-preset": tuple(PRESETS),
        "--aggregation-preset": tuple(PRESETS),
        "--update-preset": tuple(PRESETS),
        "--inference-layout": INFERENCE_LAYOUTS,
    }
    seen = set()
    _, commands = _commands()
    for parser in commands.values():
        for action in parser._actions:
            for option in set(action.option_strings) & set(expected):
                text = " ".join(_help_of(parser, action).split())
                assert ", ".join(expected[option]) in text, (option, text)
                seen.add(option)
    assert seen == set(expected)
