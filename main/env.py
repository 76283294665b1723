"""Reading settings from the environment: the typed helpers `main/settings.py` uses."""

from __future__ import annotations

import os


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, in any case; anything else stops the process, naming the setting."""
    value = os.environ.get(name, default).strip().lower()
    if value not in choices:
        raise RuntimeError(f"{name} is {' or '.join(choices)}, not {value!r}")
    return value


def env_list(name: str) -> list[str]:
    """A comma-separated value as a list, blanks around and between commas left out."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]
