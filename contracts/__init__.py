"""What the parts of the pipeline agree on, in one place: the seed → latent rule (``latents``), the model
directory (``model_dir``), the run directory (``run_dir``) and the small helpers they share (``files``,
``buckets``).

Every part imports this package; it imports no part (``tests/test_layers.py`` keeps that true), and it needs
neither torch nor FastAPI: NumPy and pydantic only.
"""
