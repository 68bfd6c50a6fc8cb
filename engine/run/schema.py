"""The event schema as data: every event type the engine writes and the fields it carries.

One description serves the writer (:class:`engine.run.events.EventWriter` stamps
``SCHEMA_VERSION`` and, in strict mode, checks each event against it), the app's reader
(app.model.run_model derives the fields it checks from :data:`EVENTS`) and the README's event
table (``python -m engine.run.schema`` prints it; a test compares the two).

Every event has ``v`` (:data:`SCHEMA_VERSION`), ``type`` and ``time`` (Unix seconds). A field
marked required is one a reader cannot use the event without; other fields may be absent or
null (numbers are null where the value was NaN or infinite). Readers ignore event types and
fields they do not know: newer engines may add some.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

#: The kinds of value a field holds, as the Python types a parsed JSON value has.
KINDS: dict[str, tuple[type, ...]] = {
    "text": (str,), "integer": (int,), "number": (int, float), "object": (dict,),
    "list": (list,), "bool": (bool,)}
#: How problems name a kind, for people: "lr is text, not a number".
PHRASES = {"text": "text", "integer": "an integer", "number": "a number",
           "object": "an object", "list": "a list", "bool": "true/false"}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # a key of KINDS
    meaning: str
    required: bool = False


@dataclass(frozen=True)
class EventType:
    name: str
    meaning: str
    fields: tuple[Field, ...]
    #: Whether the event carries fields of its own beyond ``fields`` (a verb's result).
    open: bool = False

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


def _f(name: str, kind: str, meaning: str, required: bool = False) -> Field:
    return Field(name, kind, meaning, required)


ENVELOPE = (
    _f("v", "integer", "the schema version", True),
    _f("type", "text", "the event type", True),
    _f("time", "number", "when it was written (Unix seconds)", True),
)

_TYPES = (
    EventType("progress", "work before or between steps, or an exploring verb's: scanning, "
              "decoding, embedding, mapping, kNN, the probe, curation", (
        _f("phase", "text", "what is being done: scan, decode, embed, map, ..."),
        _f("done", "integer", "items done so far"),
        _f("total", "integer", "items in all"),
        _f("unit", "text", "what done and total count: files, images, epochs, points, ... "
           "(absent: items)"),
        _f("message", "text", "what is happening, for people"),
    )),
    EventType("cache_plan", "before decoding: what the decoded-image cache will take", (
        _f("message", "text", "the plan, for people"),
        _f("images", "integer", "images to cache"),
        _f("size", "integer", "the cache's image side in pixels"),
        _f("bytes", "integer", "the whole cache's size (jpeg: estimated until built; none: 0)"),
        _f("to_write", "integer", "bytes still to write (0 when a cache is reused)"),
        _f("folder", "text", "where the cache is"),
        _f("free", "integer", "free bytes there"),
        _f("reuse", "bool", "whether a complete cache is reused"),
        _f("resume_from", "integer", "images an interrupted build decoded already"),
        _f("workers", "integer", "decoding processes or threads"),
        _f("processes", "bool", "whether they are processes (else threads)"),
        _f("format", "text", "how the images are kept: raw (uint8), jpeg (compressed, "
           "decoded each batch) or none (each batch decodes the original files)"),
        _f("reason", "text", "why that format (and side) was chosen"),
    )),
    EventType("warning", "something worth knowing that does not stop the run", (
        _f("message", "text", "the warning, for people"),
    )),
    EventType("run_start", "training starts or resumes: what runs, on what", (
        _f("run_dir", "text", "the run folder", True),
        _f("resumed", "bool", "whether it goes on from a checkpoint"),
        _f("config", "object", "the resolved settings (as in config.json)"),
        _f("init", "text", "what the backbone started from: \"\" random init, \"imagenet\" "
           "or the weights file's path (config.init; on a resume the checkpoint's weights "
           "count)"),
        _f("init_sha256", "text", "sha256 of the weights file read for init (absent for a "
           "random init and on a resume from a checkpoint)"),
        _f("auto", "object", "why each automatic value was chosen, by setting"),
        _f("dataset", "object", "the images: root, images, classes, class_counts, skipped, "
           "summary"),
        _f("device", "object", "where it trains: type, name, memory_gb, bf16"),
        _f("steps_per_epoch", "integer", "optimiser steps per pass over the images"),
        _f("total_steps", "integer", "the steps the run will take in all"),
        _f("start_step", "integer", "the step it starts from (0 unless resumed)"),
        _f("peak_lr", "number", "the learning rate after warm-up"),
        _f("world_size", "integer", "processes training together under torchrun; 1 alone"),
        _f("per_process_batch", "integer", "each process's share of config.batch_size (the "
           "global batch)"),
        _f("nodes", "integer", "machines taking part"),
    )),
    EventType("step", "steps 1, 2 and 5 after the (re)start, every log_every steps and at "
              "the end of each epoch", (
        _f("step", "integer", "optimiser steps done", True),
        _f("epoch", "integer", "the epoch the step is in (from 0)"),
        _f("loss", "number", "the contrastive loss of the step's batch", True),
        _f("lr", "number", "the learning rate"),
        _f("pairs_per_s", "number", "positive pairs trained per second since the last step "
           "event, not counting checkpoint and kNN-evaluation time"),
        _f("positive_pair_similarity", "number", "mean cosine of the two views' projections; "
           "InstDisc: of each image's embedding and its memory-bank row before the update; "
           "Rotation: of h upright and rotated"),
        _f("embedding_std", "number", "per-dimension std of the normalised projections times "
           "sqrt(dim): about 1 when spread out, near 0 when collapsed (Rotation: of h)"),
        _f("momentum", "number", "the momentum of the moving-average network: MoCo's key "
           "encoder, BYOL's target (MoCo and BYOL only)"),
        _f("rotation_accuracy", "number", "fraction of the rotated images whose rotation the "
           "classifier got right, 0-1; 0.25 is chance (Rotation only)"),
    )),
    EventType("epoch_end", "an epoch ended", (
        _f("epoch", "integer", "the epoch that ended (from 0)", True),
        _f("step", "integer", "optimiser steps done"),
        _f("loss", "number", "the mean loss over the epoch"),
        _f("seconds", "number", "how long the epoch took"),
    )),
    EventType("eval", "kNN accuracy of the frozen features every --knn-every epochs and at "
              "the end; only when the folder has class sub-folders", (
        _f("epoch", "integer", "epochs done"),
        _f("step", "integer", "optimiser steps done", True),
        _f("knn_top1", "number", "weighted kNN accuracy (k=20, T=0.07) on a fixed 20% "
           "held-out split of the labelled images, 0-1", True),
        _f("knn_k", "integer", "the neighbours that voted"),
        _f("images", "integer", "the labelled images embedded"),
        _f("seconds", "number", "how long the evaluation took"),
    )),
    EventType("live_map", "a new frame of the live map, a 2-D layout of a fixed sample of "
              "the images turned to fit the frame before, every --knn-every epochs and at "
              "the end (not with --live-map off)", (
        _f("epoch", "integer", "epochs done"),
        _f("step", "integer", "optimiser steps done", True),
        _f("path", "text", "the frame: a float32 (n, 2) .npy file; live_map/index.json "
           "beside it names the images and lists the frames", True),
        _f("n", "integer", "the points on the map"),
        _f("seconds", "number", "how long the update took (with embedding the sample when "
           "no kNN evaluation embedded it)"),
    )),
    EventType("checkpoint", "a checkpoint was written", (
        _f("path", "text", "the checkpoint file", True),
        _f("epoch", "integer", "epochs done"),
        _f("step", "integer", "optimiser steps done"),
    )),
    EventType("run_end", "the run ended; the last event of a training run", (
        _f("status", "text", "finished, stopped or failed", True),
        _f("reason", "text", "why, for people"),
        _f("step", "integer", "optimiser steps done"),
        _f("epoch", "integer", "epochs done"),
        _f("run_dir", "text", "the run folder"),
    )),
    EventType("result", "the answer of an exploring verb or of bench (with --json); its "
              "fields are the verb's", (), open=True),
    EventType("error", "an exploring verb failed (with --json)", (
        _f("message", "text", "what went wrong, for people"),
    )),
)

#: Every event type, by name.
EVENTS: dict[str, EventType] = {t.name: t for t in _TYPES}


def fits(value: Any, kind: str) -> bool:
    """Whether a parsed JSON value is of ``kind`` (true and false are no numbers)."""
    return isinstance(value, KINDS[kind]) and (kind == "bool" or not isinstance(value, bool))


def kind_of(value: Any) -> str:
    """How a problem names the kind of ``value``: "text", "a number", "true/false"."""
    for kind in ("text", "integer", "number", "object", "list", "bool"):
        if fits(value, kind):
            return PHRASES[kind]
    return "null" if value is None else type(value).__name__


def _field_problems(kind: str, fields: tuple[Field, ...], event: dict[str, Any],
                    *, partial: bool) -> list[str]:
    problems = []
    for f in fields:
        value = event.get(f.name)
        if value is None:
            if f.required and not partial:
                problems.append(f"{kind} event: {f.name} is missing")
        elif not fits(value, f.kind):
            problems.append(f"{kind} event: {f.name} is {kind_of(value)}, not "
                            f"{PHRASES[f.kind]}")
    return problems


def field_problems(event: dict[str, Any]) -> list[str]:
    """What a reader cannot use in an event of a known type, for people ("step event: loss
    is missing", "step event: lr is text, not a number"); [] for a good event. Unknown
    types and unknown fields are no problem (a newer engine's, which readers ignore)."""
    kind = event.get("type")
    described = EVENTS.get(kind) if isinstance(kind, str) else None
    if described is None:
        return []
    return _field_problems(described.name, described.fields, event, partial=False)


def validate_event(event: dict[str, Any], *, partial: bool = False) -> list[str]:
    """Everything about ``event`` that this schema does not describe: a missing or wrong
    ``v``, ``type`` or ``time``, an unknown type, a field the type does not name, a value of
    the wrong kind, a required field missing ([] for an event of this engine). With
    ``partial``, missing fields are no problem (an event written by hand with only the
    fields a test needs)."""
    kind = event.get("type")
    problems = _field_problems(str(kind), ENVELOPE, event, partial=False)
    version = event.get("v")
    if fits(version, "integer") and version != SCHEMA_VERSION:
        problems.append(f"{kind} event: v is {version}, not {SCHEMA_VERSION}")
    described = EVENTS.get(kind) if isinstance(kind, str) else None
    if described is None:
        return problems + [f"event type {kind!r} is not in the schema (engine.run.schema)"]
    problems += _field_problems(described.name, described.fields, event, partial=partial)
    if not described.open:
        known = {f.name for f in ENVELOPE + described.fields}
        problems += [f"{kind} event: field {name!r} is not in the schema (engine.run.schema)"
                     for name in event if name not in known]
    return problems


def markdown_table() -> str:
    """The README's event table: a row per type, then a row per field."""
    rows = ["| type | field | kind | required | meaning |", "|---|---|---|---|---|"]
    for t in _TYPES:
        rows.append(f"| `{t.name}` | | | | {t.meaning} |")
        rows += [f"| | `{f.name}` | {f.kind} | {'yes' if f.required else ''} | {f.meaning} |"
                 for f in t.fields]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
