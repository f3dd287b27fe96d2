"""Export: SavedModel and TFLite (float, int8) files of a model, checked against it (`exporter`).

`from catdog.export import export, summary` works, importing TensorFlow only when first used.
"""


def __getattr__(name: str):
    if name in ("export", "summary"):
        from catdog.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'catdog.export' has no attribute {name!r}")
