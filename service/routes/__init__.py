"""One module per resource; each exposes ``build_router(ctx)`` (``ctx``: ``common.ServiceContext``)."""
