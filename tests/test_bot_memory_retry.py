"""A bot whose Redis is not there at boot takes calls without memory, and gets it back by itself."""

from __future__ import annotations

from pathlib import Path

from bot.process import RapportBot
from bot.settings import BotSettings
from memory.settings import MemorySettings
from tests.support.polling import eventually


def bot_on(data_dir: Path, tmp_path: Path) -> RapportBot:
    """A bot keeping its embedded Redis in ``data_dir``, with no worker of its own."""
    memory = MemorySettings(
        RAPPORT_DATA_DIR=str(data_dir),
        RAPPORT_PEPPER_FILE=str(tmp_path / "pepper"),
        RAPPORT_KEY_PREFIX="rapport-test-retry",
    )
    settings = BotSettings(ANTHROPIC_API_KEY="test-key", RAPPORT_RUN_WORKER="false", memory=memory)
    return RapportBot(settings)


async def test_memory_unavailable_at_boot_is_retried_in_the_background(tmp_path: Path) -> None:
    # The embedded server cannot start while its configuration's path is taken by a folder.
    data_dir = tmp_path / "data"
    blocked = data_dir / "redis.conf"
    blocked.mkdir(parents=True)
    bot = bot_on(data_dir, tmp_path)
    await bot.start()
    try:
        assert bot.memory is None  # calls go on without memory meanwhile
        blocked.rmdir()  # the operator fixes it; nobody restarts the bot
        await eventually(lambda: bot.memory is not None, within=15)
        assert bot.memory is not None
        await bot.memory.runtime.redis.ping()
    finally:
        await bot.stop()


async def test_a_data_folder_that_breaks_after_start_up_is_retried(tmp_path: Path) -> None:
    # Start-up refuses such a folder (exit 2); one that breaks later is retried like an outage.
    data_dir = tmp_path / "data"
    data_dir.write_text("a file where the data folder was")
    bot = bot_on(data_dir, tmp_path)
    await bot.start()
    try:
        assert bot.memory is None
        data_dir.unlink()
        await eventually(lambda: bot.memory is not None, within=15)
    finally:
        await bot.stop()
