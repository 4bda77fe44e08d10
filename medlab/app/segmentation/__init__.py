"""Task 4's application around the library `unet`: `start` turns the command line of
`main_segmentation.py` into a `SegmentationRun` (flags, checks, resume, run folders, folds and the
summary), and `predict_command` / `evaluate_command` are its subcommands.

    parameters.py  every parameter declared once: lab default, help, group, choices, range
    setup.py       flags, the plan of experiments with each value's source, every check that can
                   fail before TensorFlow starts
    run.py         the summary folder and run folders, resume, saving a trained model, pooled
                   folds (imports unet, so TensorFlow: `start` imports it after the checks)
    summary.py     summary.md/csv/json, the paired comparisons, per-image tables
    commands.py    predict and evaluate with a saved model
"""

from medlab.app.segmentation.commands import evaluate_command, predict_command
from medlab.app.segmentation.setup import start

__all__ = ["evaluate_command", "predict_command", "start"]
