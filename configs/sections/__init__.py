"""Config sections, one file per subsystem, each with ``get(variant) -> ConfigDict``."""
