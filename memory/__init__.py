"""Everything about remembering callers; usable without Pipecat, a web framework or a terminal.

The library surface is re-exported here so the layout beneath can move without breaking users::

    from memory import MemoryStore, call_start_facts, open_memory, render_memory

The LangChain chat history is an optional extra and is not imported here:
``from memory.integrations.langchain import CallerHistories``.
"""

from memory.recall.ranking import call_start_facts
from memory.recall.render import render_memory
from memory.runtime import MemoryRuntime, open_memory
from memory.store.callers import MemoryStore

__all__ = ["MemoryRuntime", "MemoryStore", "call_start_facts", "open_memory", "render_memory"]
