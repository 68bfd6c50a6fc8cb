import sys

from engine.cli.main import main

if __name__ == "__main__":  # not when a decoding process started with spawn imports it
    sys.exit(main())
