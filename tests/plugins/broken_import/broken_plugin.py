"""Fails at import."""
SLUG = "broken"
import not_a_real_module_xyz  # noqa
