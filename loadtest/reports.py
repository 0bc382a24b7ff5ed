"""What the load-test commands share on their command line: where reports go by default and a ``--help`` that
shows every default.

Reports go under ``./gan-reports/`` in the current directory unless ``--out``/``--report`` says otherwise, so
a run never overwrites the measurements committed under the repository's ``reports/``."""

from __future__ import annotations

import argparse
from pathlib import Path

REPORTS_DIR = Path("gan-reports")
PORT_HELP = "port of the server it starts (default: a free port)"
FINAL_STATS_ENV = "GAN_LOCUST_FINAL_STATS"  # where the locustfile writes locust's final statistics (JSON)


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in ``--help``, but where there is none (None or empty: the help says why)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default in ("", []):
            return action.help
        return super()._get_help_string(action)


def port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [1, 65535], got {value}")
    return value


def make_out_dir(parser: argparse.ArgumentParser, flag: str, directory: Path) -> None:
    """``directory`` made before the run (a usage error when it cannot be), not found unwritable after it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"{flag} {directory}: {exc.strerror}")


def figure(value: float | None) -> str:
    """A measured number in a report's table (thousands separated, one decimal); "–" for none."""
    return "–" if value is None else f"{value:,.1f}"


def where(path: Path) -> str:
    """A report's location as printed at the end of a run: absolute, so it can be found from anywhere."""
    return str(path.resolve())
