"""Where the reference DALLE2-pytorch 1.15.6 fixtures live (committed under tests/fixtures/, see its README)."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dalle2_pytorch_1.15.6"
