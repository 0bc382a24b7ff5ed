"""One module per resource; each exposes ``build_router(spec, settings)``."""
