"""Entry point of the frozen bundle: the app, or with ``--engine`` first its own engine
child (app.main.main; app.child.engine_process.engine_command builds that command when frozen)."""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
