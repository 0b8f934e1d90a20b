"""The `dalle2` command line (entry points `dalle2` and `dream` in dalle2_pytorch.cli.main)."""
