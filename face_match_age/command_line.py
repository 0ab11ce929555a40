"""Every script's command line, built by jsonargparse (the engine LightningCLI is built on) from the typed Config.

A script makes a `ConfigArgumentParser`, exposes the Config fields it uses with `add_config_arguments` (each field's
type hint, default, reason and --help heading come from its declaration in face_match_age.settings; `batch_size`
becomes `--batch-size`), ends its help with `help_epilog` and reads the command line with `parse_config`, which
returns the parsed options and the resolved Config.

What jsonargparse does: typed values (a wrong one is a usage error, exit 2), --help with each default, subcommands,
and `--config FILE` (JSON or YAML). Arguments apply in order, as in LightningCLI: a --config sets what it holds, and
an option after it replaces that value. What is added here, for what users of these scripts rely on: --help headings
(OPTION_GROUPS), the closest option named for a typo, `--print_config` printing the resolved Config that --config
reads back, a run's saved config.json accepted by every script (each takes the fields it uses; RUN_RECORD_KEYS and
other scripts' fields are skipped), and --data-dir filling the four data paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import textwrap
import typing
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

from face_match_age.settings import (
    OPTION_GROUPS,
    Config,
    config_values,
    config_yaml,
    dataset_paths,
    field_names,
    unknown_names_message,
)

PRINT_CONFIG_DEST = "print_config"  # where --print_config lands in the parsed namespace; not a Config field


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def default_note(default: Any) -> str:
    """' (default: X)' for an option's help; nothing for a default that means "not given"."""
    if default is None or isinstance(default, bool) or default is argparse.SUPPRESS:
        return ""
    return f" (default: {str(default).replace('%', '%%')})"  # argparse %-formats help texts


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, with each option's reason then its default (no type: the reason says what it takes),
    and the description's and epilog's line breaks kept."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if isinstance(action, ActionConfigFile) or "(default" in help_text or not action.option_strings:
            return help_text
        return help_text + default_note(action.default)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class ConfigFile(ActionConfigFile):
    """--config FILE: a run's config.json (every field and the RUN_RECORD_KEYS its script saved beside them) or a
    YAML file of fields. The fields this parser takes are applied where --config stands on the command line; the
    others are checked as fields and skipped. A file that cannot be used is a usage error naming it."""

    @staticmethod
    def apply_config(parser, cfg, dest, value) -> None:
        try:
            values = config_values(Path(value))
        except ValueError as error:
            raise TypeError(str(error)) from None
        taken = {action.dest for action in parser.options}
        used = {name: value for name, value in with_data_paths(values).items() if name in taken}
        ActionConfigFile.apply_config(parser, cfg, dest, json.dumps(used, default=str))


def with_data_paths(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the four data paths inside its dataset_dir, where `values` does not set them itself."""
    if values.get("dataset_dir") is None:
        return values
    return {**dataset_paths(values["dataset_dir"]), **values}


class DataDir(argparse.Action):
    """--data-dir DIR: dataset_dir, and the four data paths inside it (those this parser takes) where they stand
    when it is met: a path option after it replaces its path."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        taken = {action.dest for action in parser.options}
        for name, path in dataset_paths(values).items():
            if name in taken:
                setattr(namespace, name, path)


class ConfigArgumentParser(ArgumentParser):
    """The ArgumentParser of every script: jsonargparse's, with options under the headings of OPTION_GROUPS
    (`parser.group("data")`) and the closest known option named when an unknown one is met."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("print_config", None)  # --print_config is add_config_arguments', which prints the Config
        kwargs.setdefault("allow_abbrev", True)  # argparse's rule, which these scripts always had
        super().__init__(*args, **kwargs)
        self.commands: dict[str, ConfigArgumentParser] = {}
        self.parent: ConfigArgumentParser | None = None  # the parser this one is a subcommand of
        # Every heading now, in OPTION_GROUPS' order whatever order options come in; empty ones are not shown.
        self._groups = {key: self.add_argument_group(title) for key, title in OPTION_GROUPS.items()}

    def group(self, key: str) -> argparse._ArgumentGroup:
        """The heading `key` of OPTION_GROUPS, to add options under."""
        return self._groups[key]

    def add_commands(self, **kwargs: Any) -> Commands:
        """Subcommands (evaluate.py's age, verify, ...): `add_commands(dest="command").add(name, help=...)`."""
        kwargs.setdefault("help", "the command to run; COMMAND --help lists its options")
        return Commands(self, self.add_subcommands(**kwargs))

    @property
    def options(self) -> list[argparse.Action]:
        """Every argument of this parser, --help included."""
        return list(self._actions)

    @property
    def known_options(self) -> list[str]:
        """The option strings of this parser (--batch-size, --lr, ...)."""
        return [option for action in self.options for option in action.option_strings]

    def all_known_options(self) -> list[str]:
        """This parser's option strings and those of its subcommands."""
        return self.known_options + [option for command in self.commands.values() for option in command.known_options]

    def root(self) -> ConfigArgumentParser:
        """The script's parser: this one, or the one this subcommand belongs to."""
        return self if self.parent is None else self.parent.root()

    def error(self, message: str, ex: Exception | None = None) -> typing.NoReturn:
        if message.startswith("unrecognized arguments: "):
            message = self._unrecognized_message(message.removeprefix("unrecognized arguments: ").split())
        elif match := re.match(r'Parser key "([\w.]+)":\s*(.*)', message, re.DOTALL):  # a value of the wrong type
            key, problem = match.groups()
            problem = re.sub(r"<class '(\w+)'>", r"\1", " ".join(problem.split()))
            problem = re.sub(r"^Expected a (.+?)\. Got value: (.*)$", r"expected \1, got \2", problem)
            message = f"{option_name(key.split('.')[-1])}: {problem}"
        super().error(message, ex)

    def _unrecognized_message(self, extras: list[str]) -> str:
        """What was not understood, with the closest option for each unknown one, or the command it belongs to."""
        options = [extra for extra in extras if extra.startswith("-")]
        if not options:
            return f"unexpected argument {' '.join(extras)}; run with --help for the usage"
        root = self.root()
        given = next((argument for argument in getattr(root, "args", None) or [] if argument in root.commands), "")
        hints = []
        for extra in options:
            name = extra.split("=")[0]
            owners = [command for command, parser in root.commands.items() if name in parser.known_options]
            if owners:  # an option of another subcommand than the one given
                hints.append(f"{extra} (an option of {' and '.join(owners)}, not of {given})")
                continue
            close = difflib.get_close_matches(name, self.all_known_options(), n=1)
            hints.append(extra + (f" (did you mean {close[0]}?)" if close else ""))
        return f"unknown option {', '.join(hints)}; run with --help to list the options"


class Commands:
    """The subcommands of a ConfigArgumentParser; `add` makes one's parser, kept by name in parser.commands."""

    def __init__(self, parser: ConfigArgumentParser, action: Any) -> None:
        self.parser, self.action = parser, action

    def add(self, name: str, help: str, **kwargs: Any) -> ConfigArgumentParser:  # noqa: A002 (argparse's name)
        command = ConfigArgumentParser(prog=f"{self.parser.prog} {name}", **kwargs)
        self.action.add_subcommand(name, command, help=help)
        self.parser.commands[name] = command
        command.parent = self.parser
        return command


def add_config_arguments(parser: ConfigArgumentParser, names: typing.Iterable[str], aliases: bool = True) -> None:
    """Register the named config fields as options of `parser`, each typed by its hint, under its group's heading
    with its reason and default in its help; and `--config FILE` and `--print_config` once. `aliases=False`: only
    the fields' own names (every field on one parser: --precision is both a field and infer.py's alias)."""
    names = list(names)
    unknown = [name for name in names if name not in field_names()]
    if unknown:
        raise ValueError(unknown_names_message(unknown))
    if "--config" not in parser.known_options:
        parser.add_argument(
            "--config",
            action=ConfigFile,
            metavar="FILE",
            help="a config.json saved beside a run (checkpoint or log folder, data_prep.py's or infer.py's OUT), or "
            "a YAML file of config fields (.yaml, .yml; what --print_config prints): it sets the fields this script "
            "takes, and options after it on the command line replace its values",
        )
        parser.add_argument(
            "--print_config",
            "--print-config",
            dest=PRINT_CONFIG_DEST,
            action="store_true",
            help="print the resolved config (defaults, then --config FILE and the options, in order) as YAML, which "
            "--config reads back, and exit without running",
        )
    hints = typing.get_type_hints(Config)
    fields = {f.name: f for f in dataclasses.fields(Config)}
    defaults = Config()
    for name in names:
        meta = fields[name].metadata
        kwargs: dict[str, Any] = {"dest": name, "default": getattr(defaults, name), "help": meta["why"]}
        if hints[name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta["parse"] is not None:
            kwargs["type"] = text_type(meta["parse"])
        else:
            kwargs["type"] = hints[name]
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if name == "dataset_dir":  # an action of its own (DataDir), so argparse's type, not a type hint
            kwargs |= {"action": DataDir, "type": Path}
        # The short conventional name (--lr, --ckpt) first, so usage lines show it; the field's name also works.
        group = parser.group(meta["group"])
        group.add_argument(*(meta["aliases"] if aliases else ()), option_name(name), **kwargs)
        if meta["hidden_aliases"] and aliases:  # an older name, still accepted, not listed
            group.add_argument(*meta["hidden_aliases"], **{**kwargs, "help": argparse.SUPPRESS})


def text_type(parse: typing.Callable[[str], Any]) -> typing.Callable[[Any], Any]:
    """`parse` (text -> value) as an option's type. Its ValueError's message becomes the usage error's one line;
    a value that is no longer text passes as it is, since jsonargparse checks each parsed value (and each value
    of a --config file) again with the option's type."""

    def convert(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse names the type in its messages
    return convert


def add_refused_option(parser: ConfigArgumentParser, option: str, hint: str) -> None:
    """An option name that this script does not take, but another script does: giving it is a usage error (exit 2)
    whose one line is `hint`, saying which option means what the user wanted. Not listed in --help."""

    class Refused(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"{option_string}: {hint}")

    parser.add_argument(option, action=Refused, nargs="?", help=argparse.SUPPRESS, default=argparse.SUPPRESS)


def parse_config(parser: ConfigArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    """(the options, the resolved Config) of `argv`. `args.given` names the options the command line and
    --config set (the others hold their defaults). The Config is Config() with the values of the fields the parser
    (and the subcommand given) took: their defaults (Config()'s, or the parser's set_defaults), --config's and the
    options'. --data-dir also fills the data paths of a parser that does not take them. A value that fails the
    Config's checks is a usage error, not a traceback; --print_config prints the Config and exits."""
    given = _flat(parser.parse_args(argv, defaults=False))  # what the command line and --config set
    command = parser.commands.get(given.get("command", ""))
    values = {**_flat(parser.get_defaults()), **(_flat(command.get_defaults()) if command else {}), **given}
    args = argparse.Namespace(**values)
    args.given = frozenset(given)  # a default checkpoint named with --ckpt must exist, for one
    fields = with_data_paths({name: value for name, value in values.items() if name in field_names()})
    try:
        config = Config().replace(**fields)
    except ValueError as error:
        parser.error(str(error))
    if values.get(PRINT_CONFIG_DEST):
        print(config_yaml(config), end="")
        parser.exit(0)
    return args, config


def _flat(parsed: Any) -> dict[str, Any]:
    """A parsed namespace as a dict, the subcommand's options beside the script's own."""
    values = parsed.as_dict()
    command = values.get("command")
    if isinstance(command, str) and isinstance(values.get(command), dict):
        values = {**{k: v for k, v in values.items() if k != command}, **values[command]}
    return values


def help_epilog(
    examples: typing.Iterable[str], exit_codes: typing.Mapping[int, str] | typing.Iterable[int], notes: str = ""
) -> str:
    """The end of every script's --help: example command lines, `notes`, and the exit codes this script ends
    with, each with its one meaning in every script (face_match_age.exit_codes, docs/exit-codes.md), then what it
    means here when `exit_codes` maps it to a detail. 0 and 2 (a bad command line) are always listed."""
    from face_match_age.exit_codes import ExitCode

    details = dict(exit_codes) if isinstance(exit_codes, typing.Mapping) else dict.fromkeys(exit_codes, "")
    details = {ExitCode.OK: "", ExitCode.USAGE: "", **details}
    lines = ["examples:", *(f"  {example}" for example in examples)]
    if notes:
        lines += ["", *textwrap.wrap(" ".join(notes.split()), 100)]
    lines += ["", "exit codes:"]
    for code in sorted(details):
        member = ExitCode(code)
        text = details[code] or member.meaning
        lines += textwrap.wrap(text, 100, initial_indent=f"  {member.value:<5}", subsequent_indent=" " * 7)
    return "\n".join(lines)


def load_config(path: Path) -> Config:
    """The Config of a config.json written by save_config, or of a YAML file of fields, read as `--config` reads
    it on a command line that takes every field. A file that cannot be used raises an argparse.ArgumentError."""
    parser = ConfigArgumentParser(exit_on_error=False)
    add_config_arguments(parser, field_names(), aliases=False)
    return parse_config(parser, ["--config", str(path)])[1]
