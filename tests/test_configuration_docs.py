"""The docs say what the code does: every setting documented, every command listed, numbers
masked as the code masks them, the pepper where it is, the ``docker run`` line complete."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import phonenumbers
from pydantic_settings import BaseSettings

import runner
from bot.settings import KEYS_FOR_SERVICES, KEYS_FOR_TRANSPORT
from cli.main import command_parser
from memory.privacy.identity import mask_number
from web.dashboard.access import PASSWORD_VARIABLE

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("memory", "bot", "processors", "cli", "web")
README = (REPO / "README.md").read_text(encoding="utf-8")
ENV_EXAMPLE = (REPO / ".env.example").read_text(encoding="utf-8")


def settings_variables() -> set[str]:
    """The environment variable of every field of every settings class in the product."""
    for package in PRODUCT:
        for module in pkgutil.walk_packages(
            importlib.import_module(package).__path__, f"{package}."
        ):
            importlib.import_module(module.name)

    def subclasses(base: type) -> list[type]:
        return [c for s in base.__subclasses__() for c in (s, *subclasses(s))]

    return {
        field.alias
        for settings in subclasses(BaseSettings)
        if settings.__module__.split(".")[0] in PRODUCT
        for field in settings.model_fields.values()
        if field.alias
    }


def readme_section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def configuration_table() -> set[str]:
    """The variables named in the first column of the README's Configuration table."""
    rows = [line for line in readme_section("Configuration").splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])}


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE, re.MULTILINE))
    # compose.yaml reads a few of its own (its Postgres password) from the same .env.
    compose = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (REPO / "compose.yaml").read_text()))
    variables = settings_variables()
    assert sorted(variables - listed) == [], "settings missing from .env.example"
    assert sorted(listed - variables - compose) == [], ".env.example lists what nothing reads"


def test_the_readme_configuration_table_names_every_setting_and_nothing_else() -> None:
    named = configuration_table()
    variables = settings_variables()
    assert sorted(variables - named) == [], "settings missing from the README's table"
    assert sorted(named - variables) == [], "the README's table names what no setting reads"


def test_the_runner_docstring_lists_every_command_and_action() -> None:
    doc = runner.__doc__ or ""
    parser = command_parser()
    (commands,) = [a for a in parser._actions if a.choices and a.dest == "command"]
    for name, command in commands.choices.items():
        assert f"python runner.py {name}" in doc, name
        actions = [a for a in command._actions if a.dest == "action"]
        for action in actions[0].choices if actions else ():
            assert re.search(rf"python runner\.py {name} [\w|]*\b{action}\b", doc), (name, action)


def test_masked_numbers_in_the_readme_are_masked_as_the_code_masks_them() -> None:
    assert mask_number("+14155550123") == "+1•••23"
    masked = re.findall(r"\+\d*•[\d•]*", README)
    assert masked, "the README shows how numbers are masked"
    for text in masked:
        match = re.fullmatch(r"\+(\d{1,3})•••(\d\d)", text)
        assert match, text
        region = phonenumbers.region_code_for_country_code(int(match[1]))
        assert region != "ZZ", text


def test_the_pepper_is_documented_where_it_is_kept() -> None:
    # Generated in RAPPORT_PEPPER_FILE (default ~/.config/rapport/pepper), never the data folder.
    for text in (ENV_EXAMPLE, README):
        assert "RAPPORT_DATA_DIR/pepper" not in text
        assert "~/.config/rapport/pepper" in text
    data_row = next(
        r for r in readme_section("Configuration").splitlines() if "`RAPPORT_DATA_DIR`" in r
    )
    assert "pepper" not in data_row.split("|")[3] or "not the pepper" in data_row


def test_the_readme_docker_run_line_names_the_variables_the_image_needs() -> None:
    # The image serves one phone line (Twilio unless told otherwise) beyond loopback, where its
    # dashboard needs a password.
    block = re.search(r"```bash\n\s*(docker run .*?)```", README, re.DOTALL)
    assert block, "a docker run block in the README"
    needed = {*KEYS_FOR_SERVICES, *KEYS_FOR_TRANSPORT["twilio"], PASSWORD_VARIABLE}
    assert sorted(v for v in needed if f"-e {v}" not in block[1]) == []
    daily = ["-e RAPPORT_TRANSPORT=daily", *(f"-e {v}" for v in KEYS_FOR_TRANSPORT["daily"])]
    assert all(option in readme_section("Running in production") for option in daily)
