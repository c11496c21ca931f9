"""The dashboard's pages, one module per page, each a ``router(context)`` of its routes.

:data:`web.dashboard.routes.PAGES` lists them; a new page is one module and one entry there.
"""
