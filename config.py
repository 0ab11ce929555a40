"""The configuration of face-match-age: every path and setting the scripts use, with its default and the reason for it.

The defaults are defined once, in face_match_age/settings.py (the `Config` dataclass), so that the installed
package and its `face-match-age` command carry them too; edit them there. This file is where the scripts
(`from config import Config`) and a reader find them:

    uv run python config.py           # every setting, its default and why, under its --help heading

Any one run changes a setting without editing anything: a command-line option (`--batch-size 128`) or
`--config FILE`, a config.json that a run saved or a YAML file (`--print_config` prints one).
"""

from face_match_age.settings import (
    CONFIG_FILE_DEST,
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
    PRINT_CONFIG_DEST,
    RESULT_KINDS,
    RUN_RECORD_KEYS,
    YAML_SUFFIXES,
    ArchiveSource,
    Config,
    ConfigArgumentParser,
    LightningPrecision,
    add_config_arguments,
    add_refused_option,
    batch_limit,
    config_from_args,
    config_yaml,
    dataset_paths,
    default_note,
    device_value,
    devices_value,
    field_names,
    help_epilog,
    load_config,
    option_name,
    parse_config,
    precision_value,
    save_config,
    setting,
    settings_table,
    settings_that_change,
)

__all__ = [
    "CONFIG_FILE_DEST",
    "DATASET_SOURCES",
    "DEVICE_HELP",
    "FACE_SELECTION_CHOICES",
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
    "ArchiveSource",
    "Config",
    "ConfigArgumentParser",
    "add_config_arguments",
    "add_refused_option",
    "batch_limit",
    "config_from_args",
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
]

if __name__ == "__main__":
    print(settings_table())
