"""The pure parts of the day-two VM commands: following a console log, the alias table, the editor's error
comment."""

from __future__ import annotations

from click.testing import CliRunner

from pvc.cli.aliases import ALIASES
from pvc.cli.logs import new_lines
from pvc.cli.main import cli
from pvc.cli.vmedit import _body_of, with_error


def test_new_lines_are_what_follows_the_overlap():
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines([], ["a"]) == ["a"]
    assert new_lines(["x", "y"], ["p", "q"]) == ["p", "q"]  # more new lines than the window: all of it is new
    assert new_lines(["a", "a"], ["a", "a", "a"]) == ["a"]  # repeated lines: the longest overlap


def test_every_alias_names_a_command_that_exists_and_runs_it():
    runner = CliRunner()
    for group, aliases in ALIASES.items():
        for alias, target in aliases.items():
            mine = runner.invoke(cli, [*group.split(), alias, "--help"])
            theirs = runner.invoke(cli, [*target.split(), "--help"])
            assert mine.exit_code == 0 and theirs.exit_code == 0, (group, alias, mine.output)
            # the same command: the same help, but for the name it was called by
            assert mine.output.split("\n", 1)[1] == theirs.output.split("\n", 1)[1], (group, alias)
        listed = runner.invoke(cli, [*group.split(), "--help"]).output
        for alias, target in aliases.items():
            assert f"Alias of `{target}`." in listed and alias in listed


def test_an_edit_error_replaces_the_previous_one_above_the_document():
    text = "# header\nname: web\n"
    once = with_error(text, "memory_mib: too much")
    twice = with_error(once, "bad\nthings")
    assert once == "# error: memory_mib: too much\n# header\nname: web\n"
    assert twice == "# error: bad\n# error: things\n# header\nname: web\n"
    assert _body_of(twice) == _body_of(text) == "name: web"


def test_volume_arguments_must_be_pool_slash_volume():
    out = CliRunner().invoke(cli, ["vm", "volume", "add", "web", "novolume"])
    assert out.exit_code == 2 and "'novolume' is not an RBD volume; give it as POOL/VOLUME" in out.output
