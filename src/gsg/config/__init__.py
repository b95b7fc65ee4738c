"""One typed configuration schema; every default lives here.

A config is built as: schema defaults ← preset (``src/gsg/presets/NAME.toml``) ← ``--config FILE``
(TOML or JSON) ← command-line flags. Unknown sections or keys are errors that name the nearest valid
key, so a typo never trains silently with the default.

What lives where (each module imports only those above it):

- ``schema``: the section dataclasses and :class:`Config`, their defaults, ``CHOICES`` and constants, and
  :func:`schema_markdown` (docs/config.md, generated from the dataclasses' source);
- ``resolve``: the values a run uses where a key is unset (temperature, queue size, pairing, crops per image);
- ``validate``: the range rules (``POSITIVE``, ``NON_NEGATIVE``, ``UNIT_INTERVAL``), :func:`validate` and
  :func:`check_queue_size`;
- ``overrides``: :func:`apply` (one ``{section: {key: value}}`` layer, with type coercion and nearest-key
  errors) and :func:`parse_kwargs`;
- ``files``: presets, config files, :func:`load_config` and :func:`from_dict`.

Import from ``gsg.config``; the submodules are its layout, not its interface.
"""

from gsg.config.files import from_dict, load_config, preset_names, read_file, read_preset
from gsg.config.overrides import apply, parse_kwargs
from gsg.config.resolve import crops_per_image, resolved_pairing, resolved_queue_size, resolved_temperature
from gsg.config.schema import (
    CHOICES,
    CONTRASTIVE_METHODS,
    SMALL_IMAGE,
    TIMM_PREFIX,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SSLConfig,
    schema_markdown,
)
from gsg.config.validate import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, check_queue_size, validate

__all__ = [
    "CHOICES",
    "CONTRASTIVE_METHODS",
    "NON_NEGATIVE",
    "POSITIVE",
    "SMALL_IMAGE",
    "TIMM_PREFIX",
    "UNIT_INTERVAL",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SSLConfig",
    "apply",
    "check_queue_size",
    "crops_per_image",
    "from_dict",
    "load_config",
    "parse_kwargs",
    "preset_names",
    "read_file",
    "read_preset",
    "resolved_pairing",
    "resolved_queue_size",
    "resolved_temperature",
    "schema_markdown",
    "validate",
]
