"""Model sidecars: the settings a saved model needs at prediction time, in a JSON file beside it.

`model.keras` gets `model.json` (`transfer_vgg16.keras` gets `transfer_vgg16.json`) with
  input_size      height = width of the model's input, in pixels
  channels        1 (grey) or 3 (RGB)
  input_scale     the [0, 1] pixels are multiplied by this before the model (255: raw 0-255 input)
  class_names     the name of each output class, in label order
  positive_class  the class counted as positive (sensitivity is its recall)
  postprocess     segmentation only: the predicted masks are cleaned as in training
  tta             segmentation only: masks are predicted with mirrored test-time augmentation
  made_by         the script that saved the model
Every command that loads a model reads its sidecar, whichever script saved it, so it can never feed
the model other pixels than it was trained on. A flag that a sidecar also sets must agree with it,
except postprocess and tta: they say how masks are made, not what the model takes.
"""

import hashlib
import json
from pathlib import Path

from medlab.app.runs import UserError, load_keras_model, write_json

# key: (types accepted, required); old transfer sidecars have only the required keys.
KEYS = {
    "input_size": ((int,), False),
    "channels": ((int,), True),
    "input_scale": ((int, float), True),
    "class_names": ((list,), True),
    "positive_class": ((str,), False),
    "postprocess": ((bool,), False),
    "tta": ((bool,), False),
    "made_by": ((str,), False),
}


def sidecar_path(model_path):
    return Path(model_path).with_suffix(".json")


def write_sidecar(model_path, **settings):
    """Write the sidecar of `model_path` (a .keras file) with `settings` (the keys above)."""
    unknown = set(settings) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown sidecar keys {sorted(unknown)}")
    write_json(sidecar_path(model_path), {**settings, DIGEST: settings_digest(settings)})


# The SHA-256 of the settings, written with them: a change that still parses as JSON (a flipped
# digit, a hand edit) is caught when they are read back.
DIGEST = "sha256"


def settings_digest(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def read_sidecar(model_path, made_by):
    """The checked settings beside `model_path`, or None when it has no sidecar (a model saved
    elsewhere). A malformed sidecar is a `UserError` naming the file and the key."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    fix = f"rerun {made_by} to write it again, or delete it"
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"model settings {path} is damaged ({error}); {fix}") from None
    if not isinstance(settings, dict):
        raise UserError(f"model settings {path} are not a JSON object; {fix}")
    recorded = settings.pop(DIGEST, None)  # sidecars written before digests were kept have none
    if recorded is not None and recorded != settings_digest(settings):
        raise UserError(
            f"model settings {path} do not match their {DIGEST} (damaged, or edited by hand); "
            f"{fix} (or, for an edit you mean, remove the {DIGEST!r} line)"
        )
    for key, (types, required) in KEYS.items():
        if key not in settings:
            if required:
                raise UserError(f"model settings {path} lack the key {key!r}; {fix}")
            continue
        value = settings[key]
        bad_type = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if bad_type or not valid_value(key, value):
            raise UserError(f"model settings {path}: {key!r} has a wrong value {value!r}; {fix}")
    settings.setdefault("positive_class", settings["class_names"][-1])
    settings.setdefault("postprocess", False)
    return {**settings, "file": str(path)}


def valid_value(key, value):
    if key == "class_names":
        return len(value) >= 1 and all(isinstance(name, str) for name in value)
    if key == "channels":
        return value in (1, 3)
    if key in ("input_size", "input_scale"):
        return value > 0
    return True


def load_model_and_settings(model_path, made_by, compile=True, needs=None):
    """A saved model and its checked sidecar (None when it has none), or a one-line `UserError`.

    The one rule for a model without its sidecar, in every command: it is used only when each
    setting the command `needs` ({key: (the flag that gives it or None, the value typed or None)})
    was typed; otherwise it is refused, never run with a guessed setting."""
    settings = read_sidecar(model_path, made_by)  # before the model: a bad sidecar answers at once
    if settings is None:
        require_sidecar(model_path, needs or {})
    model = load_keras_model(model_path, made_by, compile=compile)
    if settings is not None:
        check_against_model(settings, model, model_path)
    return model, settings


def check_against_model(settings, model, model_path):
    """Refuse a sidecar that does not describe `model` (another model's settings copied over)."""
    shape = tuple(model.input_shape)
    facts = {"input_size": shape[1], "channels": shape[-1]}
    for key, actual in facts.items():
        if key in settings and actual is not None and settings[key] != actual:
            raise UserError(
                f"model settings {settings['file']} say {key} {settings[key]}, but model "
                f"{model_path} takes {actual}; the two files belong to different models"
            )


def setting(settings, key, flag, given, default):
    """The value of `key`: the sidecar's; a `flag` typed (`given`, None when not typed) must agree
    with it; without a sidecar, the flag's value or `default`."""
    if settings is None or key not in settings:
        return default if given is None else given
    if given is not None and given != settings[key]:
        raise UserError(
            f"{flag} {given} conflicts with {key} {settings[key]} recorded in {settings['file']} "
            f"for this model; drop {flag}"
        )
    return settings[key]


def require_sidecar(model_path, needs):
    """Refuse a model without its sidecar when a setting the command needs was not typed."""
    untyped = {key: flag for key, (flag, given) in needs.items() if given is None}
    if not untyped:
        return
    flags = [flag for flag in untyped.values() if flag]
    typed_instead = f", or pass {' and '.join(flags)}" if len(flags) == len(untyped) else ""
    raise UserError(
        f"model settings {sidecar_path(model_path)} are missing, and this command needs their "
        f"{', '.join(untyped)}; copy that file from the model's run folder next to the "
        f"model{typed_instead}"
    )
