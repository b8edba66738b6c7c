"""``python -m benchmarks.zoo {build,ops} ...``."""

from benchmarks.zoo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
