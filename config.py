"""The configuration of face-match-age: every path and setting the scripts use, with its default and the reason for it.

The defaults are defined once, in face_match_age/settings.py (the `Config` dataclass), so that the installed
package and its `face-match-age` command carry them too; edit them there. This file is where the scripts
(`from config import Config`) and a reader find them:

    uv run python config.py           # every setting, its default and why, under its --help heading

Any one run changes a setting without editing anything: a command-line option (`--batch-size 128`) or
`--config FILE`, a config.json that a run saved or a YAML file (`--print_config` prints one).
"""

from face_match_age.command_line import (
    PRINT_CONFIG_DEST,
    Commands,
    ConfigArgumentParser,
    ConfigFile,
    DataDir,
    HelpFormatter,
    add_config_arguments,
    add_refused_option,
    default_note,
    help_epilog,
    load_config,
    option_name,
    parse_config,
)
from face_match_age.settings import (
    DATASET_SOURCES,
    DEVICE_HELP,
    FACE_SELECTION_CHOICES,
    INFERENCE_PRECISION_CHOICES,
    LEGACY_FIELDS,
    LIGHTNING_PRECISION,
    MAX_AGE,
    MIN_AGE,
    NUM_AGE_BINS,
    OPTION_GROUPS,
    PRECISION_ALIASES,
    PRECISION_CHOICES,
    PRETRAINED_CHOICES,
    RESULT_KINDS,
    RUN_RECORD_KEYS,
    YAML_SUFFIXES,
    ArchiveSource,
    Config,
    LightningPrecision,
    batch_limit,
    config_values,
    config_yaml,
    dataset_paths,
    device_value,
    devices_value,
    field_names,
    precision_value,
    save_config,
    setting,
    settings_table,
    settings_that_change,
    unknown_names_message,
)

__all__ = [
    "ArchiveSource",
    "Commands",
    "Config",
    "ConfigArgumentParser",
    "ConfigFile",
    "DATASET_SOURCES",
    "DEVICE_HELP",
    "DataDir",
    "FACE_SELECTION_CHOICES",
    "HelpFormatter",
    "INFERENCE_PRECISION_CHOICES",
    "LEGACY_FIELDS",
    "LIGHTNING_PRECISION",
    "LightningPrecision",
    "MAX_AGE",
    "MIN_AGE",
    "NUM_AGE_BINS",
    "OPTION_GROUPS",
    "PRECISION_ALIASES",
    "PRECISION_CHOICES",
    "PRETRAINED_CHOICES",
    "PRINT_CONFIG_DEST",
    "RESULT_KINDS",
    "RUN_RECORD_KEYS",
    "YAML_SUFFIXES",
    "add_config_arguments",
    "add_refused_option",
    "batch_limit",
    "config_values",
    "config_yaml",
    "dataset_paths",
    "default_note",
    "device_value",
    "devices_value",
    "field_names",
    "help_epilog",
    "load_config",
    "option_name",
    "parse_config",
    "precision_value",
    "save_config",
    "setting",
    "settings_table",
    "settings_that_change",
    "unknown_names_message",
]

if __name__ == "__main__":
    print(settings_table())
