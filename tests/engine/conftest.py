"""Engine tests write events in strict mode: an event the schema (engine.run.schema) does not
describe fails the test that wrote it, in this process and in engine child processes."""

import os

from engine.run.events import STRICT_ENV

os.environ.setdefault(STRICT_ENV, "1")
