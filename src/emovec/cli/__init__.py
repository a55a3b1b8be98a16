"""The `emovec` command: one module per command group, each thin (parse, call the library, print).

Any EmovecError, usage error or file-system fault becomes one line on stderr and exit code 2, with the
library's parameter names turned into flags; nothing else is caught.
"""

from __future__ import annotations

import sys

import typer

from emovec.cli import analyze, behave, corpus, evaluate, extract, monitor, preferences, serve, speakers, steer
from emovec.cli import compare as compare_cli
from emovec.cli import run as run_cli
from emovec.cli.common import error_line, print_error
from emovec.errors import EmovecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Find, test and use emotion vectors inside open-weight language models.")
corpus_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Check a corpus of stories and neutral dialogues.")
app.add_typer(corpus_app, name="corpus")

app.command("extract")(extract.extract)
app.command("info")(extract.info)
app.command("similar")(extract.similar)
corpus_app.command("check")(corpus.corpus_check)
app.command("generate")(corpus.generate)
app.command("steer")(steer.steer)
app.command("chat")(steer.chat)
app.command("validate-steering")(steer.validate_steering_command)
app.command("export")(steer.export)
app.command("monitor")(monitor.monitor_command)
app.command("preferences")(preferences.preferences)
app.command("analyze")(analyze.analyze)
app.command("report")(analyze.report)
app.command("behave")(behave.behave)
app.command("speakers")(speakers.speakers)
app.command("speakers-steer")(speakers.speakers_steer)
app.command("deflection")(speakers.deflection)
app.command("shift")(speakers.shift_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("serve")(serve.serve_command)
app.command("run")(run_cli.run_command)
app.command("compare")(compare_cli.compare_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command; bad input of any kind ends in one line on stderr and exit code 2."""
    try:
        result = app(args=argv, standalone_mode=False)
    except EmovecError as exc:
        print_error(error_line(exc))
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print_error("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors from typer's bundled click
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print_error(" ".join(f"{message} (see --help)".split()))
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except OSError as exc:  # a full or read-only disk, a vanished file: the environment, not the input
        where = f"{exc.filename}: " if exc.filename else ""
        print_error(f"{where}{exc.strerror or exc}")
        sys.exit(2)
    sys.exit(result if isinstance(result, int) else 0)
